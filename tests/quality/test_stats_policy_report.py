from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from quality.evaluate import build_report, evaluate_gates
from quality.policy import Policy, PolicyError, load_policy
from quality.report import ReportError, render_markdown, validate_report
from quality.stats import (
    bootstrap_rate_interval,
    clopper_pearson,
    coefficient_of_variation,
    relative_drop,
    required_successes,
)
from tests.quality.records import repeat_pair, seed_record


def test_clopper_pearson_matches_known_values() -> None:
    low, high = clopper_pearson(4, 5)
    assert low == pytest.approx(0.2836, abs=1e-4)
    assert high == pytest.approx(0.9949, abs=1e-4)
    assert clopper_pearson(5, 5) == (pytest.approx(0.4782, abs=1e-4), 1.0)
    assert clopper_pearson(0, 5)[0] == 0.0


def test_bootstrap_is_reproducible_and_degenerate_when_all_agree() -> None:
    outcomes = [True, True, False, True, True]
    assert bootstrap_rate_interval(outcomes) == bootstrap_rate_interval(outcomes)
    low, high = bootstrap_rate_interval(outcomes)
    assert 0.0 <= low < 0.8 < high <= 1.0
    assert bootstrap_rate_interval([True] * 5) == (1.0, 1.0)


def test_required_successes_is_a_ceiling_robust_to_float_error() -> None:
    assert [required_successes(n, 0.8) for n in (5, 7, 10)] == [4, 6, 8]


def test_cv_and_drop() -> None:
    assert coefficient_of_variation([1.0, 1.0, 1.0]) == 0.0
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(0.7071, abs=1e-4)
    assert relative_drop(2.0, 1.0) == 0.5
    assert relative_drop(0.0, 1.0) == float("-inf")
    with pytest.raises(ValueError, match="two values"):
        coefficient_of_variation([1.0])


def test_family_policy_overrides_defaults_and_has_a_stable_digest(tmp_path: Path) -> None:
    dreamer = load_policy("dreamerv3")
    assert dreamer.training["dataset"] == "cartpole"
    assert dreamer["min_skill"] == 0.5
    assert dreamer["min_skill_at"] == {"5": 0.5, "10": 0.5}
    assert dreamer.kind == "reference"
    assert dreamer.required_gates == ("planner.boundary",)
    assert dreamer.sources == ("default.json", "dreamerv3.json")
    assert dreamer.digest == load_policy("dreamerv3").digest
    assert dreamer.digest != load_policy("tdmpc2").digest  # other data set
    assert load_policy("jepa").kind == "jepa"
    assert load_policy("jepa").required_gates == ()
    assert load_policy("no_such_family").kind is None  # default.json only: no gate kind
    for gone in ("success_drop", "prediction_nmse_max", "trend_steps", "repeat_tolerance"):
        with pytest.raises(PolicyError, match=f"no threshold '{gone}'"):
            dreamer[gone]
    # The kind and the required gates are part of what the digest pins.
    assert dataclasses.replace(dreamer, kind="token").digest != dreamer.digest
    assert dataclasses.replace(dreamer, required_gates=()).digest != dreamer.digest
    assert Policy.from_dict(dreamer.to_dict()).digest == dreamer.digest

    default = json.loads(Path("quality/policies/default.json").read_text())
    (tmp_path / "default.json").write_text(json.dumps(default))
    (tmp_path / "x.json").write_text(json.dumps({"thresholds": {"min_skil": 0.2}}))
    with pytest.raises(PolicyError, match="unknown thresholds keys"):
        load_policy("x", tmp_path)
    (tmp_path / "y.json").write_text(json.dumps({"required_gates": "planner.boundary"}))
    with pytest.raises(PolicyError, match="required_gates must be a list"):
        load_policy("y", tmp_path)
    with pytest.raises(PolicyError, match="no threshold 'nope'"):
        dreamer["nope"]


def _report() -> dict[str, Any]:
    """A report of five healthy synthetic tdmpc2 seeds, through the real evaluation."""
    policy = load_policy("tdmpc2")
    runs = [seed_record(s) for s in range(5)]
    repeats = repeat_pair()
    gates = evaluate_gates(runs, policy, repeats=repeats, obs_shape=(3,))
    return build_report(runs, policy, gates, repeats=repeats)


def test_markdown_shows_the_headroom_beside_the_baselines() -> None:
    """Each horizon's median model NMSE beside mean, persistence, linear and residual MLP (the
    synthetic seeds: persistence 0.2 at one step, mean 1.0 beyond; model at skill 0.8)."""
    markdown = render_markdown(_report())
    head = "| steps ahead | model | mean | persistence | linear | residual mlp |"
    assert head in markdown
    assert "| 1 | 0.04 | 1 | 0.2 | 0.1 | 0.002 |" in markdown
    assert "| 10 | 0.2 | 1 | 2 | 0.5 | 0.01 |" in markdown


def test_schema_accepts_a_valid_report_and_names_violations() -> None:
    report = _report()
    validate_report(report)
    assert report["schema_version"] == 2
    assert [r["skill"] for r in report["runs"]] == [pytest.approx(0.8)] * 5
    assert "RELEASABLE" in render_markdown(report)
    broken = copy.deepcopy(report)
    del broken["gates"]["common"]["ci_low"]
    with pytest.raises(ReportError, match=r"gates/common.*ci_low"):
        validate_report(broken)
    broken = copy.deepcopy(report)
    broken["gates"]["results"][0]["status"] = "maybe"
    with pytest.raises(ReportError, match="status"):
        validate_report(broken)
    broken = copy.deepcopy(report)
    broken["runs"][0]["drop"] = float("nan")
    with pytest.raises(ReportError, match=r"runs\[0\]\.drop"):
        validate_report(broken)
    broken = copy.deepcopy(report)
    del broken["runs"][0]["skill"]
    with pytest.raises(ReportError, match=r"runs/0.*'skill' is a required property"):
        validate_report(broken)
    broken = copy.deepcopy(report)
    broken["gates"]["results"][0]["name"] = "prediction.open_loop_nmse_5"  # schema 1's name
    with pytest.raises(ReportError, match=r"gates/results/0/name"):
        validate_report(broken)
    broken = copy.deepcopy(report)
    broken["schema_version"] = 1
    with pytest.raises(ReportError, match="schema_version"):
        validate_report(broken)


def test_the_same_evidence_evaluated_twice_gets_two_report_ids() -> None:
    """A gate report run and a release run with gates can judge the same seeds within one
    second; the ledger refuses a repeated report id, so the ids must differ."""
    policy = load_policy("tdmpc2")
    runs, repeats = [seed_record(s) for s in range(3)], repeat_pair()
    gates = evaluate_gates(runs, policy, repeats=repeats, obs_shape=(3,))
    first = build_report(runs, policy, gates, repeats=repeats)
    second = build_report(runs, policy, gates, repeats=repeats)
    assert first["report_id"] != second["report_id"]
    validate_report(second)
