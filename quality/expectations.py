"""The data-set expectation suite: a great-expectations 1.x suite over a trajectory table.

A trajectory data set (``worldflux.data.TrajectoryDataset``) flattens to a table with one row
per observation (see docs/datasets.md): ``episode``, ``step``, ``reward``, ``terminated``,
``truncated``, ``obs_0..obs_k`` and ``action`` (a discrete index) or ``action_0..``.
``validate_trajectory_table`` checks such a table and returns an ``ExpectationReport`` whose
failures name the offending rows by DataFrame index, so a bad release candidate says *where*
it is bad, not only that it is::

    report = validate_dataset(load_bundled("cartpole"))
    if not report.success:
        print(report.summary())

The ``TrajectoryDataset`` constructor already rejects bad data; this suite exists for tables
built or edited outside it (exports, third-party data, hand fixes) and to give a release gate a
structured, row-naming record. great_expectations is imported lazily (about 3 s) so importing
this module stays cheap. See docs/quality-expectations.md.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

# No pandas-stubs in this environment (and pyproject's ignore list does not name pandas).
import pandas as pd

if TYPE_CHECKING:
    from worldflux.data.dataset import TrajectoryDataset

__all__ = [
    "CHECK_GROUPS",
    "END_COUNT_COLUMN",
    "END_LAST_COLUMN",
    "MAX_FAILING_ROWS",
    "ExpectationReport",
    "ExpectationResult",
    "table_column_names",
    "trajectory_table",
    "validate_dataset",
    "validate_trajectory_table",
]

# How many offending rows a result names: enough to find the pattern, small enough for a report.
MAX_FAILING_ROWS = 20
# Helper columns computed before validation, because great-expectations has no expectation for
# "exactly one end per episode" or "the end sits at the episode's last step".
END_COUNT_COLUMN = "ends_in_episode"
END_LAST_COLUMN = "end_is_last_step"

# Accepted dtype names per kind. Widths are not pinned: an exported table may widen float32 to
# float64 without being wrong, but an integer column must not turn into floats (or back). The
# Python names ("int", "float") matter for object columns, which great-expectations checks value
# by value with isinstance: without them a Python float in an object column is "not a float".
_KIND_TYPES: dict[str, list[str]] = {
    "int": ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "int"],
    "float": ["float16", "float32", "float64", "float"],
    "bool": ["bool"],
}
# What a release manager asks of a data set, each answered by one or more of the suite's checks
# (the orchestration turns every group into one blocking check).
CHECK_GROUPS: dict[str, tuple[str, ...]] = {
    "row_count": ("min_rows",),
    "schema": ("present", "dtype"),
    "no_nulls": ("not_null",),
    "finite_values": ("finite",),
    "action_bounds": ("action_bounds", "action_placeholder"),
    "unique_episode_step": ("unique_episode_step",),
    "one_end_per_episode": ("one_end_per_episode", "end_is_last_step"),
}
# great-expectations' between-expectations skip NaN (counted as "missing", not "unexpected"),
# so finiteness is not-null (catches NaN) plus between these finite bounds (catches ±inf).
_FINITE_MAX = sys.float_info.max


@dataclass(frozen=True)
class ExpectationResult:
    """One expectation's outcome.

    ``expectation`` is great-expectations' type name (``expect_column_values_to_be_between``),
    ``check`` our short name for what it checks (``finite``, ``action_bounds``, ...) since one
    expectation type may check a column twice, ``column`` a column name, a tuple of names for
    compound expectations, or None for table-level ones. ``observed`` holds
    ``unexpected_count``/``unexpected_percent`` (row-wise expectations), ``observed_value``
    (aggregate ones) and ``exception`` when great-expectations could not evaluate it.
    ``failing_rows`` are up to MAX_FAILING_ROWS DataFrame index labels of violating rows, in
    table order; empty for table-level expectations.
    """

    expectation: str
    check: str
    column: str | tuple[str, ...] | None
    success: bool
    observed: dict[str, Any] = field(default_factory=dict)
    failing_rows: list[int] = field(default_factory=list)

    @property
    def column_label(self) -> str:
        if self.column is None:
            return "(table)"
        if isinstance(self.column, tuple):
            return "+".join(self.column)
        return self.column

    def sort_key(self) -> tuple[str, str, str]:
        return (self.expectation, self.column_label, self.check)

    def to_dict(self) -> dict[str, Any]:
        column: str | list[str] | None = (
            list(self.column) if isinstance(self.column, tuple) else self.column
        )
        return {
            "expectation": self.expectation,
            "check": self.check,
            "column": column,
            "success": self.success,
            "observed": dict(self.observed),
            "failing_rows": list(self.failing_rows),
        }

    def describe(self) -> str:
        """One line: what failed, where, how many rows, the first row indices."""
        parts = [f"{self.expectation} [{self.check}] {self.column_label}:"]
        if "exception" in self.observed:
            parts.append(f"could not be evaluated ({self.observed['exception']})")
        if "unexpected_count" in self.observed:
            parts.append(
                f"{self.observed['unexpected_count']} row(s) "
                f"({self.observed.get('unexpected_percent', 0.0):.3g}%)"
            )
        if "observed_value" in self.observed:
            parts.append(f"observed {self.observed['observed_value']!r}")
        if self.failing_rows:
            parts.append(f"rows {self.failing_rows}")
        return " ".join(parts)


@dataclass(frozen=True)
class ExpectationReport:
    """The suite's outcome; ``results`` sorted by (expectation, column, check), a stable order
    (great-expectations itself returns results grouped by column in no documented order)."""

    success: bool
    results: list[ExpectationResult]

    @property
    def failures(self) -> list[ExpectationResult]:
        return [result for result in self.results if not result.success]

    def result(self, check: str, column: str | tuple[str, ...] | None = None) -> ExpectationResult:
        """The result of ``check`` on ``column`` (KeyError if the suite did not run it)."""
        for item in self.results:
            if item.check == check and item.column == column:
                return item
        raise KeyError(f"no result for check {check!r} on column {column!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "results": [item.to_dict() for item in self.results]}

    def group(self, name: str) -> list[ExpectationResult]:
        """The results of one of ``CHECK_GROUPS`` (empty when none of its checks ran, e.g.
        the columns they need are missing: the schema group then fails)."""
        checks = CHECK_GROUPS[name]
        return [item for item in self.results if item.check in checks]

    def summary(self) -> str:
        """One line per failed expectation, or a single line saying all passed."""
        failures = self.failures
        if not failures:
            return f"all {len(self.results)} expectations passed"
        return "\n".join(f"FAILED {item.describe()}" for item in failures)


# --------------------------------------------------------------------------------- tables
def table_column_names(
    obs_size: int, action_dim: int, discrete: bool
) -> tuple[list[str], list[str]]:
    """(observation columns, action columns) of a trajectory table, as ``to_table_columns``
    names them."""
    obs = [f"obs_{i}" for i in range(obs_size)]
    action = ["action"] if discrete else [f"action_{i}" for i in range(action_dim)]
    return obs, action


def trajectory_table(data: TrajectoryDataset) -> pd.DataFrame:
    """One row per data-set row, 1-D columns: episode, step, reward, terminated, truncated,
    obs_*, then action or action_* (key columns first so a printed row reads naturally)."""
    columns = data.to_table_columns()
    first = ["episode", "step", "reward", "terminated", "truncated"]
    order = first + [name for name in columns if name not in first]
    # DataFrame copies the read-only arrays, so callers may edit the table freely.
    return pd.DataFrame({name: columns[name] for name in order})


def validate_dataset(data: TrajectoryDataset, min_rows: int = 1000) -> ExpectationReport:
    """Run the suite on a data set's table, with the column names and bounds from its spec."""
    spec = data.spec
    obs_columns, action_columns = table_column_names(
        math.prod(spec.obs_shape), spec.action_dim, spec.discrete
    )
    return validate_trajectory_table(
        trajectory_table(data),
        obs_columns=obs_columns,
        action_columns=action_columns,
        discrete=spec.discrete,
        action_low=spec.action_low,
        action_high=spec.action_high,
        action_dim=spec.action_dim,
        min_rows=min_rows,
    )


