"""Resource gates (seed document 000, adapted to the device in use), prediction-quality gates
and the planner boundary.

Prediction gates judge what a model learned, so they are measured on the seeds that succeeded;
when none did they are skipped (the success-rate gate already says why). They fail closed: a
probe that raised is a failed gate, never a pass.
"""

from __future__ import annotations

from typing import Any

from quality.gates.common import Run, ok_runs, seed_succeeded
from quality.gates.result import (
    GateResult,
    Status,
    failed,
    measured,
    not_applicable,
    skipped,
)
from quality.policy import Policy


def _probe_errors(runs: list[Run], probe: str) -> list[str]:
    return [
        f"seed {r['seed']}: {r['probes'][probe]['error']}"
        for r in runs
        if "error" in r.get("probes", {}).get(probe, {})
    ]


def _failed_closed(name: str, group: str, threshold: float, errors: list[str]) -> GateResult:
    reason = "measurement failed (fails closed): " + "; ".join(errors)
    return failed(name, group, reason, threshold, {"errors": errors})


def peak_memory(runs: list[Run], policy: Policy) -> GateResult:
    name, threshold = "resource.peak_memory", policy["peak_memory_fraction"]
    measured_runs = [r for r in ok_runs(runs) if "memory" in r]
    if not measured_runs:
        return skipped(name, "resource", "no run finished to measure memory", threshold)
    per_seed = [
        {
            "seed": r["seed"],
            **r["memory"],
            "fraction": r["memory"]["peak_mb"] / r["memory"]["device_total_mb"],
        }
        for r in measured_runs
    ]
    worst = max(p["fraction"] for p in per_seed)
    return measured(
        name,
        "resource",
        worst,
        threshold,
        "<=",
        {"per_seed": per_seed},
        f"peak memory / device memory ({per_seed[0]['measured']})",
    )


def throughput(runs: list[Run], policy: Policy) -> GateResult:
    name, threshold = "resource.throughput", policy["min_samples_per_second"]
    rates = [
        (r["seed"], r["samples_per_second"]) for r in ok_runs(runs) if "samples_per_second" in r
    ]
    if not rates:
        return skipped(name, "resource", "no run finished to measure throughput", threshold)
    worst = min(v for _, v in rates)
    evidence = {"per_seed": [{"seed": s, "samples_per_second": v} for s, v in rates]}
    return measured(
        name,
        "resource",
        worst,
        threshold,
        ">=",
        evidence,
        "slowest training throughput (samples/s, sampling + model step)",
    )


def rollout_latency(runs: list[Run], policy: Policy) -> GateResult:
    name = "resource.rollout_latency"
    p50_max, p95_max = policy["rollout_latency_p50_ms"], policy["rollout_latency_p95_ms"]
    probed = [r for r in ok_runs(runs) if "latency" in r.get("probes", {})]
    if not probed:
        return skipped(name, "resource", "no run finished to measure latency", p95_max)
    errors = _probe_errors(probed, "latency")
    if errors:
        return _failed_closed(name, "resource", p95_max, errors)
    per_seed = [{"seed": r["seed"], **r["probes"]["latency"]} for r in probed]
    p50 = max(p["p50_ms"] for p in per_seed)
    p95 = max(p["p95_ms"] for p in per_seed)
    passed = p50 <= p50_max and p95 <= p95_max
    reason = (
        f"rollout of {per_seed[0]['horizon']} steps: worst p50 {p50:.2f} ms (budget {p50_max}), "
        f"worst p95 {p95:.2f} ms (budget {p95_max})"
    )
    evidence: dict[str, Any] = {"per_seed": per_seed, "p50_budget_ms": p50_max}
    # The value and threshold recorded are the percentile that decided: the median when only
    # it is over budget, else the tail.
    value, budget = (p50, p50_max) if p50 > p50_max and p95 <= p95_max else (p95, p95_max)
    return GateResult(
        name, "resource", "pass" if passed else "fail", value, budget, "<=", reason, evidence
    )


def _succeeded(runs: list[Run], policy: Policy) -> list[Run]:
    return [r for r in runs if seed_succeeded(r, policy)]


def open_loop_skill(runs: list[Run], policy: Policy) -> list[GateResult]:
    """Per horizon of ``min_skill_at``: the worst succeeded seed's open-loop skill over the
    best trivial baseline at that horizon (observation space; see quality/skill.py)."""
    thresholds = policy["min_skill_at"]
    names = {k: f"prediction.open_loop_skill_{k}" for k in sorted(thresholds, key=int)}
    good = _succeeded(runs, policy)
    if not good:
        return [
            skipped(
                n,
                "prediction",
                "no seed succeeded, so there is no learned model to judge",
                thresholds[k],
            )
            for k, n in names.items()
        ]
    errors = _probe_errors(good, "skill")
    results = []
    for k, name in names.items():
        if errors:
            results.append(_failed_closed(name, "prediction", thresholds[k], errors))
            continue
        unmeasured = [
            f"seed {r['seed']}: the skill probe measured no {k}-step horizon"
            for r in good
            if k not in r["probes"]["skill"]["horizons"]
        ]
        if unmeasured:  # e.g. min_skill_at names a horizon that skill_horizons lacks
            results.append(_failed_closed(name, "prediction", thresholds[k], unmeasured))
            continue
        per_seed = [{"seed": r["seed"], **r["probes"]["skill"]["horizons"][k]} for r in good]
        worst = min(per_seed, key=lambda p: p["skill"])
        results.append(
            measured(
                name,
                "prediction",
                worst["skill"],
                thresholds[k],
                ">=",
                {"per_seed": per_seed, "space": good[0]["probes"]["skill"]["space"]},
                f"worst {k}-step open-loop skill (model NMSE {worst['model']:.4g} vs "
                f"{worst['baseline']} {worst[worst['baseline']]:.4g}, seed {worst['seed']})",
            )
        )
    return results


