"""Wall-time estimates for quality-gate sweeps, fitted from a measured ``seed_runs.json``.

A sweep of one family trains ``seeds`` runs of ``steps`` steps, then (when the repeatability
gate is on) two same-seed re-runs of ``repeat_steps`` steps. Training time per step is roughly
constant for a family (fixed batch size and sequence length) and everything else a run does
(setup, evaluations, checkpoint, probes) costs roughly the same whatever the number of steps, so
one family's sweep costs::

    seeds x (steps x seconds_per_step + overhead) + 2 x (repeat_steps x seconds_per_step
                                                         + repeat_overhead)

The band (low, high) is the same formula at the fastest and slowest per-step rate seen in any
one measured run: it shows how much the machine's speed varied, not a confidence interval.

    costs = fit_cost_model(json.loads(Path("reports/quality-gates/seed_runs.json").read_text()))
    print(format_table([estimate(costs, parse_scenario(s)) for s in ("5x5000", "10x20000")]))

See docs/quality-runtime.md. Deliberately free of torch and worldflux imports: it reads JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REPEAT_RUNS",
    "SEED_RUNS_VERSION",
    "CostModelError",
    "Estimate",
    "FamilyCost",
    "FamilyEstimate",
    "Scenario",
    "estimate",
    "fit_cost_model",
    "format_costs",
    "format_table",
    "parse_scenario",
    "parse_scenarios",
]

# Same value as quality.sweep.SEED_RUNS_VERSION; not imported from there because that module
# imports worldflux (and so torch), which an estimate from a JSON file does not need.
SEED_RUNS_VERSION = 1
# quality.sweep.planned_runs re-runs the first seed twice for the repeatability gate.
REPEAT_RUNS = 2


class CostModelError(ValueError):
    """The seed-runs document cannot support a cost fit (malformed, or a family never ran)."""


@dataclass(frozen=True)
class Scenario:
    """A sweep size: ``seeds`` seed runs of ``steps`` training steps each, per family."""

    seeds: int
    steps: int

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.steps < 1:
            raise ValueError(f"a scenario needs seeds >= 1 and steps >= 1, got {self.label}")

    @property
    def label(self) -> str:
        return f"{self.seeds}x{self.steps}"

    def __str__(self) -> str:
        return self.label


def _positive_int(part: str, what: str, text: str) -> int:
    part = part.strip()
    if not part:
        raise ValueError(f"scenario {text!r}: {what} is missing; expected SEEDSxSTEPS, e.g. 5x5000")
    # isdecimal + isascii rejects "-1", "+5", "1_000" and non-ASCII digits, which int() accepts.
    if not (part.isascii() and part.isdecimal()):
        raise ValueError(
            f"scenario {text!r}: {what} must be a positive integer, got {part!r}; "
            "expected SEEDSxSTEPS, e.g. 5x5000"
        )
    value = int(part)
    if value < 1:
        raise ValueError(f"scenario {text!r}: {what} must be at least 1, got {value}")
    return value


def parse_scenario(text: str) -> Scenario:
    """``"5x5000"`` (also ``"5X5000"``, ``" 5 x 5000 "``) -> ``Scenario(seeds=5, steps=5000)``."""
    seeds, sep, steps = text.strip().lower().partition("x")
    if not sep:
        raise ValueError(f"scenario {text!r} must look like SEEDSxSTEPS, e.g. 5x5000")
    if "x" in steps:
        raise ValueError(f"scenario {text!r} has more than one 'x'; expected SEEDSxSTEPS")
    return Scenario(_positive_int(seeds, "seeds", text), _positive_int(steps, "steps", text))


def parse_scenarios(text: str) -> tuple[Scenario, ...]:
    """A comma-separated list of scenarios, duplicates dropped, order kept."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("no scenario given; expected e.g. 5x5000,7x10000")
    return tuple(dict.fromkeys(parse_scenario(p) for p in parts))


@dataclass(frozen=True)
class FamilyCost:
    """What one family's runs cost on the machine that measured them."""

    family: str
    seconds_per_step: float  # total train_seconds / total steps_completed over completed runs
    seconds_per_step_min: float  # fastest single completed run
    seconds_per_step_max: float  # slowest single completed run
    overhead_seconds: float  # per seed run: setup, evaluations, checkpoint, probes
    repeat_overhead_seconds: float  # per repeat run: no checkpoint, no probes
    repeat_steps: int  # steps of each of the REPEAT_RUNS re-runs; 0: no repeatability runs
    runs_fitted: int  # completed (status "ok") runs, seed and repeat, the fit rests on
    steps_fitted: int  # training steps those runs completed
    runs_failed: int  # failed runs: excluded from the fit, counted so a reader can judge it

    def repeat_cost_seconds(self, seconds_per_step: float | None = None) -> float:
        """The repeatability runs of one sweep (they do not depend on the scenario)."""
        if self.repeat_steps <= 0:
            return 0.0
        rate = self.seconds_per_step if seconds_per_step is None else seconds_per_step
        return REPEAT_RUNS * (self.repeat_steps * rate + self.repeat_overhead_seconds)

    def sweep_seconds(self, scenario: Scenario, seconds_per_step: float | None = None) -> float:
        """One family's whole sweep: its seed runs plus its repeatability runs."""
        rate = self.seconds_per_step if seconds_per_step is None else seconds_per_step
        seed_runs = scenario.seeds * (scenario.steps * rate + self.overhead_seconds)
        return seed_runs + self.repeat_cost_seconds(rate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "seconds_per_step": self.seconds_per_step,
            "seconds_per_step_min": self.seconds_per_step_min,
            "seconds_per_step_max": self.seconds_per_step_max,
            "overhead_seconds": self.overhead_seconds,
            "repeat_overhead_seconds": self.repeat_overhead_seconds,
            "repeat_steps": self.repeat_steps,
            "repeat_cost_seconds": self.repeat_cost_seconds(),
            "runs_fitted": self.runs_fitted,
            "steps_fitted": self.steps_fitted,
            "runs_failed": self.runs_failed,
        }


