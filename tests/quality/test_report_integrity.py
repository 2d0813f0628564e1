"""``validate_report`` recomputes a report's decisions instead of trusting them: a report edited
after evaluation (a gate dropped, a verdict or status flipped, the failed-gate list or a policy
threshold changed) is refused with a message naming what was edited."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from quality.evaluate import build_report, evaluate_gates
from quality.policy import Policy, load_policy
from quality.report import ReportError, validate_report
from tests.quality.records import repeat_pair, seed_record


def _report(runs: list[dict[str, Any]], family: str = "tdmpc2") -> dict[str, Any]:
    policy = load_policy(family)
    repeats = repeat_pair()
    gates = evaluate_gates(runs, policy, repeats=repeats, obs_shape=(3,))
    report = build_report(runs, policy, gates, repeats=repeats)
    validate_report(report)  # as evaluated, the report is valid
    return report


@pytest.fixture
def releasable() -> dict[str, Any]:
    report = _report([seed_record(s) for s in range(5)])
    assert report["gates"]["release_pass"]
    assert report["failed_gates"] == []
    return report


@pytest.fixture
def blocked() -> dict[str, Any]:
    """Seed 3 trains too slowly (a measured failure) and seed 4's stored weights could not be
    re-measured (a failure with no value): blocked, for two reasons."""
    runs = [seed_record(s) for s in range(5)]
    runs[3]["samples_per_second"] = 50.0
    runs[4]["stored"] = {"error": "FileNotFoundError: model.safetensors"}
    report = _report(runs)
    assert not report["gates"]["release_pass"]
    assert report["gates"]["common"]["pass"]
    assert report["failed_gates"] == ["reproducibility.stored_weights", "resource.throughput"]
    return report


def _gate(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in report["gates"]["results"] if g["name"] == name)


def _refused(report: dict[str, Any], match: str) -> None:
    with pytest.raises(ReportError, match=match):
        validate_report(report)


def test_a_report_with_a_gate_removed_is_refused(releasable: dict[str, Any]) -> None:
    for name in ("resource.throughput", "planner.boundary", "family.reference.finite_components"):
        report = copy.deepcopy(releasable)
        report["gates"]["results"].remove(_gate(report, name))
        _refused(report, rf"not exactly tdmpc2's gate list \(missing \['{name}'\], unexpected \[\]")


def test_a_report_with_a_gate_added_or_reordered_is_refused(releasable: dict[str, Any]) -> None:
    added = copy.deepcopy(releasable)
    extra = copy.deepcopy(_gate(added, "resource.throughput"))
    added["gates"]["results"].append({**extra, "name": "family.jepa.embedding_spread"})
    _refused(added, r"unexpected \['family.jepa.embedding_spread'\]")
    swapped = copy.deepcopy(releasable)
    results = swapped["gates"]["results"]
    results[0], results[1] = results[1], results[0]
    _refused(swapped, "or out of order")


def test_a_flipped_release_verdict_is_refused(
    releasable: dict[str, Any], blocked: dict[str, Any]
) -> None:
    report = copy.deepcopy(releasable)
    report["gates"]["release_pass"] = False
    _refused(report, "gates.release_pass is recorded as False, but the gate results give True")
    report = copy.deepcopy(blocked)
    report["gates"]["release_pass"] = True
    _refused(report, "gates.release_pass is recorded as True, but the gate results give False")
    report = copy.deepcopy(releasable)
    report["gates"]["family_pass"] = False
    _refused(report, "gates.family_pass is recorded as False")
    report = copy.deepcopy(releasable)
    report["gates"]["common"]["pass"] = False
    _refused(report, "gates.common.pass is recorded as False")


def test_a_gate_status_flipped_from_fail_to_pass_is_refused(blocked: dict[str, Any]) -> None:
    # Only the status: it contradicts the gate's own pass flag.
    report = copy.deepcopy(blocked)
    _gate(report, "resource.throughput")["status"] = "pass"
    _refused(report, "gate resource.throughput: pass=False contradicts pass")

    # Status and pass flag, and every verdict field made consistent with them: the measured
    # value still does not meet the threshold.
    report = copy.deepcopy(blocked)
    throughput = _gate(report, "resource.throughput")
    assert (throughput["value"], throughput["threshold"]) == (50.0, 100.0)
    throughput |= {"status": "pass", "pass": True}
    report["failed_gates"] = ["reproducibility.stored_weights"]
    _refused(report, r"gate resource.throughput says pass, but its value 50.0 does not meet >= 100")

    # A gate that failed closed has no value to meet; flipping it is refused all the same.
    report = copy.deepcopy(blocked)
    stored = _gate(report, "reproducibility.stored_weights")
    assert stored["value"] is None
    assert "FileNotFoundError: model.safetensors" in stored["reason"]
    stored |= {"status": "pass", "pass": True}
    report["failed_gates"] = ["resource.throughput"]
    _refused(report, "gate reproducibility.stored_weights says pass, but records no value")


def test_a_gate_that_failed_on_its_median_latency_cannot_pass_by_its_tail() -> None:
    """The recorded value is the percentile that decided, so a flip is caught even with the
    verdict edited to match."""
    runs = [seed_record(s) for s in range(5)]
    runs[2]["probes"]["latency"] |= {"p50_ms": 70.0, "p95_ms": 80.0}  # p50 budget 50, p95 100
    report = _report(runs)
    latency = _gate(report, "resource.rollout_latency")
    assert latency["status"] == "fail"
    assert (latency["value"], latency["threshold"]) == (70.0, 50.0)
    latency |= {"status": "pass", "pass": True}
    report["failed_gates"] = []
    report["gates"]["release_pass"] = True
    _refused(report, r"rollout_latency says pass, but its value 70.0 does not meet <= 50")


def test_a_passing_trend_with_one_slow_seed_is_a_valid_report() -> None:
    """4 of 5 seeds meeting trend_drop pass the loss trend although the smallest drop misses
    it: the report must still validate (its value is the drop the decision rests on)."""
    runs = [seed_record(s) for s in range(5)]
    runs[0]["drop"] = 0.05  # trend_drop 0.1
    trend = _gate(_report(runs), "benchmark.loss_trend")
    assert trend["status"] == "pass"
    assert trend["value"] >= trend["threshold"]
    assert "4/5 runs" in trend["reason"]
    assert "smallest drop 5.0%" in trend["reason"]
    runs[1]["drop"] = 0.05  # 3 of 5: fails, on a value that misses the threshold
    trend = _gate(_report(runs), "benchmark.loss_trend")
    assert trend["status"] == "fail"
    assert trend["value"] == 0.05


def test_edited_failed_gates_are_refused(
    releasable: dict[str, Any], blocked: dict[str, Any]
) -> None:
    report = copy.deepcopy(blocked)
    report["failed_gates"] = ["resource.throughput"]  # one hidden
    _refused(
        report,
        r"failed_gates is recorded as \['resource.throughput'\], but the gate results give "
        r"\['reproducibility.stored_weights', 'resource.throughput'\]",
    )
    report = copy.deepcopy(blocked)
    report["failed_gates"] = []
    _refused(report, r"failed_gates is recorded as \[\]")
    report = copy.deepcopy(releasable)
    report["failed_gates"] = ["resource.throughput"]  # a failure invented
    _refused(report, r"failed_gates is recorded as \['resource.throughput'\], but .* give \[\]")


def test_an_edited_policy_threshold_is_refused(releasable: dict[str, Any]) -> None:
    report = copy.deepcopy(releasable)
    report["policy"]["thresholds"]["min_samples_per_second"] = 10.0
    _refused(report, "the thresholds were edited after evaluation")
    report = copy.deepcopy(releasable)
    report["policy"]["thresholds"]["min_skill_at"]["10"] = 0.1
    _refused(report, r"recorded policy's digest [0-9a-f]{12} is not the recorded policy_digest")
    report = copy.deepcopy(releasable)
    report["policy"]["required_gates"] = []
    _refused(report, "the thresholds were edited after evaluation")


def test_a_consistently_edited_policy_must_still_give_the_same_gate_list(
    releasable: dict[str, Any],
) -> None:
    """Re-digesting an edited policy does not help: the gate list follows from the policy."""
    report = copy.deepcopy(releasable)
    report["policy"]["thresholds"]["min_skill_at"] = {"5": 0.5}  # drop the 10-step gate...
    report["policy_digest"] = Policy.from_dict(report["policy"]).digest
    _refused(report, r"unexpected \['prediction.open_loop_skill_10'\]")  # ...which was evaluated
    report = copy.deepcopy(releasable)
    report["policy"]["kind"] = "jepa"
    report["policy_digest"] = Policy.from_dict(report["policy"]).digest
    _refused(report, r"missing \['family.jepa.finite_projections'")


def test_an_unedited_blocked_report_is_accepted_and_reports_are_families(
    blocked: dict[str, Any],
) -> None:
    validate_report(copy.deepcopy(blocked))
    report = copy.deepcopy(blocked)
    report["family"] = "no_such_family"
    _refused(report, "no_such_family")


def test_a_lowered_gate_threshold_with_a_consistent_verdict_is_refused(
    blocked: dict[str, Any],
) -> None:
    """The forger lowers the failing gate's threshold below its value, flips it to pass and
    makes the verdict agree: the threshold no longer matches the digest-checked policy."""
    report = copy.deepcopy(blocked)
    gate = _gate(report, "resource.throughput")
    gate.update(threshold=gate["value"] / 2, status="pass", reason="edited")
    gate["pass"] = True
    report["failed_gates"] = ["reproducibility.stored_weights"]
    _refused(report, r"resource.throughput: threshold .* is not the recorded policy's")
