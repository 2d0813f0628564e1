"""Gates every family faces: finiteness, seed success rate (held-out skill over trivial
baselines), seed stability, same-seed repeatability, the stored weights re-measured, save/load
parity, numerical stability and the held-out loss trend.

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


def skill_of(run: Run) -> float | None:
    """The seed's held-out skill over the best trivial baseline (see quality/skill.py), or
    None when it was not measured (failed run, probe error)."""
    value = run.get("probes", {}).get("skill", {}).get("skill")
    return float(value) if value is not None else None


def seed_succeeded(run: Run, policy: Policy) -> bool:
    """A seed succeeds when its run is finite and its held-out skill over the best trivial
    baseline (mean or persistence, over the policy's horizons) reaches ``min_skill``. The
    relative drop of the loss from random initial weights is evidence only: predicting the
    data's mean already earns a large drop."""
    skill = skill_of(run)
    return run["status"] == "ok" and skill is not None and skill >= policy["min_skill"]


# What a seed's figures are compared with, per horizon (quality/skill.py): the trivial baselines,
# then what the data allows (a linear model, a residual MLP fitted by the probe).
HEADROOM_REFERENCES = ("mean", "persistence", "linear", "residual_mlp")


def _skill_evidence(run: Run) -> dict[str, Any]:
    probe = run.get("probes", {}).get("skill", {})
    horizons = probe.get("horizons", {})
    return {
        "skill": skill_of(run),
        "error": probe.get("error"),
        "space": probe.get("space"),
        "per_horizon": {
            k: {n: f.get(n) for n in ("skill", "model", "baseline", *HEADROOM_REFERENCES)}
            | {"baseline_nmse": f.get(f.get("baseline", ""), None)}
            for k, f in horizons.items()
        },
        "drop": run.get("drop"),
    }


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
        "min_skill": policy["min_skill"],
        "horizons": policy["skill_horizons"],
        "clopper_pearson_95": list(s.clopper_pearson),
        "bootstrap_95": list(s.bootstrap),
        "bootstrap_method": BOOTSTRAP_METHOD,
        "per_seed": [
            {"seed": r["seed"], "succeeded": seed_succeeded(r, policy), **_skill_evidence(r)}
            for r in runs
        ],
    }
    passed = s.successes >= s.required
    failed = [str(r["seed"]) for r in runs if not seed_succeeded(r, policy)]
    skills = ", ".join(f"seed {r['seed']} {_fmt_skill(r)}" for r in runs)
    reason = (
        f"{s.successes}/{s.trials} seeds reached held-out skill >= {policy['min_skill']} over "
        f"the best trivial baseline (need {s.required}; {skills}); exact 95% CI "
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


def _fmt_skill(run: Run) -> str:
    skill = skill_of(run)
    if skill is None:
        return "not measured"
    horizons = run["probes"]["skill"].get("horizons", {})
    baselines = sorted({str(f.get("baseline")) for f in horizons.values()})
    return f"{skill:.3f}" + (f" vs {'/'.join(baselines)}" if baselines else "")


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
    """Two runs of the same seed. On a CPU they must train bit-identically: the weights'
    digests are compared (tolerance 0). On an accelerator, whose kernels need not be
    deterministic, the held-out metrics may differ by ``repeat_tolerance_accelerator``."""
    name, group = "reproducibility.repeatability", "reproducibility"
    if not repeats or len(repeats) < 2:
        return skipped(name, group, "no same-seed re-runs were made", 0.0)
    first, second = repeats[0], repeats[1]
    if first["status"] != "ok" or second["status"] != "ok":
        message = (first["failure"] or second["failure"] or {}).get("message", "")
        return failed(
            name,
            group,
            f"a same-seed re-run failed: {message}",
            0.0,
            {"runs": [first.get("failure"), second.get("failure")]},
        )
    evidence: dict[str, Any] = {
        "seed": first["seed"],
        "steps": first["steps"],
        "devices": [first.get("device"), second.get("device")],
        "weights_digests": [first.get("weights_digest"), second.get("weights_digest")],
    }
    if all(str(r.get("device", "cpu")).startswith("cpu") for r in (first, second)):
        digests = evidence["weights_digests"]
        if None in digests:
            return failed(name, group, "a re-run recorded no weights digest", 0.0, evidence)
        return measured(
            name,
            group,
            float(digests[0] != digests[1]),
            0.0,
            "==",
            evidence,
            f"weights that differ between two CPU runs of seed {first['seed']} (0: identical)",
        )
    threshold = policy["repeat_tolerance_accelerator"]
    keys = sorted(set(first.get("after") or {}) & set(second.get("after") or {}))
    if not keys:
        return failed(name, group, "the two re-runs share no held-out metric", threshold, evidence)
    diffs = {k: _relative_difference(first["after"][k], second["after"][k]) for k in keys}
    worst = max(diffs, key=lambda k: diffs[k])
    evidence["relative_differences"] = diffs
    return measured(
        name,
        group,
        diffs[worst],
        threshold,
        "<=",
        evidence,
        f"largest relative difference between two accelerator runs of seed {first['seed']} "
        f"({worst})",
    )


def stored_weights(runs: list[Run], policy: Policy) -> GateResult:
    """Every finished seed's stored checkpoint was loaded (files verified by sha256) and
    re-measured; its weights digest, held-out metrics and skill must agree with what the
    training step reported, within ``stored_tolerance`` (relative; 0 for the digest)."""
    name, group, tolerance = (
        "reproducibility.stored_weights",
        "reproducibility",
        policy["stored_tolerance"],
    )
    finished = [r for r in ok_runs(runs) if r.get("checkpoint")]
    if not finished:
        return skipped(name, group, "no seed left a checkpoint to re-measure", tolerance)
    problems, per_seed, worst = [], [], 0.0
    for r in finished:
        stored = r.get("stored")
        if not stored or "error" in stored:
            why = (stored or {}).get("error", "the stored weights were not re-measured")
            problems.append(f"seed {r['seed']}: {why}")
            continue
        if stored.get("weights_digest") != r.get("weights_digest"):
            problems.append(
                f"seed {r['seed']}: stored weights digest {str(stored.get('weights_digest'))[:12]}"
                f" != trained {str(r.get('weights_digest'))[:12]}"
            )
        claimed = {**(r.get("after") or {}), "skill": skill_of(r)}
        measured_now = {**(stored.get("after") or {}), "skill": stored.get("skill")}
        for key, value in claimed.items():
            diff = _relative_difference(value, measured_now.get(key))
            worst = max(worst, diff)
            if diff > tolerance:
                problems.append(
                    f"seed {r['seed']}: {key} re-measured {measured_now.get(key)} but the "
                    f"training step reported {value}"
                )
        per_seed.append({"seed": r["seed"], "skill": stored.get("skill")})
    evidence = {"per_seed": per_seed, "problems": problems}
    if problems:
        # A value only when a re-measured number missed the tolerance: a failure for another
        # reason (no re-measurement, another weights digest) has no number that fails.
        value = worst if math.isfinite(worst) and worst > tolerance else None
        return GateResult(
            name, group, "fail", value, tolerance, "<=",
            "the stored weights disagree with the training step (fails closed): "
            + "; ".join(problems),
            evidence,
        )  # fmt: skip
    return measured(
        name,
        group,
        worst,
        tolerance,
        "<=",
        evidence,
        "largest relative difference between the stored weights' re-measured held-out metrics "
        "and the training step's",
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
    """The held-out gate metric, on the same fixed batches, fell by ``trend_drop`` from the
    initial weights to the end of training in enough seeds (seed document 004's loss-trend
    gate; measured on held-out batches, not on noisy random training batches)."""
    name, threshold = "benchmark.loss_trend", policy["trend_drop"]
    drops = [(r["seed"], r["drop"]) for r in ok_runs(runs) if r.get("drop") is not None]
    if not drops:
        return skipped(
            name, "benchmark", "no run finished with a finite held-out metric", threshold
        )
    meeting = sum(d >= threshold for _, d in drops)
    required = required_successes(len(drops), policy["success_rate"])
    worst = min(d for _, d in drops)
    # The value judged: the required-th largest drop, which meets the threshold exactly when
    # enough runs do (the smallest drop may miss it in a passing gate).
    decisive = sorted((d for _, d in drops), reverse=True)[max(required, 1) - 1]
    evidence = {
        "required": required,
        "per_seed": [{"seed": s, "drop": d} for s, d in drops],
    }
    passed = decisive >= threshold
    reason = (
        f"{meeting}/{len(drops)} runs lowered the held-out {runs[0].get('gate_metric')} by >= "
        f"{threshold:.0%} (need {required}; value: the {max(required, 1)} largest drops are "
        f"all >= {decisive:.1%}); smallest drop {worst:.1%}"
    )
    return GateResult(
        name, "benchmark", "pass" if passed else "fail", decisive, threshold, ">=", reason,
        evidence,
    )  # fmt: skip
