"""The expectation suite on raw Parquet trajectory tables: a clean export passes every group;
each injected fault (written with pyarrow into an exported file) fails its own group only and
names its rows as (row, episode, step); faults at chunk boundaries are found with small
chunks, with the same rows as in one chunk; the docs list exactly the registry's groups.

Each validation costs about 0.15 s of great-expectations overhead per chunk, so tables are
small and chunks few.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quality.expectations import (
    CHECK_GROUPS,
    EXPECTATION_GROUPS,
    MAX_FAILING_ROWS,
    ExpectationReport,
    groups_markdown,
    validate_dataset,
    validate_table,
)
from quality.table import TableError, TableSpec, export_table, read_table_spec
from worldflux.data import load_bundled

DOCS = Path(__file__).resolve().parents[2] / "docs" / "quality-expectations.md"
EPISODE = 201  # rows per pendulum episode (200 steps + the first observation)
ALL_GROUPS = [group.name for group in EXPECTATION_GROUPS]


def _row(episode: int, step: int) -> int:
    """Global row of a pendulum (episode, step)."""
    return episode * EPISODE + step


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("expectations")


@pytest.fixture(scope="module")
def pendulum(folder: Path) -> tuple[Path, TableSpec]:
    path = folder / "pendulum.parquet"
    spec = export_table(load_bundled("pendulum"), path, source="bundled", licence="MIT")
    return path, spec


@pytest.fixture(scope="module")
def cartpole(folder: Path) -> tuple[Path, TableSpec]:
    path = folder / "cartpole.parquet"
    spec = export_table(load_bundled("cartpole"), path, source="bundled", licence="MIT")
    return path, spec


@pytest.fixture(scope="module")
def small(pendulum: tuple[Path, TableSpec], folder: Path) -> pa.Table:
    """The first three pendulum episodes (603 rows), for chunk-boundary tests."""
    return pq.read_table(pendulum[0]).slice(0, 3 * EPISODE)


# ----------------------------------------------------------------------------- editing
def _write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)
    return path


def _set(table: pa.Table, column: str, rows: list[int], value: object) -> pa.Table:
    values = table[column].to_numpy().copy()
    values[rows] = value
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pa.array(values, table.schema.field(column).type))


def _set_entry(table: pa.Table, column: str, row: int, entry: int, value: float) -> pa.Table:
    lists = table[column].combine_chunks()
    width = lists.type.list_size
    flat = lists.flatten().to_numpy().copy()
    flat[row * width + entry] = value
    rebuilt = pa.FixedSizeListArray.from_arrays(pa.array(flat), type=lists.type)
    return table.set_column(table.schema.get_field_index(column), column, rebuilt)


def _insert_copy(table: pa.Table, row: int) -> pa.Table:
    """A copy of ``row`` inserted right after it (the copy is row + 1)."""
    parts = [table.slice(0, row + 1), table.slice(row, 1), table.slice(row + 1)]
    return pa.concat_tables(parts).combine_chunks()


def _group_rows(report: ExpectationReport, group: str) -> list[int]:
    return sorted({row for result in report.group(group) for row in result.failing_rows})


# ------------------------------------------------------------------------------ clean data
@pytest.mark.parametrize("name", ["pendulum", "cartpole"])
def test_clean_export_passes_every_group(
    name: str, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    path, spec = request.getfixturevalue(name)
    report = validate_table(path, spec)
    assert report.success, report.summary()
    assert report.summary() == f"all {len(report.results)} expectations passed"
    for group in EXPECTATION_GROUPS:
        assert report.group(group.name), f"group {group.name} ran no check"
    checks = {result.check for result in report.results}
    assert checks == {check for group in EXPECTATION_GROUPS for check in group.checks}
    assert (report.rows, report.chunks) == (pq.ParquetFile(path).metadata.num_rows, 1)
    # The same suite on the data set in memory gives the same results.
    in_memory = validate_dataset(load_bundled(name))
    assert in_memory.to_dict() == report.to_dict()
    # No progress bars or log lines from great-expectations.
    assert capfd.readouterr() == ("", "")


def test_clean_table_passes_in_small_chunks(small: pa.Table, folder: Path) -> None:
    """Episodes spanning chunks, chunks ending exactly at an episode's last row (201) and
    chunks of one row (the order, end and uniqueness state crosses every boundary)."""
    path = _write(small, folder / "small.parquet")
    spec = read_table_spec(path)
    for rows_per_chunk in (250, EPISODE):
        report = validate_table(path, spec, min_rows=1, rows_per_chunk=rows_per_chunk)
        assert report.success, report.summary()
        assert report.chunks == -(-len(small) // rows_per_chunk)
    tiny = _set(small.slice(0, 6), "truncated", [5], True)  # episode 0, steps 0..5
    path = _write(tiny, folder / "tiny.parquet")
    report = validate_table(path, spec, min_rows=1, rows_per_chunk=1)
    assert report.success, report.summary()
    assert report.chunks == 6


# ------------------------------------------------------------------------------- faults
def test_nan_observation(pendulum: tuple[Path, TableSpec], folder: Path) -> None:
    path, spec = pendulum
    row = _row(4, 37)
    table = _set_entry(pq.read_table(path), "observation", row, 1, np.nan)
    report = validate_table(_write(table, folder / "nan.parquet"), spec)
    assert report.failed_groups() == ["finite_values"], report.summary()
    result = report.result("finite", "observation")
    assert result.failing_rows == [row]
    assert result.failing_keys == [(4, 37)]
    assert (
        result.describe() == f"finite_values: observation: 1 row(s): row {row} (episode 4, step 37)"
    )
    # A NaN is a value, not a null.
    assert report.result("not_null", "observation").success


def test_continuous_action_out_of_bounds(pendulum: tuple[Path, TableSpec], folder: Path) -> None:
    path, spec = pendulum
    row = _row(4, 9)
    table = _set_entry(pq.read_table(path), "action", row, 0, 5.0)
    report = validate_table(_write(table, folder / "action.parquet"), spec)
    assert report.failed_groups() == ["action_bounds"], report.summary()
    result = report.result("action_bounds", "action")
    assert (result.failing_rows, result.failing_keys) == ([row], [(4, 9)])
    assert report.result("action_placeholder", "action").success


def test_discrete_action_out_of_bounds_and_placeholder(
    cartpole: tuple[Path, TableSpec], folder: Path
) -> None:
    path, spec = cartpole
    table = pq.read_table(path)
    episode, step = table["episode"].to_numpy(), table["step"].to_numpy()
    taken = int(np.flatnonzero((episode == 5) & (step == 3))[0])
    first = int(np.flatnonzero((episode == 6) & (step == 0))[0])
    table = _set(_set(table, "action", [taken], 7), "action", [first], 1)
    report = validate_table(_write(table, folder / "discrete.parquet"), spec)
    assert report.failed_groups() == ["action_bounds"], report.summary()
    bounds = report.result("action_bounds", "action")
    assert (bounds.failing_rows, bounds.failing_keys) == ([taken], [(5, 3)])
    placeholder = report.result("action_placeholder", "action")
    assert (placeholder.failing_rows, placeholder.failing_keys) == ([first], [(6, 0)])


def test_duplicated_step(pendulum: tuple[Path, TableSpec], folder: Path) -> None:
    path, spec = pendulum
    row = _row(2, 50)
    table = _insert_copy(pq.read_table(path), row)
    report = validate_table(_write(table, folder / "duplicate.parquet"), spec)
    assert report.failed_groups() == ["unique_episode_step"], report.summary()
    result = report.result("unique_episode_step", ("episode", "step"))
    assert result.expectation == "expect_compound_columns_to_be_unique"
    assert result.failing_rows == [row, row + 1]
    assert result.failing_keys == [(2, 50), (2, 50)]


def test_episode_with_two_ends(pendulum: tuple[Path, TableSpec], folder: Path) -> None:
    path, spec = pendulum
    stray = _row(8, 3)
    table = _set(pq.read_table(path), "terminated", [stray], True)
    report = validate_table(_write(table, folder / "two_ends.parquet"), spec)
    assert report.failed_groups() == ["one_end_per_episode"], report.summary()
    # The stray end is named at its own row; the count at the episode's last row.
    at_last = report.result("end_is_last_step", ("terminated", "truncated"))
    assert (at_last.failing_rows, at_last.failing_keys) == ([stray], [(8, 3)])
    count = report.result("one_end_per_episode", ("terminated", "truncated"))
    assert (count.failing_rows, count.failing_keys) == ([_row(8, 200)], [(8, 200)])


def test_missing_column(pendulum: tuple[Path, TableSpec], folder: Path) -> None:
    path, spec = pendulum
    table = pq.read_table(path).drop_columns(["reward"])
    report = validate_table(_write(table, folder / "no_reward.parquet"), spec)
    assert report.failed_groups() == ["schema"], report.summary()
    assert [(r.check, r.column) for r in report.failures] == [("present", "reward")]
    result = report.result("present", "reward")
    assert result.failing_rows == []
    assert result.describe() == (
        "schema [present]: reward: missing (expected a floating type (canonical float32))"
    )
    # Checks on a missing column do not run (one failure, not one per check).
    assert all(result.column != "reward" for result in report.results if result.check != "present")


def test_wrong_dtype(pendulum: tuple[Path, TableSpec], folder: Path) -> None:
    path, spec = pendulum
    table = pq.read_table(path)
    index = table.schema.get_field_index("step")
    table = table.set_column(index, "step", table["step"].cast(pa.float64()))
    report = validate_table(_write(table, folder / "float_step.parquet"), spec)
    # The float steps are still integral, so order and uniqueness hold: only the dtype fails.
    assert report.failed_groups() == ["schema"], report.summary()
    result = report.result("dtype", "step")
    assert result.expectation == "arrow_schema"
    assert result.observed["observed_value"] == "double"
    assert result.failing_rows == []
    assert result.describe() == (
        "schema [dtype]: step: dtype double, expected an integer type (canonical int64)"
    )


def test_null_flag_and_wrong_list_size(small: pa.Table, folder: Path) -> None:
    spec = read_table_spec(_write(small, folder / "small_spec.parquet"))
    table = small
    # Nulls in a flag and in both key columns: only not_null fails (order, ends and uniqueness
    # leave rows with an unknown key be).
    for column, row, kind in (("terminated", 7, pa.bool_()), ("episode", 300, pa.int64())):
        values = table[column].to_numpy().astype(object)
        values[row] = None
        table = table.set_column(
            table.schema.get_field_index(column), column, pa.array(values, kind)
        )
    steps = table["step"].to_numpy().astype(object)
    steps[500] = None
    table = table.set_column(
        table.schema.get_field_index("step"), "step", pa.array(steps, pa.int64())
    )
    # A variable-size list column (a third-party file) with one short row.
    observation = table["observation"].to_pylist()
    observation[250] = observation[250][:2]
    table = table.set_column(
        table.schema.get_field_index("observation"),
        "observation",
        pa.array(observation, pa.list_(pa.float32())),
    )
    report = validate_table(_write(table, folder / "nulls.parquet"), spec, min_rows=1)
    assert report.failed_groups() == ["schema", "no_nulls"], report.summary()
    assert report.result("not_null", "terminated").failing_keys == [(0, 7)]
    assert report.result("not_null", "episode").failing_keys == [(None, 300 - EPISODE)]
    assert report.result("not_null", "step").failing_keys == [(2, None)]
    assert report.result("shape", "observation").failing_rows == [250]
    assert report.result("dtype", "observation").success  # a list of floats, any size


def test_too_few_rows(small: pa.Table, folder: Path) -> None:
    path = _write(small, folder / "small_rows.parquet")
    report = validate_table(path, read_table_spec(path))
    assert report.failed_groups() == ["row_count"]
    result = report.result("min_rows")
    assert result.expectation == "table_metadata"
    assert result.describe() == "row_count: (table): 603 rows, expected at least 1000"


def test_order_faults(small: pa.Table, folder: Path) -> None:
    spec = read_table_spec(_write(small, folder / "order_spec.parquet"))
    # A gap at the first row of the second chunk (step 48 -> 50), and episodes renumbered
    # from 1 (the first row must be episode 0, step 0).
    gap = _row(1, 49)
    table = pa.concat_tables([small.slice(0, gap), small.slice(gap + 1)]).combine_chunks()
    report = validate_table(
        _write(table, folder / "gap.parquet"), spec, min_rows=1, rows_per_chunk=gap
    )
    assert report.failed_groups() == ["order"], report.summary()
    result = report.result("order", ("episode", "step"))
    assert (result.failing_rows, result.failing_keys) == ([gap], [(1, 50)])
    shifted = _set(small, "episode", list(range(len(small))), small["episode"].to_numpy() + 1)
    report = validate_table(_write(shifted, folder / "from_one.parquet"), spec, min_rows=1)
    assert report.failed_groups() == ["order"], report.summary()
    assert report.result("order", ("episode", "step")).failing_keys == [(1, 0)]


# -------------------------------------------------------------------------- chunk edges
def test_end_duplicated_in_the_second_chunk(small: pa.Table, folder: Path) -> None:
    """Episode 1 (rows 201..401) spans chunks [0, 250) and [250, 500); its end row is copied
    right after itself, inside the second chunk."""
    spec = read_table_spec(_write(small, folder / "edge_spec.parquet"))
    end = _row(1, 200)
    path = _write(_insert_copy(small, end), folder / "end_twice.parquet")
    whole = validate_table(path, spec, min_rows=1)
    chunked = validate_table(path, spec, min_rows=1, rows_per_chunk=250)
    assert chunked.chunks == 3
    for report in (whole, chunked):
        assert report.failed_groups() == ["unique_episode_step", "one_end_per_episode"]
        assert _group_rows(report, "unique_episode_step") == [end, end + 1]
        ends = ("terminated", "truncated")
        assert report.result("end_is_last_step", ends).failing_rows == [end]
        count = report.result("one_end_per_episode", ends)
        assert (count.failing_rows, count.failing_keys) == ([end + 1], [(1, 200)])


def test_ends_counted_across_chunks(small: pa.Table, folder: Path) -> None:
    """A stray end in the first chunk and the real one in the second: the open episode's
    count crosses the boundary."""
    spec = read_table_spec(_write(small, folder / "count_spec.parquet"))
    stray = _row(1, 10)
    path = _write(_set(small, "terminated", [stray], True), folder / "split_ends.parquet")
    report = validate_table(path, spec, min_rows=1, rows_per_chunk=250)
    assert report.failed_groups() == ["one_end_per_episode"], report.summary()
    count = report.result("one_end_per_episode", ("terminated", "truncated"))
    assert count.failing_rows == [_row(1, 200)]


def test_missing_end_at_a_chunk_edge(small: pa.Table, folder: Path) -> None:
    """Episode 0's last row is the first chunk's last row: whether it is an episode's last row
    depends on the next chunk's first row."""
    spec = read_table_spec(_write(small, folder / "last_spec.parquet"))
    last = _row(0, 200)
    path = _write(_set(small, "truncated", [last], False), folder / "no_end.parquet")
    report = validate_table(path, spec, min_rows=1, rows_per_chunk=EPISODE)
    assert report.failed_groups() == ["one_end_per_episode"], report.summary()
    ends = ("terminated", "truncated")
    assert report.result("end_is_last_step", ends).failing_rows == [last]
    assert report.result("one_end_per_episode", ends).failing_rows == [last]


