"""Gates every family faces: finiteness, seed success rate, seed stability, same-seed
repeatability, save/load parity, numerical stability and the training-loss trend.

Each gate is a pure function from seed-run records (see ``quality.seed_run``) and the policy
to a ``GateResult`` whose evidence carries the per-seed numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from quality.gates.result import GateResult, failed, measured, skipped
from quality.policy import Policy
from quality.stats import (
    bootstrap_rate_interval,
    clopper_pearson,
    coefficient_of_variation,
    required_successes,
)

Run = dict[str, Any]
BOOTSTRAP_METHOD = "percentile bootstrap, 10000 resamples, RNG seed 0, 95%"


def ok_runs(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r["status"] == "ok"]


def seed_succeeded(run: Run, policy: Policy) -> bool:
    """A seed succeeds when its run is finite and its held-out drop meets the threshold."""
    drop = run.get("drop")
    return run["status"] == "ok" and drop is not None and drop >= policy["success_drop"]


def finite_runs(runs: list[Run]) -> GateResult:
    bad = [r for r in runs if r["status"] != "ok"]
    evidence = {
        "per_seed": [
            {"seed": r["seed"], "status": r["status"], "failure": (r["failure"] or {}).get("kind")}
            for r in runs
        ]
    }
    result = measured(
        "common.finite_runs", "common", len(bad), 0, "==", evidence, "runs that failed"
    )
    if bad:
        why = "; ".join(
            f"seed {r['seed']}: {(r['failure'] or {}).get('message', 'failed')}" for r in bad
        )
        return GateResult(**{**result.__dict__, "reason": f"{len(bad)} run(s) failed: {why}"})
    return result


@dataclass(frozen=True)
class SuccessStats:
    successes: int
    trials: int
    required: int
    rate: float
    clopper_pearson: tuple[float, float]
    bootstrap: tuple[float, float]


def success_stats(runs: list[Run], policy: Policy) -> SuccessStats:
    outcomes = [seed_succeeded(r, policy) for r in runs]
    k, n = sum(outcomes), len(outcomes)
    return SuccessStats(
        successes=k,
        trials=n,
        required=required_successes(n, policy["success_rate"]),
        rate=k / n,
        clopper_pearson=clopper_pearson(k, n),
        bootstrap=bootstrap_rate_interval(outcomes),
    )


def seed_success_rate(
    runs: list[Run], policy: Policy, name: str = "common.seed_success_rate"
) -> GateResult:
    s = success_stats(runs, policy)
    evidence = {
        "successes": s.successes,
        "trials": s.trials,
        "required": s.required,
        "drop_threshold": policy["success_drop"],
        "clopper_pearson_95": list(s.clopper_pearson),
        "bootstrap_95": list(s.bootstrap),
        "bootstrap_method": BOOTSTRAP_METHOD,
        "per_seed": [
            {"seed": r["seed"], "drop": r.get("drop"), "succeeded": seed_succeeded(r, policy)}
            for r in runs
        ],
    }
    passed = s.successes >= s.required
    failed = [str(r["seed"]) for r in runs if not seed_succeeded(r, policy)]
    reason = (
        f"{s.successes}/{s.trials} seeds lowered the held-out metric by >= "
        f"{policy['success_drop']:.0%} (need {s.required}); exact 95% CI "
        f"[{s.clopper_pearson[0]:.2f}, {s.clopper_pearson[1]:.2f}]"
        + (f"; failed seeds: {', '.join(failed)}" if failed else "")
    )
    return GateResult(
        name,
        "common",
        "pass" if passed else "fail",
        s.rate,
        policy["success_rate"],
        ">=",
        reason,
        evidence,
    )


def seed_stability(runs: list[Run], policy: Policy) -> GateResult:
    name, threshold = "reproducibility.seed_stability", policy["seed_cv_max"]
    finals = [
        (r["seed"], r["metric_after"]) for r in ok_runs(runs) if r.get("metric_after") is not None
    ]
    if len(finals) < 2:
        return skipped(name, "reproducibility", "fewer than two finite runs to compare", threshold)
    cv = coefficient_of_variation([v for _, v in finals])
    evidence = {"per_seed": [{"seed": s, "metric_after": v} for s, v in finals]}
    return measured(
        name,
        "reproducibility",
        cv,
        threshold,
        "<=",
        evidence,
        "coefficient of variation of the final held-out metric across seeds",
    )


def _relative_difference(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return math.inf
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def repeatability(repeats: list[Run] | None, policy: Policy) -> GateResult:
    name, threshold = "reproducibility.repeatability", policy["repeat_tolerance"]
    if not repeats or len(repeats) < 2:
        return skipped(name, "reproducibility", "no same-seed re-runs were made", threshold)
    first, second = repeats[0], repeats[1]
    if first["status"] != "ok" or second["status"] != "ok":
        message = (first["failure"] or second["failure"] or {}).get("message", "")
        return failed(
            name,
            "reproducibility",
            f"a same-seed re-run failed: {message}",
            threshold,
            {"runs": [first.get("failure"), second.get("failure")]},
        )
    keys = sorted(set(first["after"]) & set(second["after"]))
    diffs = {k: _relative_difference(first["after"][k], second["after"][k]) for k in keys}
    worst = max(diffs, key=lambda k: diffs[k])
    evidence = {
        "seed": first["seed"],
        "steps": first["steps"],
        "relative_differences": diffs,
        "first": first["after"],
        "second": second["after"],
    }
    return measured(
        name,
        "reproducibility",
        diffs[worst],
        threshold,
        "<=",
        evidence,
        f"largest relative difference between two runs of seed {first['seed']} ({worst})",
    )


def save_load_parity(runs: list[Run], policy: Policy) -> GateResult:
    name, threshold = "reproducibility.save_load_parity", policy["parity_max_abs"]
    probed = [r for r in ok_runs(runs) if "parity" in r.get("probes", {})]
    if not probed:
        return skipped(name, "reproducibility", "no checkpoint was saved to reload", threshold)
    per_seed, worst, errors = [], 0.0, []
    for r in probed:
        probe = r["probes"]["parity"]
        if "error" in probe or probe.get("max_abs_diff") is None:
            errors.append(f"seed {r['seed']}: {probe.get('error', 'non-finite difference')}")
            continue
        per_seed.append({"seed": r["seed"], **probe})
        worst = max(worst, probe["max_abs_diff"])
    if errors:  # fail closed: a reload that cannot be compared is not parity
        return failed(
            name,
            "reproducibility",
            "reloading failed: " + "; ".join(errors),
            threshold,
            {"per_seed": per_seed, "errors": errors},
        )
    result = measured(
        name,
        "reproducibility",
        worst,
        threshold,
        "<=",
        {"per_seed": per_seed},
        "max |output(original) - output(reloaded)| over held-out batches",
    )
    if not result.passed:
        culprit = max(per_seed, key=lambda p: p["max_abs_diff"])
        reason = f"{result.reason}; worst output {culprit['worst_output']} (seed {culprit['seed']})"
        return GateResult(**{**result.__dict__, "reason": reason})
    return result


def numerical_stability(runs: list[Run]) -> GateResult:
    """No NaN/Inf in loss components, gradients or outputs within the step budget."""
    problems = []
    for r in runs:
        failure = r.get("failure") or {}
        if failure.get("kind") in ("diverged", "non_finite_eval"):
            problems.append({"seed": r["seed"], "problem": failure["message"]})
        outputs = r.get("probes", {}).get("outputs", {})
        if outputs and not outputs.get("finite", False):
            detail = (
                outputs.get("error") or f"non-finite outputs {outputs.get('non_finite_outputs')}"
            )
            problems.append({"seed": r["seed"], "problem": detail})
    result = measured(
        "benchmark.numerical_stability",
        "benchmark",
        len(problems),
        0,
        "==",
        {"problems": problems, "seeds": [r["seed"] for r in runs]},
        "runs with NaN/Inf in losses, gradients or outputs",
    )
    if problems:
        why = "; ".join(f"seed {p['seed']}: {p['problem']}" for p in problems)
        return GateResult(**{**result.__dict__, "reason": why})
    return result


def loss_trend(runs: list[Run], policy: Policy) -> GateResult:
    name, threshold = "benchmark.loss_trend", policy["trend_drop"]
    trends = [
        (r["seed"], r["trend"]) for r in ok_runs(runs) if r.get("trend", {}).get("drop") is not None
    ]
    if not trends:
        return skipped(name, "benchmark", "no run finished with a finite training curve", threshold)
    meeting = sum(t["drop"] >= threshold for _, t in trends)
    required = required_successes(len(trends), policy["success_rate"])
    evidence = {
        "within_steps": policy["trend_steps"],
        "required": required,
        "per_seed": [{"seed": s, **t} for s, t in trends],
    }
    worst = min(t["drop"] for _, t in trends)
    passed = meeting >= required
    reason = (
        f"{meeting}/{len(trends)} runs' training loss fell by >= {threshold:.0%} within "
        f"{policy['trend_steps']} steps (need {required}); smallest drop {worst:.1%}"
    )
    return GateResult(
        name, "benchmark", "pass" if passed else "fail", worst, threshold, ">=", reason, evidence
    )
