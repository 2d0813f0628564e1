"""Family-specific gates, as seed document 004 lists them, chosen by the family's *kind*.

A family's kind is declared in its gate policy (``"kind"`` in ``quality/policies/<family>.json``,
so an alias like ``dreamer`` gets the DreamerV3 gates and a new family needs no code change
here); a family of maturity ``skeleton`` is judged as a skeleton whatever its policy says:

- reference (dreamerv3, tdmpc2): finite loss components (learning itself is the common
  seed-success gate, judged by skill)
- token: finite logits; diffusion: finite scheduler states
- jepa, vjepa2: finite context/target projections (and masks), and two collapse gates: the
  embedding spread stays above a floor, and the prediction loss beats the no-change baseline
- skeleton: contract validation, one-step trainer smoke
"""

from __future__ import annotations

import math

from quality.gates.common import Run, ok_runs
from quality.gates.result import GateResult, Status, measured, skipped
from quality.policy import Policy


def kind_of(policy: Policy, maturity: str) -> str | None:
    """The family's gate kind: ``skeleton`` by maturity, else its policy's ``kind``."""
    if maturity == "skeleton":
        return "skeleton"
    return policy.kind


def finite(name: str, runs: list[Run], required: tuple[str, ...]) -> GateResult:
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


def embedding_spread(name: str, runs: list[Run], policy: Policy) -> GateResult:
    """Collapse of a joint-embedding family: the held-out ``embedding_std`` (1 for isotropic
    unit vectors, 0 when every observation maps to one point) stays above a floor."""
    threshold = policy["min_embedding_std"]
    values: list[tuple[int, float]] = [
        (r["seed"], float((r.get("after") or {})["embedding_std"]))
        for r in ok_runs(runs)
        if (r.get("after") or {}).get("embedding_std") is not None
    ]
    if not values:
        return skipped(name, "family", "no finished run reported embedding_std", threshold)
    worst = min(v for _, v in values)
    evidence = {"per_seed": [{"seed": s, "embedding_std": v} for s, v in values]}
    return measured(
        name, "family", worst, threshold, ">=", evidence, "smallest held-out embedding spread"
    )


def beats_no_change(name: str, runs: list[Run]) -> GateResult:
    """The held-out prediction loss is below the family's no-change baseline (predicting that
    the embedding does not move) in every finished seed: a collapsed or idle predictor is not."""
    per_seed = [
        {
            "seed": r["seed"],
            "loss": (r.get("after") or {}).get("world_model_loss"),
            "no_change_baseline": (r.get("after") or {}).get("no_change_baseline"),
        }
        for r in ok_runs(runs)
    ]
    per_seed = [p for p in per_seed if p["loss"] is not None and p["no_change_baseline"]]
    if not per_seed:
        return skipped(name, "family", "no finished run reported the no-change baseline", 1.0)
    worst = max(p["loss"] / p["no_change_baseline"] for p in per_seed)
    return measured(
        name,
        "family",
        worst,
        1.0,
        "<",
        {"per_seed": per_seed},
        "largest held-out loss / no-change baseline",
    )


def skeleton_contract(runs: list[Run]) -> GateResult:
    problems = [
        f"seed {r['seed']}: {r.get('probes', {}).get('contract', 'no contract evidence')}"
        for r in runs
        if not r.get("probes", {}).get("contract", {}).get("ok", False)
    ]
    return GateResult(
        "family.skeleton.contract_validation",
        "family",
        "fail" if problems else "pass",
        float(len(problems)),
        0.0,
        "==",
        "; ".join(problems) or "encode/transition/update/decode/rollout/loss hold",
        {"problems": problems},
    )


def skeleton_smoke(runs: list[Run]) -> GateResult:
    smoke = [r for r in runs if r["status"] == "ok" and r.get("steps_completed", 0) >= 1]
    return GateResult(
        "family.skeleton.trainer_one_step_smoke",
        "family",
        "pass" if len(smoke) == len(runs) and runs else "fail",
        float(len(smoke)),
        float(len(runs)),
        "==",
        f"{len(smoke)}/{len(runs)} runs completed at least one trainer step",
        {"per_seed": [{"seed": r["seed"], "steps": r.get("steps_completed")} for r in runs]},
    )
