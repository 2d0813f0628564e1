"""The one registry of release gates: each gate declared once, in report order, with its group,
what it checks, which family kinds it concerns and how it decides.

Evaluation (``quality.evaluate``), the report check (``quality.report.validate_report``), the
Dagster check specs (``assets/gate_report.py``) and the gate table in docs/quality-gates.md all
read this list; adding a gate means adding one ``GateSpec`` here (plus its test).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quality.gates import common, family, measurements
from quality.gates.result import GateResult, failed
from quality.policy import Policy, PolicyError

Run = dict[str, Any]
LEARNING_KINDS = frozenset({"reference", "token", "diffusion", "jepa", "vjepa2"})
JOINT_EMBEDDING = frozenset({"jepa", "vjepa2"})
FINITE_GATES = {  # kind -> (finiteness gate suffix, diagnostics that must be exposed)
    "reference": ("finite_components", ()),
    "token": ("finite_logits", ("logits",)),
    "diffusion": ("finite_scheduler_states", ("scheduler",)),
    "jepa": ("finite_projections", ("context", "target")),
    "vjepa2": ("finite_projections_and_masks", ("context", "target", "mask")),
}


@dataclass(frozen=True)
class Evidence:
    """What the gates of one family evaluation see."""

    family: str
    kind: str | None
    runs: list[Run]
    repeats: list[Run] | None
    policy: Policy
    obs_shape: tuple[int, ...]


Thresholds = Callable[[Policy, str], set[float]]


def keys(*names: str, fixed: tuple[float, ...] = ()) -> Thresholds:
    """The thresholds a gate may report: these policy values (and constants)."""
    return lambda policy, _name: {float(policy[n]) for n in names} | set(fixed)


def fixed(*values: float) -> Thresholds:
    return keys(fixed=values)


def _horizon_threshold(policy: Policy, name: str) -> set[float]:
    horizon = name.rsplit("_", 1)[-1]
    return {float(policy["min_skill_at"][horizon])} if horizon in policy["min_skill_at"] else set()


def _frame_gate(metric: str, e: Evidence) -> list[GateResult]:
    return measurements.frame_quality(metric, e.runs, e.policy, e.obs_shape)


def _frame_thresholds(at: str, gain: str) -> Thresholds:
    """A frame gate reports its horizon's minimum, or the margin over persistence."""

    def thresholds(policy: Policy, name: str) -> set[float]:
        horizon = name.rsplit("_", 1)[-1]
        minimum = policy[at]
        return {float(policy[gain])} | ({float(minimum[horizon])} if horizon in minimum else set())

    return thresholds


@dataclass(frozen=True)
class GateSpec:
    """``name`` may hold ``{k}``: one gate per key of the policy threshold ``per_key`` (the
    open-loop horizons). ``kinds``: the family kinds the gate concerns (None: every family).
    ``thresholds``: the thresholds the gate may report, from the policy (so a report whose
    threshold was edited is refused); None where the threshold is structural (a run count)."""

    name: str
    group: str
    description: str
    decide: Callable[[Evidence], GateResult | list[GateResult]]
    thresholds: Thresholds | None
    kinds: frozenset[str] | None = None
    per_key: str | None = None

    def applies(self, kind: str | None) -> bool:
        return self.kinds is None or kind in self.kinds

    def names(self, policy: Policy) -> list[str]:
        if self.per_key is None:
            return [self.name]
        return [self.name.format(k=k) for k in sorted(policy[self.per_key], key=int)]


def _finite(e: Evidence) -> GateResult:
    suffix, required = FINITE_GATES[str(e.kind)]
    return family.finite(f"family.{e.kind}.{suffix}", e.runs, required)


