"""Gates on fixed evidence: resources (timing itself is measured by benchmarks, not tests),
the open-loop skill and output-spread prediction gates, same-seed repeatability and the stored
weights re-measured."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from quality.gates.common import repeatability, stored_weights
from quality.gates.measurements import (
    open_loop_skill,
    output_spread,
    peak_memory,
    rollout_latency,
    throughput,
)
from quality.policy import Policy, load_policy
from tests.quality.records import digest, failed_record, repeat_pair, seed_record, skill_probe


def _run(seed: int, **fields: Any) -> dict[str, Any]:
    return {"seed": seed, "status": "ok", "probes": {}, **fields}


def test_rollout_latency_checks_both_percentiles_and_fails_closed() -> None:
    policy = load_policy("tdmpc2")  # budgets p50 <= 50 ms, p95 <= 100 ms
    fast = _run(0, probes={"latency": {"horizon": 15, "p50_ms": 5.0, "p95_ms": 9.0}})
    slow_median = _run(1, probes={"latency": {"horizon": 15, "p50_ms": 60.0, "p95_ms": 70.0}})
    slow_tail = _run(2, probes={"latency": {"horizon": 15, "p50_ms": 10.0, "p95_ms": 150.0}})
    assert rollout_latency([fast], policy).passed
    assert rollout_latency([fast, slow_median], policy).status == "fail"
    result = rollout_latency([fast, slow_tail], policy)
    assert result.status == "fail"
    assert result.value == 150.0
    broken = _run(3, probes={"latency": {"error": "RuntimeError: x"}})
    assert rollout_latency([fast, broken], policy).status == "fail"


def test_throughput_and_memory_use_the_worst_seed() -> None:
    policy = load_policy("tdmpc2")
    runs = [
        _run(0, samples_per_second=5000.0, memory={"peak_mb": 400.0, "device_total_mb": 1000.0,
                                                   "measured": "rss"}),
        _run(1, samples_per_second=90.0, memory={"peak_mb": 950.0, "device_total_mb": 1000.0,
                                                 "measured": "rss"}),
    ]  # fmt: skip
    slow = throughput(runs, policy)
    assert slow.status == "fail"
    assert slow.value == 90.0
    memory = peak_memory(runs, policy)
    assert memory.status == "fail"
    assert memory.value == 0.95
    assert throughput(runs[:1], policy).passed
    assert peak_memory(runs[:1], policy).passed
    failed = [{"seed": 0, "status": "failed", "probes": {}}]
    assert throughput(failed, policy).status == "skipped"


# --- prediction: open-loop skill per horizon, output spread (collapse) ------------------------


def _with_skill(policy: Policy, **changes: Any) -> Policy:
    return dataclasses.replace(policy, thresholds={**policy.thresholds, **changes})


def test_open_loop_skill_has_one_gate_per_release_horizon_and_judges_the_worst_seed() -> None:
    policy = load_policy("tdmpc2")  # min_skill_at {"5": 0.5, "10": 0.5}
    runs = [seed_record(s) for s in range(3)]
    gates = open_loop_skill(runs, policy)
    assert [g.name for g in gates] == [
        "prediction.open_loop_skill_5",
        "prediction.open_loop_skill_10",
    ]
    assert all(g.passed for g in gates)
    assert [g.value for g in gates] == [pytest.approx(0.8)] * 2

    runs[2]["probes"]["skill"]["horizons"]["10"] |= {"skill": 0.3, "model": 0.7}
    five, ten = open_loop_skill(runs, policy)
    assert five.passed
    assert ten.status == "fail"
    assert ten.value == 0.3
    assert ten.threshold == 0.5
    assert "seed 2" in ten.reason
    assert "vs mean 1" in ten.reason  # the baseline it was measured against, and its NMSE

    looser = open_loop_skill(runs, _with_skill(policy, min_skill_at={"5": 0.5, "10": 0.25}))
    assert all(g.passed for g in looser)


def test_open_loop_skill_is_skipped_without_a_learned_seed_and_fails_closed() -> None:
    policy = load_policy("tdmpc2")
    unskilled = [seed_record(s, skill=0.1) for s in range(2)]
    assert {g.status for g in open_loop_skill(unskilled, policy)} == {"skipped"}
    # A release horizon the skill probe never measured fails closed (no KeyError).
    beyond = _with_skill(policy, min_skill_at={"5": 0.5, "20": 0.5})
    five, twenty = open_loop_skill([seed_record(0)], beyond)
    assert five.passed
    assert twenty.name == "prediction.open_loop_skill_20"
    assert twenty.status == "fail"
    assert "measured no 20-step horizon" in twenty.reason


def test_output_spread_fails_a_collapsed_output_in_any_finished_seed() -> None:
    policy = load_policy("tdmpc2")  # min_spread_ratio 0.25
    runs = [seed_record(s) for s in range(3)]
    healthy = output_spread(runs, policy)
    assert healthy.passed
    assert healthy.value == pytest.approx(0.9)
    # Seed 1 imagines (almost) the same observation for every held-out segment; it need not
    # have succeeded for its collapse to count.
    runs[1]["probes"]["skill"] = skill_probe(0.0, spread_ratio=0.002)
    collapsed = output_spread(runs, policy)
    assert collapsed.status == "fail"
    assert collapsed.value == 0.002
    assert collapsed.threshold == policy["min_spread_ratio"]
    assert {"seed": 1, "spread_ratio": 0.002} in collapsed.evidence["per_seed"]
    runs[1]["probes"]["skill"] = {"error": "ValueError: readout failed"}
    broken = output_spread(runs, policy)
    assert broken.status == "fail"
    assert "fails closed" in broken.reason
    assert "readout failed" in broken.reason
    assert output_spread([failed_record(0)], policy).status == "skipped"


# --- reproducibility: same-seed re-runs, stored weights ---------------------------------------


def test_repeatability_on_a_cpu_compares_the_weights_bit_for_bit() -> None:
    policy = load_policy("tdmpc2")
    same = repeatability(repeat_pair(same=True), policy)
    assert same.passed
    assert (same.value, same.threshold, same.comparison) == (0.0, 0.0, "==")
    assert same.evidence["weights_digests"][0] == same.evidence["weights_digests"][1]

    different = repeatability(repeat_pair(same=False), policy)
    assert different.status == "fail"
    assert different.value == 1.0
    assert "weights that differ between two CPU runs of seed 0" in different.reason
    # Equal held-out metrics do not hide different weights on a CPU.
    first, second = repeat_pair(same=False)
    assert first["after"] == second["after"]

    missing = repeat_pair()
    del missing[1]["weights_digest"]
    unproven = repeatability(missing, policy)
    assert unproven.status == "fail"
    assert "no weights digest" in unproven.reason

    crashed = [repeat_pair()[0], failed_record(0, message="out of memory")]
    result = repeatability(crashed, policy)
    assert result.status == "fail"
    assert "out of memory" in result.reason
    assert repeatability(None, policy).status == "skipped"
    assert repeatability(repeat_pair()[:1], policy).status == "skipped"


def test_repeatability_on_an_accelerator_compares_metrics_within_a_tolerance() -> None:
    policy = load_policy("tdmpc2")  # repeat_tolerance_accelerator 0.05
    tolerance = policy["repeat_tolerance_accelerator"]
    close = repeat_pair(device="cuda:0", same=False)  # kernels need not be deterministic
    close[1]["after"] = {k: v * (1 + tolerance / 2) for k, v in close[0]["after"].items()}
    result = repeatability(close, policy)
    assert result.passed
    assert result.threshold == tolerance
    assert result.value is not None
    assert 0 < result.value <= tolerance

    far = repeat_pair(device="cuda", same=True)
    far[1]["after"] = {
        **far[1]["after"],
        "world_model_loss": far[0]["after"]["world_model_loss"] * 2,
    }
    result = repeatability(far, policy)
    assert result.status == "fail"
    assert result.value == pytest.approx(0.5)
    assert "(world_model_loss)" in result.reason

    disjoint = repeat_pair(device="cuda", same=True)
    disjoint[0]["after"] = {"loss": 1.0}
    disjoint[1]["after"] = {"world_model_loss": 1.0}
    result = repeatability(disjoint, policy)  # no crash: a clear failure
    assert result.status == "fail"
    assert "the two re-runs share no held-out metric" in result.reason
    for r in disjoint:
        r["after"] = None
    assert repeatability(disjoint, policy).status == "fail"


def test_stored_weights_must_re_measure_what_the_training_step_reported() -> None:
    policy = load_policy("tdmpc2")  # stored_tolerance 1e-6
    runs = [seed_record(s) for s in range(3)]
    agree = stored_weights(runs, policy)
    assert agree.passed
    assert (agree.value, agree.threshold, agree.comparison) == (0.0, 1e-6, "<=")

    runs[1]["stored"]["after"]["world_model_loss"] *= 1 + 1e-8  # float noise of a reload
    assert stored_weights(runs, policy).passed

    skill = [seed_record(s) for s in range(3)]
    skill[2]["stored"]["skill"] = 0.7
    result = stored_weights(skill, policy)
    assert result.status == "fail"
    assert "seed 2: skill re-measured 0.7 but the training step reported 0.8" in result.reason
    assert result.value == pytest.approx(0.125)

    metric = [seed_record(s) for s in range(2)]
    metric[0]["stored"]["after"]["world_model_loss"] = 0.33
    result = stored_weights(metric, policy)
    assert result.status == "fail"
    assert "world_model_loss re-measured 0.33" in result.reason
    assert "reported 0.3" in result.reason

    swapped = [seed_record(s) for s in range(2)]
    swapped[1]["stored"]["weights_digest"] = digest("someone else's weights")
    result = stored_weights(swapped, policy)
    assert result.status == "fail"
    assert digest("someone else's weights")[:12] in result.reason
    assert swapped[1]["weights_digest"][:12] in result.reason


def test_stored_weights_fail_closed_when_they_cannot_be_re_measured() -> None:
    policy = load_policy("tdmpc2")
    runs = [seed_record(s) for s in range(2)]
    runs[0]["stored"] = {"error": "ChecksumError: weights sha256 mismatch"}
    result = stored_weights(runs, policy)
    assert result.status == "fail"
    assert result.blocks
    assert "fails closed" in result.reason
    assert "seed 0: ChecksumError: weights sha256 mismatch" in result.reason
    del runs[0]["stored"]
    unmeasured = stored_weights(runs, policy)
    assert unmeasured.status == "fail"
    assert "seed 0: the stored weights were not re-measured" in unmeasured.reason
    # No checkpoint at all: nothing to re-measure, which still blocks.
    nothing = stored_weights([seed_record(0, checkpoint=None), failed_record(1)], policy)
    assert nothing.status == "skipped"
    assert nothing.blocks
