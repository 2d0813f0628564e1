"""Resource gates on fixed evidence (timing itself is measured by benchmarks, not tests)."""

from __future__ import annotations

from typing import Any

from quality.gates.measurements import peak_memory, rollout_latency, throughput
from quality.policy import load_policy


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
