"""Sweep runtime estimates: scenario parsing, the cost fit on synthetic seed runs (noise-free
timings, so the fit must recover the generating rate and overhead exactly), the estimate
arithmetic and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from quality.runtime import (
    REPEAT_RUNS,
    CostModelError,
    FamilyCost,
    Scenario,
    estimate,
    fit_cost_model,
    format_costs,
    format_table,
    parse_scenario,
    parse_scenarios,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "estimate_quality_gate_runtime.py"


def _run(
    family: str,
    steps: int,
    *,
    rate: float,
    overhead: float,
    kind: str = "seed",
    seed: int = 0,
    status: str = "ok",
    steps_completed: int | None = None,
) -> dict[str, Any]:
    """A record as quality.seed_run writes it, with exact timings: train = rate x steps."""
    done = steps if steps_completed is None else steps_completed
    train = rate * done
    return {
        "kind": kind,
        "family": family,
        "preset": "ci",
        "seed": seed,
        "steps": steps,
        "steps_completed": done,
        "status": status,
        "failure": None if status == "ok" else {"kind": "diverged", "step": done, "message": "x"},
        "timings": {
            "setup_seconds": overhead / 2,
            "train_seconds": train,
            "eval_seconds": overhead / 2,
            "checkpoint_seconds": 0.0,
            "probe_seconds": 0.0,
            "total_seconds": train + overhead,
        },
    }


def _document(runs: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    families = list(dict.fromkeys(r["family"] for r in runs))
    return {
        "schema_version": 1,
        "config": {"models": families, "seeds": [0, 1], "steps": 100, "device": "cpu", **config},
        "runs": runs,
    }


# --- scenarios -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seeds", "steps"),
    [("5x5000", 5, 5000), ("5X5000", 5, 5000), (" 7 x 10000 ", 7, 10000), ("1x1", 1, 1)],
)
def test_parse_scenario_valid(text: str, seeds: int, steps: int) -> None:
    scenario = parse_scenario(text)
    assert scenario == Scenario(seeds, steps)
    assert scenario.label == f"{seeds}x{steps}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7x", "steps is missing"),
        ("x100", "seeds is missing"),
        ("0x10", "seeds must be at least 1"),
        ("5x-1", "steps must be a positive integer"),
        ("5x0", "steps must be at least 1"),
        ("5000", "must look like SEEDSxSTEPS"),
        ("", "must look like SEEDSxSTEPS"),
        ("ax10", "seeds must be a positive integer"),
        ("5x10x2", "more than one 'x'"),
        ("2.5x10", "seeds must be a positive integer"),
    ],
)
def test_parse_scenario_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scenario(text)


def test_parse_scenarios_keeps_order_and_drops_duplicates() -> None:
    assert parse_scenarios("7x10000, 5x5000,7X10000,") == (Scenario(7, 10000), Scenario(5, 5000))
    with pytest.raises(ValueError, match="no scenario"):
        parse_scenarios(" , ")


def test_scenario_rejects_non_positive_sizes() -> None:
    with pytest.raises(ValueError, match="seeds >= 1"):
        Scenario(0, 10)


# --- cost fit ------------------------------------------------------------------------------


def test_fit_recovers_rate_and_overhead_from_runs_of_different_lengths() -> None:
    runs = [
        _run("dreamerv3", 100, rate=0.04, overhead=3.0, seed=0),
        _run("dreamerv3", 300, rate=0.04, overhead=3.0, seed=1),
    ]
    cost = fit_cost_model(_document(runs, repeat_steps=0))["dreamerv3"]
    assert cost.seconds_per_step == pytest.approx(0.04, rel=1e-12)
    assert cost.overhead_seconds == pytest.approx(3.0, rel=1e-12)
    assert cost.seconds_per_step_min == pytest.approx(0.04, rel=1e-12)
    assert cost.seconds_per_step_max == pytest.approx(0.04, rel=1e-12)
    assert (cost.runs_fitted, cost.steps_fitted, cost.runs_failed) == (2, 400, 0)
    assert cost.repeat_steps == 0
    assert cost.repeat_cost_seconds() == 0.0


def test_fit_pools_steps_and_reports_the_spread_of_per_run_rates() -> None:
    runs = [
        _run("tdmpc2", 100, rate=0.02, overhead=1.0, seed=0),
        _run("tdmpc2", 300, rate=0.04, overhead=3.0, seed=1),
    ]
    cost = fit_cost_model(_document(runs))["tdmpc2"]
    # Pooled: (100 x 0.02 + 300 x 0.04) / 400 = 0.035, not the unweighted mean 0.03.
    assert cost.seconds_per_step == pytest.approx(0.035)
    assert (cost.seconds_per_step_min, cost.seconds_per_step_max) == pytest.approx((0.02, 0.04))
    assert cost.overhead_seconds == pytest.approx(2.0)


def test_fit_includes_repeat_runs_in_the_rate_and_costs_them_separately() -> None:
    runs = [
        _run("dreamerv3", 1000, rate=0.05, overhead=4.0, seed=0),
        _run("dreamerv3", 50, rate=0.05, overhead=1.0, kind="repeat"),
        _run("dreamerv3", 50, rate=0.05, overhead=1.0, kind="repeat"),
    ]
    cost = fit_cost_model(_document(runs, repeat_steps=50))["dreamerv3"]
    assert cost.seconds_per_step == pytest.approx(0.05)
    assert cost.runs_fitted == 3
    assert cost.steps_fitted == 1100
    # Seed runs carry checkpoint and probes, repeat runs do not: separate overheads.
    assert cost.overhead_seconds == pytest.approx(4.0)
    assert cost.repeat_overhead_seconds == pytest.approx(1.0)
    assert cost.repeat_cost_seconds() == pytest.approx(REPEAT_RUNS * (50 * 0.05 + 1.0))


def test_repeat_steps_come_from_the_repeat_runs_when_the_config_leaves_them_to_the_policy() -> None:
    runs = [
        _run("dreamerv3", 1000, rate=0.05, overhead=4.0),
        _run("dreamerv3", 30, rate=0.05, overhead=1.0, kind="repeat"),
    ]
    assert fit_cost_model(_document(runs, repeat_steps=None))["dreamerv3"].repeat_steps == 30
    assert fit_cost_model(_document(runs))["dreamerv3"].repeat_steps == 30
    no_repeats = _document(runs[:1])
    assert fit_cost_model(no_repeats)["dreamerv3"].repeat_steps == 0


def test_without_a_completed_repeat_run_the_seed_overhead_stands_in() -> None:
    runs = [
        _run("dreamerv3", 1000, rate=0.05, overhead=4.0),
        _run("dreamerv3", 50, rate=0.05, overhead=1.0, kind="repeat", status="failed"),
    ]
    cost = fit_cost_model(_document(runs, repeat_steps=50))["dreamerv3"]
    assert cost.repeat_overhead_seconds == pytest.approx(4.0)
    assert cost.runs_failed == 1


def test_failed_runs_are_counted_but_left_out_of_the_fit() -> None:
    runs = [
        _run("dreamerv3", 200, rate=0.04, overhead=3.0, seed=0),
        # Diverged early, and slowly: were it fitted, both the rate and the spread would move.
        _run("dreamerv3", 200, rate=1.0, overhead=50.0, seed=1, status="failed", steps_completed=7),
    ]
    cost = fit_cost_model(_document(runs))["dreamerv3"]
    assert cost.seconds_per_step == pytest.approx(0.04)
    assert cost.seconds_per_step_max == pytest.approx(0.04)
    assert cost.overhead_seconds == pytest.approx(3.0)
    assert (cost.runs_fitted, cost.runs_failed, cost.steps_fitted) == (1, 1, 200)


def test_a_family_with_only_failed_runs_raises_a_clear_error() -> None:
    runs = [
        _run("dreamerv3", 100, rate=0.04, overhead=3.0),
        _run("tdmpc2", 100, rate=0.02, overhead=1.0, status="failed", steps_completed=3),
        _run("tdmpc2", 100, rate=0.02, overhead=1.0, seed=1, status="failed", steps_completed=5),
    ]
    with pytest.raises(
        CostModelError, match=r"'tdmpc2' has no completed run .*0 completed, 2 failed"
    ):
        fit_cost_model(_document(runs))
    # Asking only for the family that completed works; asking for one never run does not.
    assert list(fit_cost_model(_document(runs), ["dreamerv3"])) == ["dreamerv3"]
    with pytest.raises(CostModelError, match="'genie' has no completed run"):
        fit_cost_model(_document(runs), ["genie"])


def test_a_family_with_completed_repeat_runs_only_raises() -> None:
    runs = [
        _run("dreamerv3", 100, rate=0.04, overhead=3.0, status="failed", steps_completed=3),
        _run("dreamerv3", 50, rate=0.04, overhead=1.0, kind="repeat"),
    ]
    with pytest.raises(CostModelError, match="no completed seed run"):
        fit_cost_model(_document(runs))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"schema_version": 2, "runs": []}, "schema_version is 2"),
        ({"schema_version": 1, "runs": {}}, "'runs' is not a list"),
        ({"schema_version": 1, "runs": []}, "holds no run"),
    ],
)
def test_malformed_documents_raise(document: dict[str, Any], message: str) -> None:
    with pytest.raises(CostModelError, match=message):
        fit_cost_model(document)


def test_a_completed_run_without_timings_raises() -> None:
    run = _run("dreamerv3", 100, rate=0.04, overhead=3.0)
    del run["timings"]["train_seconds"]
    with pytest.raises(CostModelError, match=r"run 0 \(seed dreamerv3 seed 0\).*train_seconds"):
        fit_cost_model(_document([run]))


# --- estimates -----------------------------------------------------------------------------


def _cost(family: str = "dreamerv3", repeat_steps: int = 50) -> FamilyCost:
    return FamilyCost(
        family=family,
        seconds_per_step=0.04,
        seconds_per_step_min=0.03,
        seconds_per_step_max=0.06,
        overhead_seconds=5.0,
        repeat_overhead_seconds=2.0,
        repeat_steps=repeat_steps,
        runs_fitted=7,
        steps_fitted=25100,
        runs_failed=0,
    )


def test_estimate_arithmetic() -> None:
    costs = {"dreamerv3": _cost(), "tdmpc2": _cost("tdmpc2", repeat_steps=0)}
    result = estimate(costs, Scenario(5, 5000))
    dreamer = result.family("dreamerv3")
    # 5 x (5000 x 0.04 + 5) + 2 x (50 x 0.04 + 2) = 1025 + 8
    assert dreamer.seconds == pytest.approx(1033.0)
    assert dreamer.low_seconds == pytest.approx(5 * (5000 * 0.03 + 5) + 2 * (50 * 0.03 + 2))
    assert dreamer.high_seconds == pytest.approx(5 * (5000 * 0.06 + 5) + 2 * (50 * 0.06 + 2))
    assert dreamer.runs == 7
    tdmpc2 = result.family("tdmpc2")
    assert tdmpc2.seconds == pytest.approx(1025.0)
    assert tdmpc2.runs == 5
    assert result.seconds == pytest.approx(2058.0)
    assert result.low_seconds < result.seconds < result.high_seconds
    assert result.runs == 12
    as_dict = result.to_dict()
    assert as_dict["scenario"] == "5x5000"
    assert as_dict["seconds"] == pytest.approx(2058.0)
    assert set(as_dict["families"]) == {"dreamerv3", "tdmpc2"}
    json.dumps(as_dict, allow_nan=False)


def test_estimate_family_filter_and_unknown_family() -> None:
    costs = {"dreamerv3": _cost(), "tdmpc2": _cost("tdmpc2")}
    only = estimate(costs, Scenario(1, 10), families=["tdmpc2"])
    assert [f.family for f in only.families] == ["tdmpc2"]
    with pytest.raises(CostModelError, match="no fitted cost for genie"):
        estimate(costs, Scenario(1, 10), families=["genie"])


def test_estimate_of_a_fitted_model_matches_a_synthetic_sweep() -> None:
    """The fit then the estimate reproduce the exact wall time of the sweep they came from."""
    rate, overhead, repeat_overhead = 0.03, 2.5, 0.8
    runs = [_run("dreamerv3", 400, rate=rate, overhead=overhead, seed=s) for s in range(3)]
    runs += [_run("dreamerv3", 20, rate=rate, overhead=repeat_overhead, kind="repeat")] * 2
    measured = sum(r["timings"]["total_seconds"] for r in runs)
    costs = fit_cost_model(_document(runs, repeat_steps=20))
    assert estimate(costs, Scenario(3, 400)).seconds == pytest.approx(measured, rel=1e-12)


def test_format_table_has_a_row_per_scenario_and_fixed_width_columns() -> None:
    costs = {"dreamerv3": _cost(), "tdmpc2": _cost("tdmpc2")}
    estimates = [estimate(costs, parse_scenario(s)) for s in ("5x5000", "10x20000")]
    table = format_table(estimates)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["scenario", "runs", "dreamerv3", "min"]
    assert "low-high min" in lines[0]
    assert lines[2].startswith("5x5000 ")
    assert lines[3].startswith("10x20000 ")
    assert len({len(line) for line in lines}) == 1  # every row as wide as the header
    # 10 x (20000 x 0.04 + 5) + 2 x (50 x 0.04 + 2) = 8058 s = 134.3 min per family.
    assert "134.3" in lines[3]
    assert "268.6" in lines[3]
    assert "dreamerv3" in format_costs(costs)


def test_format_table_rejects_mixed_families() -> None:
    costs = {"dreamerv3": _cost(), "tdmpc2": _cost("tdmpc2")}
    mixed = [
        estimate(costs, Scenario(1, 10)),
        estimate(costs, Scenario(1, 10), families=["tdmpc2"]),
    ]
    with pytest.raises(ValueError, match="same families"):
        format_table(mixed)


# --- command line --------------------------------------------------------------------------


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def seed_runs_file(tmp_path: Path) -> Path:
    runs = [_run("dreamerv3", 5000, rate=0.045, overhead=3.0, seed=s) for s in range(2)] + [
        _run("dreamerv3", 50, rate=0.05, overhead=1.0, kind="repeat")
    ] * 2
    runs += [_run("tdmpc2", 5000, rate=0.035, overhead=2.0, seed=s) for s in range(2)]
    path = tmp_path / "seed_runs.json"
    path.write_text(json.dumps(_document(runs, repeat_steps=50, threads=1)))
    return path


def test_cli_prints_a_row_per_scenario_and_writes_json(
    seed_runs_file: Path, tmp_path: Path
) -> None:
    scenarios = ["5x5000", "7x10000", "10x10000", "7x20000", "10x20000"]
    out = tmp_path / "out" / "estimates.json"
    result = _cli("--input", seed_runs_file, "--scenarios", ",".join(scenarios), "--json", out)
    assert result.returncode == 0, result.stderr
    rows = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    for scenario in scenarios:
        assert scenario in rows
    assert "dreamerv3 min" in result.stdout
    assert "tdmpc2 min" in result.stdout
    assert "device cpu" in result.stdout
    written = json.loads(out.read_text())
    assert [e["scenario"] for e in written["estimates"]] == scenarios
    assert set(written["costs"]) == {"dreamerv3", "tdmpc2"}


def test_cli_models_accepts_an_alias(seed_runs_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "estimates.json"
    result = _cli(
        "--input", seed_runs_file, "--scenarios", "5x5000", "--models", "dreamer", "--json", out
    )
    assert result.returncode == 0, result.stderr
    assert "dreamerv3 min" in result.stdout
    assert "tdmpc2" not in result.stdout
    assert set(json.loads(out.read_text())["costs"]) == {"dreamerv3"}


def test_cli_missing_input_exits_2_with_the_measure_hint(tmp_path: Path) -> None:
    result = _cli("--input", tmp_path / "nope.json", "--scenarios", "5x5000")
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "not found" in message
    assert "run scripts/measure_quality_gates.py first" in message


@pytest.mark.parametrize("content", ["{not json", "[]", '{"schema_version": 1, "runs": 3}'])
def test_cli_invalid_input_exits_2_with_the_measure_hint(tmp_path: Path, content: str) -> None:
    path = tmp_path / "seed_runs.json"
    path.write_text(content)
    result = _cli("--input", path, "--scenarios", "5x5000")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "run scripts/measure_quality_gates.py first" in result.stderr


def test_cli_bad_scenario_is_a_usage_error(seed_runs_file: Path) -> None:
    result = _cli("--input", seed_runs_file, "--scenarios", "5x5000,7x")
    assert result.returncode == 2
    assert "steps is missing" in result.stderr