def _number(run: Mapping[str, Any], index: int, *keys: str) -> float:
    value: Any = run
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    # bool is an int subclass: a True here is a corrupt record, not 1 second.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        where = f"run {index} ({run.get('kind')} {run.get('family')} seed {run.get('seed')})"
        raise CostModelError(f"{where} has no finite {'.'.join(keys)}: {value!r}")
    return float(value)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _repeat_steps(config: Mapping[str, Any], repeat_runs: Sequence[Mapping[str, Any]]) -> int:
    value = config.get("repeat_steps")
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, 0)
    # measure_quality_gates.py writes null when --repeat-steps is left to the policy's value;
    # the repeat runs it recorded then carry the steps that were actually used.
    steps = [r.get("steps") for r in repeat_runs]
    known = [s for s in steps if isinstance(s, int) and not isinstance(s, bool) and s > 0]
    return known[-1] if known else 0


def _families_in(document: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The configured families first (sweep order), then any other family the runs hold."""
    config = document.get("config")
    models = config.get("models") if isinstance(config, Mapping) else None
    names = [m for m in models if isinstance(m, str)] if isinstance(models, list) else []
    names += [r["family"] for r in runs if isinstance(r.get("family"), str)]
    return list(dict.fromkeys(names))


def fit_cost_model(
    seed_runs: Mapping[str, Any], families: Iterable[str] | None = None
) -> dict[str, FamilyCost]:
    """Per family (``families``, or every family in the document), the cost of its runs.

    Failed runs are left out of the fit, as their timings stop at the failure, but counted. A
    family with no completed run, or no completed seed run (whose overhead includes the
    checkpoint and probes that repeat runs skip), raises ``CostModelError``.
    """
    if not isinstance(seed_runs, Mapping):
        raise CostModelError("a seed-runs document is a JSON object")
    if seed_runs.get("schema_version") != SEED_RUNS_VERSION:
        raise CostModelError(
            f"not a seed-runs document: schema_version is {seed_runs.get('schema_version')!r}, "
            f"expected {SEED_RUNS_VERSION}"
        )
    runs = seed_runs.get("runs")
    if not isinstance(runs, list) or not all(isinstance(r, Mapping) for r in runs):
        raise CostModelError("not a seed-runs document: 'runs' is not a list of objects")
    config = seed_runs.get("config")
    config = config if isinstance(config, Mapping) else {}
    wanted = _families_in(seed_runs, runs) if families is None else list(dict.fromkeys(families))
    if not wanted:
        raise CostModelError("the seed-runs document holds no run and names no family")

    costs: dict[str, FamilyCost] = {}
    for family in wanted:
        mine = [
            (i, r)
            for i, r in enumerate(runs)
            if r.get("family") == family and r.get("kind") in ("seed", "repeat")
        ]
        ok = [(i, r) for i, r in mine if r.get("status") == "ok"]
        failed = len(mine) - len(ok)
        seed_ok = [(i, r) for i, r in ok if r["kind"] == "seed"]
        if not seed_ok:
            what = "no completed run" if not ok else "no completed seed run"
            raise CostModelError(
                f"family {family!r} has {what} to fit a cost on "
                f"({len(ok)} completed, {failed} failed)"
            )
        train = {i: _number(r, i, "timings", "train_seconds") for i, r in ok}
        total = {i: _number(r, i, "timings", "total_seconds") for i, r in ok}
        steps = {i: int(_number(r, i, "steps_completed")) for i, r in ok}
        # A run with 0 completed steps has no rate; its overhead is still a valid observation.
        rates = [train[i] / steps[i] for i, _ in ok if steps[i] > 0]
        steps_fitted = sum(steps.values())
        if steps_fitted <= 0:
            raise CostModelError(f"family {family!r}: its completed runs trained no step")
        # Pooled rather than a mean of per-run rates: long runs measure the rate better than
        # short ones (the 50-step repeat runs), and pooling weights each run by its steps.
        rate = math.fsum(train.values()) / steps_fitted
        overhead = _mean([total[i] - train[i] for i, _ in seed_ok])
        repeat_ok = [i for i, r in ok if r["kind"] == "repeat"]
        # Without a completed repeat run, the seed-run overhead stands in: it also covers a
        # checkpoint and probes, so the repeat cost errs high rather than low.
        repeat_overhead = _mean([total[i] - train[i] for i in repeat_ok]) if repeat_ok else overhead
        costs[family] = FamilyCost(
            family=family,
            seconds_per_step=rate,
            seconds_per_step_min=min(rates),
            seconds_per_step_max=max(rates),
            overhead_seconds=overhead,
            repeat_overhead_seconds=repeat_overhead,
            repeat_steps=_repeat_steps(config, [r for _, r in mine if r["kind"] == "repeat"]),
            runs_fitted=len(ok),
            steps_fitted=steps_fitted,
            runs_failed=failed,
        )
    return costs


@dataclass(frozen=True)
class FamilyEstimate:
    family: str
    seconds: float
    low_seconds: float
    high_seconds: float
    runs: int  # training runs this family's sweep makes (seed runs + repeat runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "seconds": self.seconds,
            "low_seconds": self.low_seconds,
            "high_seconds": self.high_seconds,
            "runs": self.runs,
        }


@dataclass(frozen=True)
class Estimate:
    """A scenario's estimated wall time, per family and in total (families run one after
    another in a sweep, so the total is their sum)."""

    scenario: Scenario
    families: tuple[FamilyEstimate, ...]

    @property
    def seconds(self) -> float:
        return math.fsum(f.seconds for f in self.families)

    @property
    def low_seconds(self) -> float:
        return math.fsum(f.low_seconds for f in self.families)

    @property
    def high_seconds(self) -> float:
        return math.fsum(f.high_seconds for f in self.families)

    @property
    def runs(self) -> int:
        return sum(f.runs for f in self.families)

    def family(self, name: str) -> FamilyEstimate:
        for f in self.families:
            if f.family == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.label,
            "seeds": self.scenario.seeds,
            "steps": self.scenario.steps,
            "runs": self.runs,
            "seconds": self.seconds,
            "low_seconds": self.low_seconds,
            "high_seconds": self.high_seconds,
            "families": {f.family: f.to_dict() for f in self.families},
        }


def estimate(
    costs: Mapping[str, FamilyCost], scenario: Scenario, families: Iterable[str] | None = None
) -> Estimate:
    """The scenario's wall time for ``families`` (default: every family in ``costs``)."""
    names = list(dict.fromkeys(families)) if families is not None else list(costs)
    missing = [n for n in names if n not in costs]
    if missing:
        raise CostModelError(
            f"no fitted cost for {', '.join(missing)}; fitted: {', '.join(costs) or 'none'}"
        )
    rows = []
    for name in names:
        cost = costs[name]
        repeat_runs = REPEAT_RUNS if cost.repeat_steps > 0 else 0
        rows.append(
            FamilyEstimate(
                family=name,
                seconds=cost.sweep_seconds(scenario),
                low_seconds=cost.sweep_seconds(scenario, cost.seconds_per_step_min),
                high_seconds=cost.sweep_seconds(scenario, cost.seconds_per_step_max),
                runs=scenario.seeds + repeat_runs,
            )
        )
    return Estimate(scenario, tuple(rows))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Fixed width: the first column left-aligned (labels), the others right-aligned (numbers)."""
    widths = [max(len(r[c]) for r in (header, *rows)) for c in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def format_table(estimates: Sequence[Estimate]) -> str:
    """One row per scenario: minutes per family, the total (minutes and hours) and its band."""
    if not estimates:
        return "(no scenario)"
    families = [f.family for f in estimates[0].families]
    if any([f.family for f in e.families] != families for e in estimates):
        raise ValueError("every estimate in one table must cover the same families")
    header = ["scenario", "runs", *(f"{f} min" for f in families)]
    header += ["total min", "total h", "low-high min"]
    rows = [
        [
            e.scenario.label,
            str(e.runs),
            *(f"{f.seconds / 60:.1f}" for f in e.families),
            f"{e.seconds / 60:.1f}",
            f"{e.seconds / 3600:.2f}",
            f"{e.low_seconds / 60:.1f}-{e.high_seconds / 60:.1f}",
        ]
        for e in estimates
    ]
    return _table(header, rows)


def format_costs(costs: Mapping[str, FamilyCost]) -> str:
    """The fit behind the estimates, one row per family, so a reader can judge it."""
    header = [
        "family",
        "ms/step",
        "ms/step min-max",
        "overhead s/run",
        "repeat s",
        "runs ok",
        "steps",
        "failed",
    ]
    rows = [
        [
            c.family,
            f"{c.seconds_per_step * 1e3:.2f}",
            f"{c.seconds_per_step_min * 1e3:.2f}-{c.seconds_per_step_max * 1e3:.2f}",
            f"{c.overhead_seconds:.1f}",
            f"{c.repeat_cost_seconds():.1f}",
            str(c.runs_fitted),
            str(c.steps_fitted),
            str(c.runs_failed),
        ]
        for c in costs.values()
    ]
    return _table(header, rows)