# ---------------------------------------------------------------------------------- suite
@dataclass(frozen=True)
class _Check:
    """A great-expectations expectation plus our name for it."""

    name: str
    expectation: Any
    kind: str | None = None  # the expected kind ("int", "float", "bool") of a dtype check


def validate_trajectory_table(
    df: pd.DataFrame,
    *,
    obs_columns: Sequence[str],
    action_columns: Sequence[str],
    discrete: bool,
    action_low: float,
    action_high: float,
    action_dim: int | None = None,
    min_rows: int = 1000,
) -> ExpectationReport:
    """Run the expectation suite on a trajectory table (see the module docstring).

    ``action_dim`` is the number of choices of a discrete action (valid indices are
    0..action_dim-1; a discrete spec's action_low/high are the one-hot bounds 0/1, not the
    index range); it defaults to ``len(action_columns)`` for continuous actions. The table's
    index must hold integers: failures name rows by index label. ``df`` is not modified.
    """
    if discrete and len(action_columns) != 1:
        raise ValueError(f"a discrete table has one action column, got {list(action_columns)}")
    if discrete and action_dim is None:
        raise ValueError("a discrete table needs action_dim (the number of choices)")
    if not pd.api.types.is_integer_dtype(df.index.dtype):
        raise TypeError(f"the table's index must hold integers, got dtype {df.index.dtype}")
    if not action_low < action_high:
        raise ValueError(f"need action_low < action_high, got {action_low}, {action_high}")
    table = _with_helper_columns(df)
    checks = _build_checks(
        table,
        obs_columns=list(obs_columns),
        action_columns=list(action_columns),
        discrete=discrete,
        action_low=float(action_low),
        action_high=float(action_high),
        action_dim=len(action_columns) if action_dim is None else int(action_dim),
        min_rows=min_rows,
    )
    raw = _run_suite(table, checks)
    results = sorted((_convert(item, table) for item in raw), key=lambda result: result.sort_key())
    return ExpectationReport(success=all(r.success for r in results), results=results)