def test_duplicate_split_across_chunks(small: pa.Table, folder: Path) -> None:
    spec = read_table_spec(_write(small, folder / "split_spec.parquet"))
    row = 249  # the copy lands at 250: the first row of the second chunk
    path = _write(_insert_copy(small, row), folder / "split_duplicate.parquet")
    chunked = validate_table(path, spec, min_rows=1, rows_per_chunk=250)
    assert chunked.failed_groups() == ["unique_episode_step"], chunked.summary()
    across = chunked.result("unique_across_chunks", ("episode", "step"))
    assert across.failing_rows == [row, row + 1]
    assert across.failing_keys == [(1, 48), (1, 48)]
    assert chunked.result("unique_episode_step", ("episode", "step")).success
    # In one chunk the compound expectation itself names both copies.
    whole = validate_table(path, spec, min_rows=1)
    assert whole.failed_groups() == ["unique_episode_step"]
    assert _group_rows(whole, "unique_episode_step") == [row, row + 1]


def test_failures_are_merged_across_chunks(small: pa.Table, folder: Path) -> None:
    spec = read_table_spec(_write(small, folder / "merge_spec.parquet"))
    rows = list(range(240, 265))  # 25 rows across the boundary at 250
    path = _write(_set(small, "reward", rows, np.inf), folder / "inf.parquet")
    report = validate_table(path, spec, min_rows=1, rows_per_chunk=250)
    result = report.result("finite", "reward")
    assert result.observed["unexpected_count"] == 25
    assert result.observed["unexpected_percent"] == pytest.approx(100 * 25 / len(small))
    assert result.failing_rows == rows[:MAX_FAILING_ROWS]
    assert result.failing_keys[-1] == (1, 259 - EPISODE)
    assert result.describe().endswith(f"row 259 (episode 1, step {259 - EPISODE}) and 5 more")
    whole = validate_table(path, spec, min_rows=1)
    assert whole.result("finite", "reward") == result


