"""Family-specific gates, as the seed document 004 lists them.

The gate set is chosen by the family's canonical name (so an alias like ``dreamer`` gets the
DreamerV3 gates) and, for skeletons, by maturity:

- reference (dreamerv3, tdmpc2): loss-drop threshold, finite loss components, seed success
- token: cross-entropy / perplexity trend, finite logits
- diffusion: denoising-error trend, finite scheduler states
- jepa: representation-loss trend, finite context/target projections
- vjepa2: representation-loss trend, finite context/target projections and masks
- skeleton (any family of maturity ``skeleton``): contract validation, one-step trainer smoke
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from quality.gates.common import Run, ok_runs, seed_success_rate
from quality.gates.result import GateResult, Status, measured, skipped
from quality.policy import Policy


@dataclass(frozen=True)
class FamilyKind:
    kind: str
    trend_gate: str  # name of the held-out trend gate
    finite_gate: str  # name of the finiteness gate
    required_diagnostics: tuple[str, ...]  # diagnostics prefixes that must be present


KINDS = {
    "reference": FamilyKind("reference", "loss_drop", "finite_components", ()),
    "token": FamilyKind("token", "cross_entropy_trend", "finite_logits", ("logits",)),
    "diffusion": FamilyKind(
        "diffusion", "denoise_error_trend", "finite_scheduler_states", ("scheduler",)
    ),
    "jepa": FamilyKind(
        "jepa", "representation_loss_trend", "finite_projections", ("context", "target")
    ),
    "vjepa2": FamilyKind(
        "vjepa2",
        "representation_loss_trend",
        "finite_projections_and_masks",
        ("context", "target", "mask"),
    ),
}
FAMILY_KIND = {
    "dreamerv3": "reference",
    "tdmpc2": "reference",
    "token": "token",
    "diffusion": "diffusion",
    "jepa": "jepa",
    "vjepa2": "vjepa2",
}


def kind_of(family: str, maturity: str) -> str | None:
    if maturity == "skeleton":
        return "skeleton"
    return FAMILY_KIND.get(family)


def _held_out_trend(name: str, runs: list[Run], policy: Policy) -> GateResult:
    threshold = policy["success_drop"]
    drops = [(r["seed"], r["drop"]) for r in ok_runs(runs) if r.get("drop") is not None]
    if not drops:
        return skipped(name, "family", "no finite run to measure", threshold)
    mean = statistics.fmean(d for _, d in drops)
    evidence = {"per_seed": [{"seed": s, "drop": d} for s, d in drops]}
    return measured(
        name,
        "family",
        mean,
        threshold,
        ">=",
        evidence,
        f"mean relative drop of the held-out {runs[0].get('gate_metric')}",
    )


def _finite(name: str, runs: list[Run], required: tuple[str, ...]) -> GateResult:
    """Every evaluated loss component and every output (with the family's diagnostics) is
    finite, in every run; the required diagnostics are exposed."""
    problems = []
    for r in runs:
        for phase in ("before", "after"):
            bad = [k for k, v in (r.get(phase) or {}).items() if v is None or not math.isfinite(v)]
            if bad:
                problems.append(f"seed {r['seed']} {phase}: non-finite {bad}")
        failure = r.get("failure") or {}
        if failure.get("kind") == "diverged":
            problems.append(f"seed {r['seed']}: {failure['message']}")
        outputs = r.get("probes", {}).get("outputs")
        if outputs is None:
            continue
        if "error" in outputs:
            problems.append(f"seed {r['seed']}: {outputs['error']}")
            continue
        if outputs["non_finite_outputs"]:
            problems.append(f"seed {r['seed']}: non-finite {outputs['non_finite_outputs']}")
        present = outputs.get("outputs", [])
        for prefix in required:
            if not any(o.startswith(f"diagnostics.{prefix}") for o in present):
                problems.append(f"seed {r['seed']}: the family exposes no '{prefix}' diagnostics")
    status: Status = "fail" if problems else "pass"
    reason = "; ".join(problems) if problems else "all loss components and outputs finite"
    return GateResult(
        name, "family", status, float(len(problems)), 0.0, "==", reason, {"problems": problems}
    )


def _skeleton(runs: list[Run], family: str) -> list[GateResult]:
    contract_problems = [
        f"seed {r['seed']}: {r.get('probes', {}).get('contract', 'no contract evidence')}"
        for r in runs
        if not r.get("probes", {}).get("contract", {}).get("ok", False)
    ]
    smoke = [r for r in runs if r["status"] == "ok" and r.get("steps_completed", 0) >= 1]
    return [
        GateResult(
            "family.skeleton.contract_validation",
            "family",
            "fail" if contract_problems else "pass",
            float(len(contract_problems)),
            0.0,
            "==",
            "; ".join(contract_problems) or "encode/transition/update/decode/rollout/loss hold",
            {"problems": contract_problems},
        ),
        GateResult(
            "family.skeleton.trainer_one_step_smoke",
            "family",
            "pass" if len(smoke) == len(runs) and runs else "fail",
            float(len(smoke)),
            float(len(runs)),
            "==",
            f"{len(smoke)}/{len(runs)} runs completed at least one trainer step",
            {"per_seed": [{"seed": r["seed"], "steps": r.get("steps_completed")} for r in runs]},
        ),
    ]


def family_gates(family: str, maturity: str, runs: list[Run], policy: Policy) -> list[GateResult]:
    kind = kind_of(family, maturity)
    if kind is None:
        return [
            GateResult(
                "family.unknown",
                "family",
                "fail",
                None,
                None,
                "",
                f"no family-specific gate set is defined for {family!r} ({maturity}); add it "
                "to quality/gates/family.py",
            )
        ]
    if kind == "skeleton":
        return _skeleton(runs, family)
    spec = KINDS[kind]
    gates = [
        _held_out_trend(f"family.{kind}.{spec.trend_gate}", runs, policy),
        _finite(f"family.{kind}.{spec.finite_gate}", runs, spec.required_diagnostics),
    ]
    if kind == "reference":
        gates.append(seed_success_rate(runs, policy, name="family.reference.seed_success"))
    return gates