def _with_helper_columns(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` plus the per-row end-of-episode helpers (when their inputs exist).

    ``ends_in_episode``: end flags (terminated + truncated, so a row with both counts twice)
    in the row's episode; the suite expects 1. ``end_is_last_step``: whether the row's having
    an end flag agrees with its being the episode's largest step; the suite expects True, so a
    missing end names the episode's last row and a stray end names its own row.
    """
    # Dropping (a copy) also discards stale helper columns a caller's table may carry.
    table = df.drop(columns=[END_COUNT_COLUMN, END_LAST_COLUMN], errors="ignore")
    if not {"episode", "step", "terminated", "truncated"} <= set(table.columns):
        return table  # the missing column fails expect_column_to_exist
    # eq(True) instead of astype(bool): a null flag must not count as an end.
    flags = table["terminated"].eq(True).astype(np.int64) + table["truncated"].eq(True).astype(
        np.int64
    )
    # dropna=False: rows with a null episode form their own group instead of vanishing
    # (the null itself fails not-null on ``episode``).
    episodes = flags.groupby(table["episode"], dropna=False)
    table[END_COUNT_COLUMN] = episodes.transform("sum").astype(np.int64)
    step = pd.to_numeric(table["step"], errors="coerce")
    last_step = step.groupby(table["episode"], dropna=False).transform("max")
    table[END_LAST_COLUMN] = (flags > 0) == (step == last_step)
    return table


def _build_checks(
    table: pd.DataFrame,
    *,
    obs_columns: list[str],
    action_columns: list[str],
    discrete: bool,
    action_low: float,
    action_high: float,
    action_dim: int,
    min_rows: int,
) -> list[_Check]:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    present = set(table.columns)
    kinds: dict[str, str] = {"episode": "int", "step": "int", "reward": "float"}
    kinds.update({"terminated": "bool", "truncated": "bool"})
    kinds.update(dict.fromkeys(obs_columns, "float"))
    kinds.update(dict.fromkeys(action_columns, "int" if discrete else "float"))

    checks = [_Check("min_rows", gxe.ExpectTableRowCountToBeBetween(min_value=min_rows))]
    for name, kind in kinds.items():
        checks.append(_Check("present", gxe.ExpectColumnToExist(column=name)))
        # A missing column fails "present" once; checks on it would only add error noise.
        if name not in present:
            continue
        checks.append(
            _Check(
                "dtype",
                gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=_KIND_TYPES[kind]),
                kind=kind,
            )
        )
        checks.append(_Check("not_null", gxe.ExpectColumnValuesToNotBeNull(column=name)))
        if kind == "float":
            checks.append(
                _Check(
                    "finite",
                    gxe.ExpectColumnValuesToBeBetween(
                        column=name, min_value=-_FINITE_MAX, max_value=_FINITE_MAX
                    ),
                )
            )

    has_step = "step" in present
    for name in action_columns:
        if name not in present:
            continue
        bounds: gxe.ExpectColumnValuesToBeInSet | gxe.ExpectColumnValuesToBeBetween
        if discrete:
            # Index 0, the first-row placeholder, is a valid index: no row condition needed.
            bounds = gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(range(action_dim)))
        else:
            # An episode's first row holds a zero placeholder (no action led to it), which
            # need not lie in the box; the placeholder has its own check below.
            bounds = gxe.ExpectColumnValuesToBeBetween(
                column=name,
                min_value=action_low,
                max_value=action_high,
                row_condition=(Column("step") > 0) if has_step else None,
            )
        checks.append(_Check("action_bounds", bounds))
        if has_step:
            checks.append(
                _Check(
                    "action_placeholder",
                    gxe.ExpectColumnValuesToBeInSet(
                        column=name, value_set=[0], row_condition=Column("step") == 0
                    ),
                )
            )

    if {"episode", "step"} <= present:
        checks.append(
            _Check(
                "unique_episode_step",
                gxe.ExpectCompoundColumnsToBeUnique(column_list=["episode", "step"]),
            )
        )
    if END_COUNT_COLUMN in present:
        checks.append(
            _Check(
                "one_end_per_episode",
                gxe.ExpectColumnValuesToBeInSet(column=END_COUNT_COLUMN, value_set=[1]),
            )
        )
        checks.append(
            _Check(
                "end_is_last_step",
                gxe.ExpectColumnValuesToBeInSet(column=END_LAST_COLUMN, value_set=[True]),
            )
        )
    return checks


def _run_suite(table: pd.DataFrame, checks: list[_Check]) -> list[tuple[_Check, Any]]:
    """Validate ``table`` in a fresh ephemeral context; pair each raw result with its check."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # A fresh in-memory context per call (a few ms) keeps calls independent of each other.
    context = gx.get_context(mode="ephemeral")
    # Otherwise every run draws a tqdm "Calculating Metrics" bar on stderr.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("trajectories")
        .add_dataframe_asset("table")
        .add_batch_definition_whole_dataframe("whole_table")
        .get_batch(batch_parameters={"dataframe": table})
    )
    for index, check in enumerate(checks):
        # meta survives into the result's expectation_config: results come back regrouped by
        # column, so this is how each one finds its check again.
        check.expectation.meta = {"check_index": index}
    # Batch.validate with an unsaved suite, rather than a ValidationDefinition: registering
    # the suite and definition in the context's stores serializes them (about 0.2 s a call)
    # and buys nothing for a one-off in-memory run.
    suite = gx.ExpectationSuite(
        name="trajectory_table", expectations=[check.expectation for check in checks]
    )
    outcome = batch.validate(
        suite,
        # SUMMARY lists up to partial_unexpected_count offending index labels per row-wise
        # expectation; COMPLETE would list every one (and every value) for nothing.
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_FAILING_ROWS},
    )
    paired: list[tuple[_Check, Any]] = []
    for raw in outcome.results:
        config = raw.expectation_config
        if config is None or not config.meta or "check_index" not in config.meta:
            raise RuntimeError(f"great-expectations returned a result without our meta: {raw}")
        paired.append((checks[int(config.meta["check_index"])], raw))
    if len(paired) != len(checks):
        raise RuntimeError(f"great-expectations returned {len(paired)} of {len(checks)} results")
    return paired


def _convert(item: tuple[_Check, Any], table: pd.DataFrame) -> ExpectationResult:
    check, raw = item
    config = raw.expectation_config
    kwargs = config.kwargs
    column: str | tuple[str, ...] | None
    if "column_list" in kwargs:
        column = tuple(str(name) for name in kwargs["column_list"])
    elif "column" in kwargs:
        column = str(kwargs["column"])
    else:
        column = None
    result: dict[str, Any] = dict(raw.result or {})
    observed: dict[str, Any] = {
        key: _json_scalar(result[key])
        for key in ("unexpected_count", "unexpected_percent", "observed_value")
        if key in result
    }
    info = raw.exception_info or {}
    # exception_info is either flat or keyed by metric id, depending on where GE failed.
    messages = [info.get("exception_message")] + [
        value.get("exception_message") for value in info.values() if isinstance(value, dict)
    ]
    message = next((m for m in messages if m), None)
    if message:
        observed["exception"] = str(message)
    success = bool(raw.success)
    if "partial_unexpected_index_list" in result:
        rows = [_row_label(label) for label in result["partial_unexpected_index_list"]]
    elif not success and check.kind is not None and isinstance(column, str):
        # A dtype mismatch on a non-object column is judged on the column as a whole, so GE
        # names no rows; name those whose values could not be cast to the expected kind.
        rows = _rows_not_of_kind(table[column], check.kind)
    else:
        rows = []
    return ExpectationResult(
        expectation=str(config.type),
        check=check.name,
        column=column,
        success=success,
        observed=observed,
        failing_rows=rows[:MAX_FAILING_ROWS],
    )


def _rows_not_of_kind(series: pd.Series, kind: str) -> list[int]:
    """Index labels of values that do not convert losslessly to ``kind``: non-integral or
    non-finite numbers for int, non-numbers for float, anything but True/False/1/0 for bool.
    A wrong-dtype column whose every value converts cleanly names no rows."""
    if kind == "bool":
        bad = ~series.isin([True, False])
    else:
        numeric = pd.to_numeric(series, errors="coerce").astype(np.float64)
        if kind == "int":
            bad = ~np.isfinite(numeric) | (numeric != np.round(numeric))
        else:
            bad = numeric.isna() & series.notna()
    return [_row_label(label) for label in series.index[bad.to_numpy()][:MAX_FAILING_ROWS]]


def _row_label(label: Any) -> int:
    return int(label)


def _json_scalar(value: Any) -> Any:
    """numpy scalars to Python ones; NaN/inf to strings so the report stays strict JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
