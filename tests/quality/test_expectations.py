"""The data-set expectation suite: the bundled data sets pass; each injected fault fails exactly
the expectation meant to catch it, names the injected row, and leaves every other one passing.

Faults are injected into the table from ``trajectory_table`` because the TrajectoryDataset
constructor rejects bad data. Each validation costs about 0.3-0.5 s of great-expectations
overhead, so the data sets and their clean tables are loaded once per module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from quality.expectations import (
    END_COUNT_COLUMN,
    END_LAST_COLUMN,
    MAX_FAILING_ROWS,
    ExpectationReport,
    table_column_names,
    trajectory_table,
    validate_dataset,
    validate_trajectory_table,
)
from worldflux.data import load_bundled
from worldflux.data.dataset import TrajectoryDataset

Column = str | tuple[str, ...] | None


@pytest.fixture(scope="module")
def cartpole() -> TrajectoryDataset:
    return load_bundled("cartpole")


@pytest.fixture(scope="module")
def pendulum() -> TrajectoryDataset:
    return load_bundled("pendulum")


@pytest.fixture(scope="module")
def cartpole_table(cartpole: TrajectoryDataset) -> pd.DataFrame:
    return trajectory_table(cartpole)


@pytest.fixture(scope="module")
def pendulum_table(pendulum: TrajectoryDataset) -> pd.DataFrame:
    return trajectory_table(pendulum)


def _validate(
    df: pd.DataFrame, data: TrajectoryDataset, **overrides: float | int
) -> ExpectationReport:
    spec = data.spec
    obs_columns, action_columns = table_column_names(
        int(np.prod(spec.obs_shape)), spec.action_dim, spec.discrete
    )
    options: dict[str, float | int] = {
        "action_low": spec.action_low,
        "action_high": spec.action_high,
        "action_dim": spec.action_dim,
        "min_rows": 1000,
    }
    options.update(overrides)
    return validate_trajectory_table(
        df,
        obs_columns=obs_columns,
        action_columns=action_columns,
        discrete=spec.discrete,
        action_low=float(options["action_low"]),
        action_high=float(options["action_high"]),
        action_dim=int(options["action_dim"]),
        min_rows=int(options["min_rows"]),
    )


def _row(df: pd.DataFrame, episode: int, step: int) -> int:
    """The index label of an episode's step (a middle row unless said otherwise)."""
    match = df.index[(df["episode"] == episode) & (df["step"] == step)]
    assert len(match) == 1
    return int(match[0])


def _last_row(df: pd.DataFrame, episode: int) -> int:
    return int(df.index[df["episode"] == episode][-1])


def _assert_fails_only(report: ExpectationReport, expected: set[tuple[str, Column]]) -> None:
    """report fails, and exactly the ``expected`` (check, column) results fail."""
    assert report.success is False
    failed = {(result.check, result.column) for result in report.failures}
    assert failed == expected, report.summary()