GATES: tuple[GateSpec, ...] = (
    GateSpec(
        "common.finite_runs", "common", "every seed's run finished without divergence or error",
        lambda e: common.finite_runs(e.runs),
        thresholds=fixed(0),
    ),
    GateSpec(
        "common.seed_success_rate", "common",
        "at least ceil(success_rate x n) seeds reach held-out skill >= min_skill over the best "
        "trivial baseline (mean or persistence)",
        lambda e: common.seed_success_rate(e.runs, e.policy),
        thresholds=keys("success_rate"),
    ),
    GateSpec(
        "reproducibility.seed_stability", "reproducibility",
        "coefficient of variation of the final held-out metric across seeds <= seed_cv_max",
        lambda e: common.seed_stability(e.runs, e.policy),
        thresholds=keys("seed_cv_max"),
    ),
    GateSpec(
        "reproducibility.repeatability", "reproducibility",
        "two runs of the same seed train bit-identical weights on a CPU",
        lambda e: common.repeatability(e.repeats, e.policy),
        thresholds=keys("repeat_tolerance_accelerator", fixed=(0,)),
    ),
    GateSpec(
        "reproducibility.stored_weights", "reproducibility",
        "each stored checkpoint, reloaded and re-measured, agrees with what its training step "
        "reported",
        lambda e: common.stored_weights(e.runs, e.policy),
        thresholds=keys("stored_tolerance"),
    ),
    GateSpec(
        "reproducibility.save_load_parity", "reproducibility",
        "every output of a reloaded checkpoint equals the in-memory model's",
        lambda e: common.save_load_parity(e.runs, e.policy),
        thresholds=keys("parity_max_abs"),
    ),
    GateSpec(
        "benchmark.numerical_stability", "benchmark",
        "no NaN/Inf in losses, gradients or outputs",
        lambda e: common.numerical_stability(e.runs),
        thresholds=fixed(0),
    ),
    GateSpec(
        "benchmark.loss_trend", "benchmark",
        "the held-out metric fell by >= trend_drop from the initial weights",
        lambda e: common.loss_trend(e.runs, e.policy),
        thresholds=keys("trend_drop"),
    ),
    GateSpec(
        "resource.peak_memory", "resource", "peak memory <= peak_memory_fraction of the device",
        lambda e: measurements.peak_memory(e.runs, e.policy),
        thresholds=keys("peak_memory_fraction"),
    ),
    GateSpec(
        "resource.throughput", "resource", "training samples/s >= min_samples_per_second",
        lambda e: measurements.throughput(e.runs, e.policy),
        thresholds=keys("min_samples_per_second"),
    ),
    GateSpec(
        "resource.rollout_latency", "resource", "p50/p95 wall time of one imagined rollout",
        lambda e: measurements.rollout_latency(e.runs, e.policy),
        thresholds=keys("rollout_latency_p50_ms", "rollout_latency_p95_ms"),
    ),
    GateSpec(
        "prediction.open_loop_skill_{k}", "prediction",
        "open-loop skill k steps ahead >= min_skill_at[k] for every succeeded seed",
        lambda e: measurements.open_loop_skill(e.runs, e.policy),
        per_key="min_skill_at",
        thresholds=_horizon_threshold,
    ),
    GateSpec(
        "prediction.output_spread", "prediction",
        "imagined observations vary across segments (spread ratio >= min_spread_ratio): no "
        "collapse to a constant",
        lambda e: measurements.output_spread(e.runs, e.policy),
        thresholds=keys("min_spread_ratio"),
    ),
    *(
        GateSpec(
            f"prediction.{metric}_{{k}}", "prediction",
            f"{metric.upper()} of frames predicted k steps ahead >= {at}[k] for every succeeded "
            f"seed, and >= persistence's (the last frame) + {gain}",
            functools.partial(_frame_gate, metric),
            per_key=at,
            thresholds=_frame_thresholds(at, gain),
        )
        for metric, (at, gain, _) in measurements.FRAME_METRICS.items()
    ),
    GateSpec(
        "prediction.temporal_consistency", "prediction",
        "imagined frames change from one to the next at most (1 + temporal_change_margin) x "
        "the largest change between real consecutive frames",
        lambda e: measurements.temporal_consistency(e.runs, e.policy, e.obs_shape),
        thresholds=keys("temporal_change_margin"),
    ),
    GateSpec(
        "prediction.plausibility", "prediction",
        "imagined values stay inside the data's range widened by plausibility_margin",
        lambda e: measurements.plausibility(e.runs, e.policy),
        thresholds=keys("plausibility_max_violation"),
    ),
    GateSpec(
        "planner.boundary", "planner",
        "the CEM planner returns an ActionPayload of the policy's horizon",
        lambda e: measurements.planner_boundary(e.runs, e.policy),
        thresholds=keys("planner_horizon", fixed=(0,)),
    ),
    *(
        GateSpec(
            f"family.{kind}.{suffix}", "family",
            "every loss component and output finite; the family's diagnostics exposed",
            _finite, kinds=frozenset({kind}),
        thresholds=fixed(0),
    )
        for kind, (suffix, _) in FINITE_GATES.items()
    ),
    *(
        spec
        for kind in sorted(JOINT_EMBEDDING)
        for spec in (
            GateSpec(
                f"family.{kind}.embedding_spread", "family",
                "held-out embedding spread >= min_embedding_std (no representation collapse)",
                lambda e: family.embedding_spread(f"family.{e.kind}.embedding_spread", e.runs,
                                                  e.policy),
                kinds=frozenset({kind}),
        thresholds=keys("min_embedding_std"),
    ),
            GateSpec(
                f"family.{kind}.beats_no_change", "family",
                "held-out prediction loss below the no-change baseline in every seed",
                lambda e: family.beats_no_change(f"family.{e.kind}.beats_no_change", e.runs),
                kinds=frozenset({kind}),
        thresholds=fixed(1),
    ),
        )
    ),
    GateSpec(
        "family.skeleton.contract_validation", "family",
        "encode/transition/update/decode/rollout/loss hold",
        lambda e: family.skeleton_contract(e.runs), kinds=frozenset({"skeleton"}),
        thresholds=fixed(0),
    ),
    GateSpec(
        "family.skeleton.trainer_one_step_smoke", "family",
        "every run completed at least one trainer step",
        lambda e: family.skeleton_smoke(e.runs), kinds=frozenset({"skeleton"}),
        thresholds=None,
    ),
)  # fmt: skip
UNKNOWN_KIND = "family.unknown"


