"""Metadata the Dagster UI renders: tables from lists of rows."""

from collections.abc import Sequence
from typing import Any

import dagster as dg


def table(rows: Sequence[dict[str, Any]]) -> dg.TableMetadataValue:
    """A table whose columns are the first row's keys; numbers stay numbers, the rest text."""
    if not rows:
        return dg.MetadataValue.table(records=[], schema=dg.TableSchema(columns=[]))
    columns = []
    for name, value in rows[0].items():
        kind = (
            "float" if isinstance(value, int | float) and not isinstance(value, bool) else "string"
        )
        columns.append(dg.TableColumn(name, kind))
    records = [
        dg.TableRecord(
            {
                c.name: (row.get(c.name) if c.type == "float" else str(row.get(c.name, "")))
                for c in columns
            }
        )
        for row in rows
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def number(value: float | None) -> str:
    """Four significant digits, or "-" when there is no value (failed seed, skipped gate)."""
    return "-" if value is None else f"{value:.4g}"
