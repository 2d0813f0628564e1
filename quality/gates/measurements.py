"""Resource gates (seed document 000, adapted to the device in use), prediction-quality gates
and the planner boundary.

Prediction gates judge what a model learned, so they are measured on the seeds that succeeded;
when none did they are skipped (the success-rate gate already says why). The exceptions judge
what every finished seed outputs: the output spread and the frame gates. They fail closed: a
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


def _finished(runs: list[Run]) -> list[Run]:
    return [r for r in ok_runs(runs) if "skill" in r.get("probes", {})]


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
    finished = _finished(runs)
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


def _frames_not_applicable(
    name: str, runs: list[Run], obs_shape: tuple[int, ...]
) -> GateResult | None:
    """Frame gates judge frames the family itself predicts: images, through a decoder."""
    if len(obs_shape) != 3:
        return not_applicable(
            name, "prediction", f"observations are vectors {obs_shape}, not images"
        )
    probed = [r["probes"]["skill"] for r in runs if "skill" in r.get("probes", {})]
    spaces = {p["space"] for p in probed if p.get("space")}
    if spaces and "decoder" not in spaces:  # measured through a read-out, never decoded
        return not_applicable(name, "prediction", "the family has no observation decoder")
    return None


# metric -> (policy key of the per-horizon minimum, policy key of the margin over persistence,
# unit in reasons)
FRAME_METRICS = {
    "psnr": ("min_psnr_at", "min_psnr_gain_db", "dB"),
    "ssim": ("min_ssim_at", "min_ssim_gain", ""),
}


def frame_quality(
    metric: str, runs: list[Run], policy: Policy, obs_shape: tuple[int, ...]
) -> list[GateResult]:
    """Per horizon k of ``min_<metric>_at``: every finished seed's predicted frames k steps
    ahead reach the minimum and beat persistence (the last observed frame, "nothing changes")
    by the policy's margin. The value recorded is the worst seed's figure; when only the
    margin fails, the worst margin and its threshold.

    Judged on every finished seed, not only those that reached skill (as ``output_spread``):
    frames are what a release manager looks at, and a model that learned nothing must fail
    here too, not be skipped."""
    at_key, gain_key, unit = FRAME_METRICS[metric]
    minimum, gain = policy[at_key], float(policy[gain_key])
    names = {k: f"prediction.{metric}_{k}" for k in sorted(minimum, key=int)}
    results = []
    good = _finished(runs)
    errors = _probe_errors(good, "skill")
    for k, name in names.items():
        threshold = float(minimum[k])
        absent = _frames_not_applicable(name, runs, obs_shape)
        if absent is not None:
            results.append(absent)
            continue
        if not good:
            results.append(skipped(name, "prediction", "no run finished to measure", threshold))
            continue
        if errors:
            results.append(_failed_closed(name, "prediction", threshold, errors))
            continue
        unmeasured = [
            f"seed {r['seed']}: the skill probe measured no {metric} {k} steps ahead"
            for r in good
            if metric not in r["probes"]["skill"]["horizons"].get(k, {})
        ]
        if unmeasured:  # e.g. the policy names a horizon that skill_horizons lacks
            results.append(_failed_closed(name, "prediction", threshold, unmeasured))
            continue
        per_seed = []
        for r in good:
            figures = r["probes"]["skill"]["horizons"][k]
            value, baseline = figures[metric], figures[f"{metric}_persistence"]
            per_seed.append(
                {
                    "seed": r["seed"],
                    metric: value,
                    "persistence": baseline,
                    "gain": value - baseline,
                }
            )
        worst = min(per_seed, key=lambda p: p[metric])
        least_gain = min(per_seed, key=lambda p: p["gain"])
        reached = worst[metric] >= threshold
        beats = least_gain["gain"] >= gain
        reason = (
            f"worst {k}-step {metric.upper()} {worst[metric]:.4g}{unit} (seed {worst['seed']}; "
            f"minimum {threshold:.4g}); smallest gain over persistence {least_gain['gain']:+.4g}"
            f"{unit} (seed {least_gain['seed']}: {least_gain[metric]:.4g} vs "
            f"{least_gain['persistence']:.4g}; required {gain:+.4g})"
        )
        value, decided_by = (
            (least_gain["gain"], gain) if reached and not beats else (worst[metric], threshold)
        )
        results.append(
            GateResult(
                name,
                "prediction",
                "pass" if reached and beats else "fail",
                value,
                decided_by,
                ">=",
                reason,
                {"per_seed": per_seed, "minimum": threshold, "min_gain": gain},
            )
        )
    return results


def temporal_consistency(runs: list[Run], policy: Policy, obs_shape: tuple[int, ...]) -> GateResult:
    """Imagined rollouts change from frame to frame no more than the data does: the largest
    RMS change between consecutive imagined frames over the largest between consecutive real
    frames of the same held-out segments, at most 1 + temporal_change_margin, for every
    finished seed. Flicker, jumps and noise raise it; a frozen rollout is caught by the
    PSNR/SSIM gates instead."""
    name, margin = "prediction.temporal_consistency", float(policy["temporal_change_margin"])
    absent = _frames_not_applicable(name, runs, obs_shape)
    if absent is not None:
        return absent
    good = _finished(runs)
    if not good:
        return skipped(name, "prediction", "no run finished to measure", margin)
    errors = _probe_errors(good, "skill")
    if errors:
        return _failed_closed(name, "prediction", margin, errors)
    missing = [f"seed {r['seed']}" for r in good if "temporal" not in r["probes"]["skill"]]
    if missing:
        return _failed_closed(
            name,
            "prediction",
            margin,
            [f"{s}: the skill probe measured no temporal change" for s in missing],
        )
    per_seed = []
    for r in good:
        temporal = r["probes"]["skill"]["temporal"]
        ratio = max(temporal["imagined"]) / max(max(temporal["real"]), 1e-12)
        per_seed.append(
            {
                "seed": r["seed"],
                "ratio": ratio,
                "imagined_max": max(temporal["imagined"]),
                "real_max": max(temporal["real"]),
            }
        )
    worst = max(per_seed, key=lambda p: p["ratio"])
    return measured(
        name,
        "prediction",
        worst["ratio"] - 1.0,
        margin,
        "<=",
        {"per_seed": per_seed},
        f"largest imagined frame-to-frame RMS change over the real one, minus 1 (seed "
        f"{worst['seed']}: {worst['imagined_max']:.4g} vs {worst['real_max']:.4g})",
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