def spec_for(name: str) -> GateSpec | None:
    """The declaration a gate name comes from (None for ``family.unknown``)."""
    for spec in GATES:
        pattern = re.escape(spec.name).replace(re.escape("{k}"), "[0-9]+")
        if re.fullmatch(pattern, name):
            return spec
    return None


def gates_for(kind: str | None) -> list[GateSpec]:
    return [g for g in GATES if g.applies(kind)]


def expected_names(policy: Policy, kind: str | None) -> list[str]:
    """The names of the gates a family of this kind is judged by, in report order."""
    names = [n for g in gates_for(kind) for n in g.names(policy)]
    return names if known_kind(kind) else [*names, UNKNOWN_KIND]


def known_kind(kind: str | None) -> bool:
    return kind in LEARNING_KINDS or kind == "skeleton"


def evaluate(evidence: Evidence) -> list[GateResult]:
    """Every gate of the family, in report order. A required gate that came out not
    applicable fails: the policy says the family must be judged by it."""
    results: list[GateResult] = []
    for spec in gates_for(evidence.kind):
        decided = spec.decide(evidence)
        results.extend(decided if isinstance(decided, list) else [decided])
    if not known_kind(evidence.kind):
        results.append(
            failed(
                UNKNOWN_KIND,
                "family",
                f"no family gate set for {evidence.family!r} (policy kind {evidence.kind!r}): "
                f'set "kind" in quality/policies/{evidence.family}.json to one of '
                f"{sorted(LEARNING_KINDS)}",
                None,
                {},
            )
        )
    required = set(evidence.policy.required_gates)
    unknown = sorted(required - {r.name for r in results})
    if unknown:  # a requirement no gate of the family can meet would be silently ignored
        raise PolicyError(
            f"the {evidence.family} policy requires gates {unknown}, which are not gates of a "
            f"family of kind {evidence.kind!r}; its gates: {[r.name for r in results]}"
        )
    return [
        failed(
            r.name,
            r.group,
            f"required by the {evidence.family} policy but not applicable: {r.reason}",
            r.threshold,
            r.evidence,
        )
        if r.name in required and r.status == "not_applicable"
        else r
        for r in results
    ]