# ------------------------------------------------------------------------------ clean data
@pytest.mark.parametrize("name", ["cartpole", "pendulum"])
def test_bundled_data_sets_pass(
    name: str, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    data: TrajectoryDataset = request.getfixturevalue(name)
    report = validate_dataset(data)
    assert report.success, report.summary()
    assert report.summary() == f"all {len(report.results)} expectations passed"
    checks = {result.check for result in report.results}
    assert checks == {
        "min_rows",
        "present",
        "dtype",
        "not_null",
        "finite",
        "action_bounds",
        "action_placeholder",
        "unique_episode_step",
        "one_end_per_episode",
        "end_is_last_step",
    }
    # No progress bars or log lines from great-expectations.
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_table_layout(pendulum: TrajectoryDataset, pendulum_table: pd.DataFrame) -> None:
    assert list(pendulum_table.columns) == [
        "episode",
        "step",
        "reward",
        "terminated",
        "truncated",
        "obs_0",
        "obs_1",
        "obs_2",
        "action_0",
    ]
    assert len(pendulum_table) == len(pendulum)
    assert str(pendulum_table["step"].dtype) == "int64"
    assert str(pendulum_table["terminated"].dtype) == "bool"


# ------------------------------------------------------------------------------- faults
# Faults share two tables (one per data set), each fault in its own episode and column, so
# two validations cover them all (one table per fault costs ~0.5 s each and 16 s in total).
# test_faulty_tables_fail_only_the_targeted_expectations proves the faults do not interact:
# exactly the targeted expectations fail, each naming exactly its injected rows.
@dataclass(frozen=True)
class Faulty:
    report: ExpectationReport
    table: pd.DataFrame
    rows: dict[str, list[int]]


@pytest.fixture(scope="module")
def faulty_pendulum(pendulum: TrajectoryDataset, pendulum_table: pd.DataFrame) -> Faulty:
    rows: dict[str, list[int]] = {}
    # (c) a duplicated (episode, step) row; first, since it shifts the labels after it.
    dup = _row(pendulum_table, episode=2, step=50)
    df = pd.concat(
        [pendulum_table.loc[:dup], pendulum_table.loc[dup:dup], pendulum_table.loc[dup + 1 :]],
        ignore_index=True,
    )
    rows["duplicate"] = [dup, dup + 1]
    # (a) NaN in an observation.
    rows["nan_obs"] = [_row(df, episode=3, step=17)]
    df.loc[rows["nan_obs"], "obs_1"] = np.nan
    # (b) +inf rewards in 25 episodes (more than a result names) and a -inf observation.
    rows["inf_reward"] = [_row(df, episode=e, step=40) for e in range(25)]
    df.loc[rows["inf_reward"], "reward"] = np.inf
    rows["neg_inf_obs"] = [_row(df, episode=10, step=5)]
    df.loc[rows["neg_inf_obs"], "obs_2"] = -np.inf
    # (d) a torque outside Pendulum's [-2, 2].
    rows["action"] = [_row(df, episode=4, step=9)]
    df.loc[rows["action"], "action_0"] = 5.0
    # (e) an episode with a second end in the middle, and one whose end was cleared.
    rows["two_ends"] = [_row(df, episode=8, step=3)]
    df.loc[rows["two_ends"], "terminated"] = True
    rows["no_end"] = [_last_row(df, episode=11)]
    assert bool(df.loc[rows["no_end"][0], "truncated"])
    df.loc[rows["no_end"], "truncated"] = False
    # (h) step stored as float, one value not even integral.
    df["step"] = df["step"].astype(np.float64)
    rows["step"] = [_row(df, episode=9, step=30)]
    df.loc[rows["step"], "step"] = 30.5
    before = df.copy()
    report = _validate(df, pendulum)
    pd.testing.assert_frame_equal(df, before)  # validation works on its own copy
    return Faulty(report, df, rows)


@pytest.fixture(scope="module")
def faulty_cartpole(cartpole: TrajectoryDataset, cartpole_table: pd.DataFrame) -> Faulty:
    df = cartpole_table.copy()
    rows: dict[str, list[int]] = {}
    # (d) an index outside CartPole's two actions.
    rows["action"] = [_row(df, episode=5, step=3)]
    df.loc[rows["action"], "action"] = 7
    # (f) a null end flag.
    df["terminated"] = df["terminated"].astype(object)
    rows["null"] = [_row(df, episode=1, step=4)]
    df.loc[rows["null"], "terminated"] = None
    # (h) a bool column stored as 0/1 ints: wrong dtype, yet every value converts cleanly.
    df["truncated"] = df["truncated"].astype(np.int64)
    return Faulty(_validate(df, cartpole), df, rows)


def test_faulty_tables_fail_only_the_targeted_expectations(
    faulty_pendulum: Faulty, faulty_cartpole: Faulty
) -> None:
    _assert_fails_only(
        faulty_pendulum.report,
        {
            ("not_null", "obs_1"),
            ("finite", "reward"),
            ("finite", "obs_2"),
            ("unique_episode_step", ("episode", "step")),
            ("action_bounds", "action_0"),
            ("one_end_per_episode", END_COUNT_COLUMN),
            ("end_is_last_step", END_LAST_COLUMN),
            ("dtype", "step"),
        },
    )
    _assert_fails_only(
        faulty_cartpole.report,
        {("action_bounds", "action"), ("not_null", "terminated"), ("dtype", "truncated")},
    )


def test_nan_observation(faulty_pendulum: Faulty) -> None:
    report, rows = faulty_pendulum.report, faulty_pendulum.rows
    result = report.result("not_null", "obs_1")
    assert result.failing_rows == rows["nan_obs"]
    assert result.observed["unexpected_count"] == 1
    # GE's between-expectations count NaN as missing: not-null is what catches it.
    assert report.result("finite", "obs_1").success


def test_infinite_values(faulty_pendulum: Faulty) -> None:
    report, rows = faulty_pendulum.report, faulty_pendulum.rows
    reward = report.result("finite", "reward")
    assert reward.failing_rows == rows["inf_reward"][:MAX_FAILING_ROWS]
    assert reward.observed["unexpected_count"] == len(rows["inf_reward"]) == 25
    assert report.result("not_null", "reward").success
    assert report.result("finite", "obs_2").failing_rows == rows["neg_inf_obs"]


def test_duplicated_episode_step(faulty_pendulum: Faulty) -> None:
    result = faulty_pendulum.report.result("unique_episode_step", ("episode", "step"))
    assert result.expectation == "expect_compound_columns_to_be_unique"
    assert result.failing_rows == faulty_pendulum.rows["duplicate"]


def test_continuous_action_out_of_range(faulty_pendulum: Faulty) -> None:
    report = faulty_pendulum.report
    result = report.result("action_bounds", "action_0")
    assert result.expectation == "expect_column_values_to_be_between"
    assert result.failing_rows == faulty_pendulum.rows["action"]
    assert report.result("finite", "action_0").success
    assert report.result("action_placeholder", "action_0").success


def test_discrete_action_out_of_range(faulty_cartpole: Faulty) -> None:
    result = faulty_cartpole.report.result("action_bounds", "action")
    assert result.expectation == "expect_column_values_to_be_in_set"
    assert result.failing_rows == faulty_cartpole.rows["action"]
    assert faulty_cartpole.report.result("dtype", "action").success


def test_episodes_with_two_ends_or_none(faulty_pendulum: Faulty) -> None:
    report, rows, df = faulty_pendulum.report, faulty_pendulum.rows, faulty_pendulum.table
    # The stray end is named at its own row, the missing one at the row that should hold it.
    last_step = report.result("end_is_last_step", END_LAST_COLUMN)
    assert last_step.failing_rows == rows["two_ends"] + rows["no_end"]
    # Every row of both episodes violates "one end per episode"; the first ones are named.
    per_episode = report.result("one_end_per_episode", END_COUNT_COLUMN)
    episode_8 = [int(i) for i in df.index[df["episode"] == 8]]
    episode_11 = [int(i) for i in df.index[df["episode"] == 11]]
    assert per_episode.failing_rows == episode_8[:MAX_FAILING_ROWS]
    assert rows["two_ends"][0] in per_episode.failing_rows
    assert per_episode.observed["unexpected_count"] == len(episode_8) + len(episode_11)


def test_null_flag(faulty_cartpole: Faulty) -> None:
    report = faulty_cartpole.report
    assert report.result("not_null", "terminated").failing_rows == faulty_cartpole.rows["null"]
    # An object column of bools is type-checked value by value, and a null is no wrong type.
    assert report.result("dtype", "terminated").success


def test_step_as_float_names_non_integral_rows(faulty_pendulum: Faulty) -> None:
    report = faulty_pendulum.report
    result = report.result("dtype", "step")
    assert result.expectation == "expect_column_values_to_be_in_type_list"
    assert result.observed["observed_value"] == "float64"
    assert result.failing_rows == faulty_pendulum.rows["step"]
    assert report.result("not_null", "step").success


def test_whole_column_wrong_dtype_names_no_rows(faulty_cartpole: Faulty) -> None:
    result = faulty_cartpole.report.result("dtype", "truncated")
    assert result.observed["observed_value"] == "int64"
    assert result.failing_rows == []  # every 0/1 converts cleanly: no single row is to blame


def test_too_few_rows_and_missing_column(
    pendulum: TrajectoryDataset, pendulum_table: pd.DataFrame
) -> None:
    # (g) Whole episodes, so every row-level expectation still holds; obs_2 dropped too.
    df = pendulum_table[pendulum_table["episode"] < 4].drop(columns=["obs_2"])
    report = _validate(df, pendulum)
    # Checks on a missing column are skipped, so it fails once instead of in every check.
    _assert_fails_only(report, {("min_rows", None), ("present", "obs_2")})
    result = report.result("min_rows")
    assert result.expectation == "expect_table_row_count_to_be_between"
    assert result.observed["observed_value"] == len(df) == 804
    assert result.failing_rows == []  # table-level expectations name no rows
    assert report.result("present", "obs_2").failing_rows == []
    assert "(table): observed 804" in report.summary()


def test_placeholder_action_is_exempt_from_bounds_but_must_be_zero(
    pendulum: TrajectoryDataset, pendulum_table: pd.DataFrame
) -> None:
    # Shift taken actions into [1, 5]: the zero placeholder at each first row lies outside the
    # box, which must not count against it; a nonzero placeholder must.
    df = pendulum_table.copy()
    taken = df["step"] > 0
    df.loc[taken, "action_0"] = df.loc[taken, "action_0"] + 3.0
    first = _row(df, episode=6, step=0)
    df.loc[first, "action_0"] = 1.5
    report = _validate(df, pendulum, action_low=1.0, action_high=5.0)
    _assert_fails_only(report, {("action_placeholder", "action_0")})
    assert report.result("action_placeholder", "action_0").failing_rows == [first]


# ------------------------------------------------------------------------------ reporting
def test_results_sorted_and_json(faulty_pendulum: Faulty) -> None:
    report = faulty_pendulum.report
    keys = [result.sort_key() for result in report.results]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    document = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert document["success"] is False
    assert sum(not item["success"] for item in document["results"]) == 8
    unique = next(r for r in document["results"] if r["check"] == "unique_episode_step")
    assert unique["column"] == ["episode", "step"]
    assert unique["failing_rows"] == faulty_pendulum.rows["duplicate"]


def test_summary_names_rows(faulty_pendulum: Faulty) -> None:
    report, rows = faulty_pendulum.report, faulty_pendulum.rows
    lines = report.summary().splitlines()
    assert len(lines) == len(report.failures) == 8
    reward = next(line for line in lines if "[finite] reward" in line)
    assert reward.startswith("FAILED expect_column_values_to_be_between [finite] reward: 25 row")
    assert str(rows["inf_reward"][:MAX_FAILING_ROWS]) in reward
    step = next(line for line in lines if "[dtype] step" in line)
    assert "'float64'" in step
    assert str(rows["step"]) in step
    # Failed lines follow the report's order.
    assert lines == [f"FAILED {result.describe()}" for result in report.failures]


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda df: df.set_index(df.index.astype(str)), TypeError),
        (lambda df: df, ValueError),
    ],
)
def test_argument_errors(
    mutate: Callable[[pd.DataFrame], pd.DataFrame],
    error: type[Exception],
    cartpole_table: pd.DataFrame,
) -> None:
    with pytest.raises(error):
        validate_trajectory_table(
            mutate(cartpole_table),
            obs_columns=["obs_0"],
            action_columns=["action"],
            discrete=True,
            action_low=0.0,
            action_high=1.0,
            action_dim=None if error is ValueError else 2,
        )
