"""Metadata the Dagster UI renders: tables from lists of rows, images inline."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from quality import visuals
from release.lineage import ROLLOUT_ANIMATION, ROLLOUT_PICTURE


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


def rollout_metadata(pictures: dict[str, bytes], stored: dict[str, str]) -> dict[str, Any]:
    """The real-versus-imagined picture inline (Markdown with a data URI, Dagster's own way of
    showing a plot in asset metadata), and where every picture is stored."""
    if ROLLOUT_PICTURE not in pictures:
        return {}
    picture = visuals.Picture(pictures[ROLLOUT_PICTURE], frames=ROLLOUT_ANIMATION in pictures)
    return {
        "rollout": dg.MetadataValue.md(f"{picture.caption}\n\n{picture.markdown(picture.caption)}"),
        **{f"rollout_{n.split('.')[-1]}_uri": dg.MetadataValue.path(u) for n, u in stored.items()},
    }
