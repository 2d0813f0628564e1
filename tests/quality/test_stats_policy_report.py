from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from quality.policy import PolicyError, load_policy
from quality.report import ReportError, render_markdown, validate_report
from quality.stats import (
    bootstrap_rate_interval,
    clopper_pearson,
    coefficient_of_variation,
    relative_drop,
    required_successes,
)


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
    assert dreamer["success_drop"] == 0.10
    assert dreamer.sources == ("default.json", "dreamerv3.json")
    assert dreamer.digest == load_policy("dreamerv3").digest
    assert dreamer.digest != load_policy("tdmpc2").digest
    default = json.loads(Path("quality/policies/default.json").read_text())
    (tmp_path / "default.json").write_text(json.dumps(default))
    (tmp_path / "x.json").write_text(json.dumps({"thresholds": {"succes_drop": 0.2}}))
    with pytest.raises(PolicyError, match="unknown thresholds keys"):
        load_policy("x", tmp_path)
    with pytest.raises(PolicyError, match="no threshold 'nope'"):
        dreamer["nope"]


def _minimal_report() -> dict[str, Any]:
    gate = {
        "name": "common.finite_runs", "group": "common", "status": "pass", "pass": True,
        "value": 0, "threshold": 0, "comparison": "==", "reason": "ok", "evidence": {},
    }  # fmt: skip
    run = {
        "seed": 0, "status": "ok", "failure": None, "steps": 10, "steps_completed": 10,
        "metric_before": 2.0, "metric_after": 1.0, "drop": 0.5,
    }  # fmt: skip
    return {
        "schema_version": 1, "report_id": "x-1", "family": "x", "preset": "ci",
        "created_at": "2026-11-22T00:00:00+00:00",
        "code_version": {"library_version": "0.1.0", "git_commit": None, "git_dirty": None},
        "policy": {"family": "x", "thresholds": {}, "training": {}}, "policy_digest": "a" * 64,
        "datasets": [{"name": "d", "digest": "b" * 64}], "seeds": [0], "steps": 10,
        "success_rate": 1.0, "successes": 1,
        "gates": {
            "common": {
                "pass": True, "ci_low": 1.0, "ci_high": 1.0, "ci_method": "m",
                "clopper_pearson_low": 0.025, "clopper_pearson_high": 1.0,
                "successes": 1, "trials": 1, "required": 1,
            },
            "family_pass": True, "release_pass": True, "results": [gate],
        },
        "failed_gates": [], "runs": [run], "checkpoints": [],
    }  # fmt: skip


def test_schema_accepts_a_valid_report_and_names_violations() -> None:
    report = _minimal_report()
    validate_report(report)
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
