"""Sweeps: every seed of a family, the same-seed re-runs, then the gate report.

The seed-runs document (``seed_runs.json``) is the sweep's state: it is rewritten after every
run, so an interrupted sweep resumes (``--append``) by skipping the runs it already holds. A sweep
trains every family on its policy's bundled data set, or on one data set given to it (``data``).
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
from quality.seed_run import SeedRunSpec, run_seed, split, with_stored_measurements
from worldflux import ConfigError, WorldFluxError, WorldModel
from worldflux.data import TrajectoryDataset, load_bundled

SEED_RUNS_VERSION = 1

RunKey = tuple[str, str, int, int, str]


@dataclass(frozen=True)
class SweepConfig:
    families: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int | None  # None: each family's policy (training.steps)
    device: str = "cpu"
    repeat_steps: int | None = None  # None: the policy's; 0: no repeatability runs
    threads: int | None = None


def run_key(record: dict[str, Any]) -> RunKey:
    """What makes two runs the same run: a resumed sweep skips a planned run only when a saved
    run has its key, so runs on different data sets are never mixed up."""
    return (record["kind"], record["family"], record["seed"], record["steps"], record["dataset"])


def planned_runs(
    config: SweepConfig, policies: dict[str, Policy], data: TrajectoryDataset | None = None
) -> list[SeedRunSpec]:
    """Every run of the sweep in order: per family, its seeds, then two re-runs of the
    first seed (the repeatability gate compares them). With ``data`` every run trains on it
    instead of the policy's bundled data set."""
    changes: dict[str, Any] = {"device": config.device}
    if data is not None:
        changes["dataset"] = data.name
    specs = []
    for family in config.families:
        policy = policies[family]
        steps = int(policy.training["steps"]) if config.steps is None else config.steps
        for seed in config.seeds:
            specs.append(SeedRunSpec.from_policy(policy, seed, steps, **changes))
        repeat = (
            policy.training["repeat_steps"] if config.repeat_steps is None else config.repeat_steps
        )
        if repeat > 0:
            for _ in range(2):
                specs.append(
                    SeedRunSpec.from_policy(
                        policy, config.seeds[0], repeat, kind="repeat", **changes
                    )
                )
    return specs


def check_data_fits(data: TrajectoryDataset, policies: dict[str, Policy]) -> None:
    """Raise ConfigError (one line) unless every family can train on ``data``: a model of the
    policy's preset must build for its spec (observation shape, actions), and the held-out split
    must leave both sides a window of the policy's ``seq_len`` rows."""
    try:
        train, held_out = split(data)
    except WorldFluxError as err:
        raise ConfigError(f"data set {data.name!r} cannot be split for training: {err}") from None
    for family, policy in policies.items():
        spec = SeedRunSpec.from_policy(policy, 0, 1, dataset=data.name)
        model_id = f"{worldflux.canonical_family(family)}:{spec.preset}"
        try:
            worldflux.create_world_model_for(model_id, data.spec, **spec.overrides)
            for part in (train, held_out):
                part.valid_starts(spec.seq_len)
        except (WorldFluxError, ValueError) as err:
            kind = "discrete" if data.spec.discrete else "continuous"
            raise ConfigError(
                f"data set {data.name!r} (obs_shape {data.spec.obs_shape}, {kind} actions of "
                f"dim {data.spec.action_dim}) does not fit {family}: {err}"
            ) from None


def execute(
    config: SweepConfig,
    *,
    existing: Iterable[dict[str, Any]] = (),
    checkpoint_root: Path | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[SeedRunSpec, int, int], None] | None = None,
    data: TrajectoryDataset | None = None,
) -> list[dict[str, Any]]:
    """Run what ``existing`` does not hold yet; return all records (existing first).

    With ``data`` every run (the seeds and the re-runs) trains on it instead of the policy's
    bundled data set, and its name is each run's ``dataset``."""
    policies = {f: load_policy(f) for f in config.families}
    records = list(existing)
    done: dict[RunKey, int] = {}
    for r in records:
        done[run_key(r)] = done.get(run_key(r), 0) + 1
    specs = planned_runs(config, policies, data)
    for index, spec in enumerate(specs):
        key = (spec.kind, spec.family, spec.seed, spec.steps, spec.dataset)
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
            data=data,
        )
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records


def repeat_runs(
    policy: Policy,
    seed: int,
    *,
    data: TrajectoryDataset | None = None,
    device: str = "cpu",
    model_factory: Callable[[SeedRunSpec, TrajectoryDataset], WorldModel] | None = None,
) -> list[dict[str, Any]]:
    """The two same-seed re-runs the repeatability gate compares (none when the policy's
    ``repeat_steps`` is 0)."""
    steps = int(policy.training["repeat_steps"])
    if steps <= 0:
        return []
    changes: dict[str, Any] = {} if data is None else {"dataset": data.name}
    spec = SeedRunSpec.from_policy(policy, seed, steps, device=device, kind="repeat", **changes)
    return [
        run_seed(spec, policy, with_probes=False, data=data, model_factory=model_factory)
        for _ in range(2)
    ]


def family_report(
    family: str,
    records: list[dict[str, Any]],
    steps: int | None = None,
    *,
    data: TrajectoryDataset | None = None,
) -> dict[str, Any]:
    """Evaluate the gates over a family's seed records (of ``steps`` steps when given) on one
    data set: ``data`` when given (it need not be bundled), else the policy's bundled data set.
    Records of other data sets are left out. Every seed's saved checkpoint is loaded and
    re-measured first (``measure_stored``): the gates judge the stored weights."""
    policy = load_policy(family)
    dataset = policy.training["dataset"] if data is None else data.name

    def ours(record: dict[str, Any], kind: str) -> bool:
        return (
            record["kind"] == kind
            and record["family"] == family
            and record.get("dataset") == dataset
        )

    runs = [r for r in records if ours(r, "seed") and (steps is None or r["steps"] == steps)]
    repeats = [r for r in records if ours(r, "repeat")][-2:]
    if data is None and runs:
        data = load_bundled(dataset)
    obs_shape = data.spec.obs_shape if data is not None else ()
    if data is not None:  # the gates judge the stored weights, re-measured here
        runs = with_stored_measurements(runs, policy, data)
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