# ------------------------------------------------------------------------------ reporting
def test_report_is_json_and_names_rows(pendulum: tuple[Path, TableSpec], folder: Path) -> None:
    path, spec = pendulum
    table = pq.read_table(path)
    table = _set_entry(table, "observation", _row(4, 37), 0, np.inf)
    table = _set(table, "terminated", [_row(8, 3)], True)
    report = validate_table(_write(table, folder / "two_faults.parquet"), spec)
    document = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert document["success"] is False
    failed = [item for item in document["results"] if not item["success"]]
    assert [item["group"] for item in failed] == ["finite_values", *["one_end_per_episode"] * 2]
    assert failed[0]["failing_rows"] == [_row(4, 37)]
    assert failed[0]["failing_keys"] == [[4, 37]]
    assert report.summary().splitlines() == [f"FAILED {r.describe()}" for r in report.failures]
    keys = [result.sort_key() for result in report.results]
    assert keys == sorted(keys)


def test_argument_errors(pendulum: tuple[Path, TableSpec], tmp_path: Path) -> None:
    path, spec = pendulum
    with pytest.raises(ValueError, match="rows_per_chunk"):
        validate_table(path, spec, rows_per_chunk=0)
    text = tmp_path / "table.parquet"
    text.write_text("not parquet")
    with pytest.raises(TableError, match="not a readable Parquet file"):
        validate_table(text, spec)


# ----------------------------------------------------------------------------------- docs
def test_docs_list_exactly_the_registry_groups() -> None:
    """The docs table is generated from EXPECTATION_GROUPS, so it cannot drift from it."""
    match = re.search(
        r"<!-- expectation-groups:start -->\n(.*?)<!-- expectation-groups:end -->",
        DOCS.read_text(),
        flags=re.DOTALL,
    )
    assert match is not None, "docs/quality-expectations.md lost its groups table markers"
    table = match.group(1)
    assert table == groups_markdown(), (
        "regenerate the table: python -c 'from quality.expectations import groups_markdown; "
        "print(groups_markdown())'"
    )
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \| ", table, flags=re.MULTILINE)
    assert rows == [(group.name, group.description) for group in EXPECTATION_GROUPS]
    assert list(CHECK_GROUPS) == ALL_GROUPS
