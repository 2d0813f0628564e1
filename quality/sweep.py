"""Sweeps: every seed of a family, the same-seed re-runs, then the gate report.

The seed-runs document (``seed_runs.json``) is the sweep's state: it is rewritten after every
run, so an interrupted sweep resumes (``--append``) by skipping the runs it already holds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import worldflux
from quality.evaluate import build_report, evaluate_gates
from quality.policy import Policy, load_policy
from quality.seed_run import SeedRunSpec, run_seed
from worldflux.data import TrajectoryDataset, load_bundled

SEED_RUNS_VERSION = 1


@dataclass(frozen=True)
class SweepConfig:
    families: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    device: str = "cpu"
    repeat_steps: int | None = None  # None: the policy's; 0: no repeatability runs
    threads: int | None = None


def run_key(record: dict[str, Any]) -> tuple[str, str, int, int]:
    return (record["kind"], record["family"], record["seed"], record["steps"])


def planned_runs(config: SweepConfig, policies: dict[str, Policy]) -> list[SeedRunSpec]:
    """Every run of the sweep in order: per family, its seeds, then two re-runs of the
    first seed (the repeatability gate compares them)."""
    specs = []
    for family in config.families:
        policy = policies[family]
        for seed in config.seeds:
            specs.append(SeedRunSpec.from_policy(policy, seed, config.steps, device=config.device))
        repeat = (
            policy.training["repeat_steps"] if config.repeat_steps is None else config.repeat_steps
        )
        if repeat > 0:
            for _ in range(2):
                specs.append(
                    SeedRunSpec.from_policy(
                        policy, config.seeds[0], repeat, device=config.device, kind="repeat"
                    )
                )
    return specs


def execute(
    config: SweepConfig,
    *,
    existing: Iterable[dict[str, Any]] = (),
    checkpoint_root: Path | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[SeedRunSpec, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run what ``existing`` does not hold yet; return all records (existing first)."""
    policies = {f: load_policy(f) for f in config.families}
    records = list(existing)
    done: dict[tuple[str, str, int, int], int] = {}
    for r in records:
        done[run_key(r)] = done.get(run_key(r), 0) + 1
    specs = planned_runs(config, policies)
    for index, spec in enumerate(specs):
        key = (spec.kind, spec.family, spec.seed, spec.steps)
        if done.get(key, 0) > 0:
            done[key] -= 1
            continue
        if on_start is not None:
            on_start(spec, index, len(specs))
        record = run_seed(
            spec,
            policies[spec.family],
            checkpoint_root=checkpoint_root if spec.kind == "seed" else None,
            with_probes=spec.kind == "seed",
        )
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records


def repeat_runs(
    policy: Policy, seed: int, *, data: TrajectoryDataset | None = None, device: str = "cpu"
) -> list[dict[str, Any]]:
    """The two same-seed re-runs the repeatability gate compares (none when the policy's
    ``repeat_steps`` is 0)."""
    steps = int(policy.training["repeat_steps"])
    if steps <= 0:
        return []
    spec = SeedRunSpec.from_policy(policy, seed, steps, device=device, kind="repeat")
    return [run_seed(spec, policy, with_probes=False, data=data) for _ in range(2)]


def family_report(
    family: str, records: list[dict[str, Any]], steps: int | None = None
) -> dict[str, Any]:
    """Evaluate the gates over a family's seed records (of ``steps`` steps when given)."""
    policy = load_policy(family)
    runs = [
        r
        for r in records
        if r["kind"] == "seed" and r["family"] == family and (steps is None or r["steps"] == steps)
    ]
    repeats = [r for r in records if r["kind"] == "repeat" and r["family"] == family][-2:]
    obs_shape = load_bundled(runs[0]["dataset"]).spec.obs_shape if runs else ()
    gates = evaluate_gates(runs, policy, repeats=repeats, obs_shape=obs_shape)
    return build_report(runs, policy, gates, repeats=repeats)


def resolve_families(names: Iterable[str]) -> tuple[str, ...]:
    """Canonical family names (``dreamer`` -> ``dreamerv3``), without duplicates."""
    out: list[str] = []
    for name in names:
        family = worldflux.canonical_family(name.strip())
        if family not in out:
            out.append(family)
    return tuple(out)


def load_seed_runs(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("schema_version") != SEED_RUNS_VERSION or not isinstance(data.get("runs"), list):
        raise ValueError(f"{path} is not a seed-runs document (schema_version {SEED_RUNS_VERSION})")
    return data


def save_seed_runs(path: Path, document: dict[str, Any]) -> None:
    """Atomic rewrite, so an interruption never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)