def output_spread(runs: list[Run], policy: Policy) -> GateResult:
    """Collapse: the imagined observations (decoded, or read out of a decoder-free state) must
    vary across held-out segments about as much as the true ones. A model whose output
    collapsed to a constant has a spread ratio near 0."""
    name, threshold = "prediction.output_spread", policy["min_spread_ratio"]
    finished = [r for r in ok_runs(runs) if "skill" in r.get("probes", {})]
    if not finished:
        return skipped(name, "prediction", "no run finished to measure", threshold)
    errors = _probe_errors(finished, "skill")
    if errors:
        return _failed_closed(name, "prediction", threshold, errors)
    per_seed = []
    for r in finished:
        horizons = r["probes"]["skill"]["horizons"]
        first = horizons[min(horizons, key=int)]
        per_seed.append({"seed": r["seed"], "spread_ratio": first["spread_ratio"]})
    worst = min(p["spread_ratio"] for p in per_seed)
    return measured(
        name,
        "prediction",
        worst,
        threshold,
        ">=",
        {"per_seed": per_seed},
        "smallest ratio of the spread of imagined to true observations across held-out segments",
    )


def psnr(runs: list[Run], policy: Policy, obs_shape: tuple[int, ...]) -> GateResult:
    """PSNR of one-step predicted frames (image observations and an observation decoder)."""
    name, threshold = "prediction.psnr", policy["psnr_min"]
    if len(obs_shape) != 3:
        return not_applicable(
            name, "prediction", f"observations are vectors {obs_shape}, not images"
        )
    probed = [r["probes"]["skill"] for r in runs if "skill" in r.get("probes", {})]
    spaces = {p["space"] for p in probed if p.get("space")}
    if spaces and "decoder" not in spaces:  # measured through a read-out, never decoded
        return not_applicable(name, "prediction", "the family has no observation decoder")
    good = _succeeded(runs, policy)
    if not good:
        return skipped(name, "prediction", "no seed succeeded", threshold)
    errors = _probe_errors(good, "skill")
    if errors:
        return _failed_closed(name, "prediction", threshold, errors)
    probes = [(r["seed"], r["probes"]["skill"]) for r in good]
    per_seed = [
        {"seed": s, "psnr_1": p["horizons"][min(p["horizons"], key=int)]["psnr"]} for s, p in probes
    ]
    worst = min(p["psnr_1"] for p in per_seed)
    return measured(
        name,
        "prediction",
        worst,
        threshold,
        ">=",
        {"per_seed": per_seed},
        "worst one-step PSNR of predicted frames (dB)",
    )


def plausibility(runs: list[Run], policy: Policy) -> GateResult:
    name, threshold = "prediction.plausibility", policy["plausibility_max_violation"]
    good = _succeeded(runs, policy)
    if not good:
        return skipped(name, "prediction", "no seed succeeded", threshold)
    errors = _probe_errors(good, "plausibility")
    if errors:
        return _failed_closed(name, "prediction", threshold, errors)
    per_seed = [{"seed": r["seed"], **r["probes"]["plausibility"]} for r in good]
    worst = max(p["violation_fraction"] for p in per_seed)
    return measured(
        name,
        "prediction",
        worst,
        threshold,
        "<=",
        {"per_seed": per_seed, "margin": policy["plausibility_margin"]},
        f"fraction of imagined {per_seed[0]['quantity']} values outside the data's range "
        f"+/- {policy['plausibility_margin']:.0%}",
    )


def planner_boundary(runs: list[Run], policy: Policy) -> GateResult:
    name, horizon = "planner.boundary", policy["planner_horizon"]
    probed = [r for r in ok_runs(runs) if "planner" in r.get("probes", {})]
    if not probed:
        return skipped(name, "planner", "no run finished to plan with", horizon)
    errors = _probe_errors(probed, "planner")
    if errors:
        return _failed_closed(name, "planner", horizon, errors)
    probes = [r["probes"]["planner"] for r in probed]
    if not any(p["applicable"] for p in probes):
        return not_applicable(name, "planner", "the family does not predict rewards")
    bad = [
        f"seed {r['seed']}: {p}"
        for r, p in zip(probed, probes, strict=True)
        if not (
            p["is_action_payload"]
            and p["horizon_extra"] == horizon
            and p["shape"][0] == horizon
            and p["finite"]
        )
    ]
    status: Status = "fail" if bad else "pass"
    reason = (
        f"CEM planner returned ActionPayload with extras['wf.planner.horizon'] == {horizon}"
        if not bad
        else "planner contract broken: " + "; ".join(bad)
    )
    return GateResult(
        name, "planner", status, float(len(bad)), 0.0, "==", reason, {"per_seed": probes}
    )
