"""One seed run: train a family on a data set with one seed and collect the gate evidence.

A run never raises for a model's failure: divergence, a non-finite evaluation or any exception
is recorded with its reason (``status: "failed"``) so that a sweep goes on. The held-out gate
metric is measured before and after training on the same fixed held-out batches. Training time
excludes evaluation, checkpoint I/O and probes.
"""

from __future__ import annotations

import hashlib
import math
import os
import resource
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import worldflux
from quality import probes
from quality.policy import Policy
from quality.skill import prediction_skill
from quality.stats import relative_drop
from worldflux import TrainingDivergedError, WorldModel
from worldflux.data import TrajectoryDataset, load_bundled
from worldflux.training import Callback, Trainer, TrainerConfig, seed_everything
from worldflux.training.checkpoint import weights_sha256

HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0  # every seed is judged on the same held-out episodes


@dataclass(frozen=True)
class SeedRunSpec:
    family: str
    seed: int
    steps: int
    preset: str = "ci"
    dataset: str = "pendulum"
    batch_size: int = 16
    seq_len: int = 16
    lr: float = 1e-3
    lr_schedule: str = "constant"
    lr_floor: float = 0.1
    eval_batches: int = 8
    device: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)
    kind: str = "seed"  # "seed", or "repeat" for the repeatability re-runs

    @classmethod
    def from_policy(cls, policy: Policy, seed: int, steps: int, **changes: Any) -> SeedRunSpec:
        t = policy.training
        values: dict[str, Any] = {
            "family": policy.family,
            "seed": seed,
            "steps": steps,
            "preset": t["preset"],
            "dataset": t["dataset"],
            "batch_size": t["batch_size"],
            "seq_len": t["seq_len"],
            "lr": t["lr"],
            "lr_schedule": t["lr_schedule"],
            "lr_floor": t["lr_floor"],
            "eval_batches": t["eval_batches"],
        }
        values.update(changes)
        return cls(**values)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _clean(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: _finite(v) for k, v in metrics.items()}


def split(data: TrajectoryDataset) -> tuple[TrajectoryDataset, TrajectoryDataset]:
    return data.split(HELD_OUT_FRACTION, seed=SPLIT_SEED)


def _peak_memory_mb(device: torch.device) -> tuple[float, float, str]:
    """(peak, device total, what was measured) in MiB."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**20
        return torch.cuda.max_memory_allocated(device) / 2**20, total, "cuda max allocated"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak, total, "process peak RSS (host memory)"


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (names, dtypes, shapes, bytes): two runs that
    trained bit-identically have the same digest."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        flat = value.reshape(-1)  # 0-dim tensors (counters) cannot be viewed as bytes
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


def _probe(record: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one probe; an exception, or a NaN/Inf in what it measured, is recorded as the
    probe's error (gates fail closed, and the record stays valid JSON)."""
    try:
        result = fn()
        if _non_finite(result):
            raise FloatingPointError(f"the probe measured non-finite values: {result}")
        record["probes"][name] = result
    except Exception as err:  # a probe failure is evidence, not a crash
        record["probes"][name] = {"error": f"{type(err).__name__}: {err}"}


def run_seed(
    spec: SeedRunSpec,
    policy: Policy,
    *,
    checkpoint_root: Path | None = None,
    with_probes: bool = True,
    model_factory: Callable[[SeedRunSpec, TrajectoryDataset], WorldModel] | None = None,
    data: TrajectoryDataset | None = None,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Train one seed and return its JSON-able record (see docs/quality-gates.md).

    ``data`` is the data set to train on when the caller already holds it (the orchestration
    trains on the validated copy in its object store); by default the bundled ``spec.dataset``.
    ``callbacks`` see every training step (live metrics, progress) besides the run's own.
    """
    started = time.perf_counter()
    record: dict[str, Any] = {
        "kind": spec.kind,
        **{k: v for k, v in asdict(spec).items() if k != "kind"},
        "status": "ok",
        "failure": None,
        "steps_completed": 0,
        "gate_metric": None,
        "probes": {},
        "checkpoint": None,
    }
    timings = {k: 0.0 for k in ("setup", "train", "eval", "checkpoint", "probe")}
    try:
        if data is None:
            data = load_bundled(spec.dataset)
        elif data.name != spec.dataset:
            raise ValueError(f"the run asks for data set {spec.dataset!r}, got {data.name!r}")
        record["dataset_digest"] = data.digest
        train, held_out = split(data)
        seed_everything(spec.seed)  # the initial weights depend on the seed too
        model = (model_factory or _create)(spec, data)
        record["family"] = model.family
        record["gate_metric"] = model.gate_metric
        config = TrainerConfig(
            steps=spec.steps,
            batch_size=spec.batch_size,
            seq_len=spec.seq_len,
            lr=spec.lr,
            lr_schedule=spec.lr_schedule,
            lr_floor=spec.lr_floor,
            seed=spec.seed,
            eval_batches=spec.eval_batches,
            device=spec.device,
        )
        trainer = Trainer(model, train, config, eval_data=held_out, callbacks=list(callbacks))
        record["device"] = str(trainer.device)
        timings["setup"] = time.perf_counter() - started

        t0 = time.perf_counter()
        before = trainer.evaluate()
        timings["eval"] += time.perf_counter() - t0
        record["before"] = _clean(before)
        try:
            result = trainer.fit()
            timings["train"] = result.train_seconds
            record["samples_per_second"] = result.samples_per_second
        except TrainingDivergedError as err:
            timings["train"] = trainer.train_seconds
            record["status"] = "failed"
            record["failure"] = {
                "kind": "diverged",
                "step": err.step,
                "component": err.component,
                "message": str(err),
            }
        record["steps_completed"] = trainer.step
        if record["status"] == "failed":
            return record

        t0 = time.perf_counter()
        after = trainer.evaluate()
        timings["eval"] += time.perf_counter() - t0
        record["after"] = _clean(after)
        gate = model.gate_metric
        record["metric_before"] = _finite(before.get(gate))
        record["metric_after"] = _finite(after.get(gate))
        record["drop"] = _finite(relative_drop(before[gate], after[gate]))
        bad = sorted(k for k, v in after.items() if not math.isfinite(v))
        if bad:
            record["status"] = "failed"
            record["failure"] = {
                "kind": "non_finite_eval",
                "components": bad,
                "message": f"held-out evaluation is not finite for {bad}",
            }
            return record
        record["weights_digest"] = state_digest(model)
        peak, total, what = _peak_memory_mb(trainer.device)
        record["memory"] = {"peak_mb": peak, "device_total_mb": total, "measured": what}

        if checkpoint_root is not None:
            t0 = time.perf_counter()
            out = Path(checkpoint_root) / model.family / f"seed_{spec.seed}"
            model.save_pretrained(out)
            record["checkpoint"] = {"path": str(out), "sha256": weights_sha256(out)}
            timings["checkpoint"] = time.perf_counter() - t0

        if with_probes:
            t0 = time.perf_counter()
            _run_probes(record, model, train, held_out, trainer, policy)
            timings["probe"] = time.perf_counter() - t0
    except Exception as err:  # recorded, so the sweep goes on
        record["status"] = "failed"
        record["failure"] = {
            "kind": "exception",
            "message": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=4)[-2000:],
        }
    finally:
        record["timings"] = {f"{k}_seconds": v for k, v in timings.items()}
        record["timings"]["total_seconds"] = time.perf_counter() - started
    return record


def measure_stored(
    checkpoint_dir: Path,
    record: dict[str, Any],
    policy: Policy,
    data: TrajectoryDataset,
    *,
    device: str = "cpu",
) -> dict[str, Any]:
    """Load a seed's stored checkpoint (``from_pretrained`` verifies the weights' sha256 and
    contract fingerprint) and re-measure what the gates judge: the held-out metrics on the
    run's fixed batches, the prediction skill and the weights digest. Errors are recorded
    (``{"error": ...}``), so the stored-weights gate fails closed instead of the evaluation
    crashing."""
    try:
        model = worldflux.from_pretrained(checkpoint_dir, device=device)
        train, held_out = split(data)
        config = TrainerConfig(
            steps=0,
            batch_size=record["batch_size"],
            seq_len=record["seq_len"],
            eval_batches=record["eval_batches"],
            seed=record["seed"],
            device=device,
        )
        after = Trainer(model, train, config, eval_data=held_out).evaluate()
        horizons = [int(k) for k in policy["skill_horizons"]]
        skill = prediction_skill(model, train, held_out, horizons)
        return {
            "after": _clean(after),
            "skill": skill["skill"],
            "weights_digest": state_digest(model),
        }
    except Exception as err:  # evidence for a gate that fails closed
        return {"error": f"{type(err).__name__}: {err}"}


def with_stored_measurements(
    runs: list[dict[str, Any]], policy: Policy, data: TrajectoryDataset, *, device: str = "cpu"
) -> list[dict[str, Any]]:
    """The records, each finished seed with the re-measurement of the checkpoint it saved to a
    local folder (``record["stored"]``, see ``measure_stored``): what a local sweep's gates
    judge. The orchestration downloads and verifies the object-store copy instead."""
    return [
        {
            **r,
            "stored": measure_stored(Path(r["checkpoint"]["path"]), r, policy, data, device=device),
        }
        if r["status"] == "ok" and r.get("checkpoint")
        else r
        for r in runs
    ]


def _create(spec: SeedRunSpec, data: TrajectoryDataset) -> WorldModel:
    family = worldflux.canonical_family(spec.family)
    return worldflux.create_world_model_for(f"{family}:{spec.preset}", data.spec, **spec.overrides)


def _run_probes(
    record: dict[str, Any],
    model: WorldModel,
    train: TrajectoryDataset,
    held_out: TrajectoryDataset,
    trainer: Trainer,
    policy: Policy,
) -> None:
    horizons = [int(k) for k in policy["skill_horizons"]]
    batches = trainer.eval_batches[:2]
    _probe(record, "outputs", lambda: probes.outputs_finite(model, batches))
    _probe(record, "contract", lambda: probes.contract_check(model, batches[0]))
    if record["checkpoint"] is not None:
        path = record["checkpoint"]["path"]
        _probe(record, "parity", lambda: probes.save_load_parity(model, path, batches))
    _probe(record, "skill", lambda: prediction_skill(model, train, held_out, horizons))
    _probe(
        record,
        "plausibility",
        lambda: probes.plausibility(
            model, held_out, train, int(policy["rollout_horizon"]), policy["plausibility_margin"]
        ),
    )
    _probe(
        record,
        "latency",
        lambda: probes.rollout_latency(model, held_out, int(policy["rollout_horizon"])),
    )
    _probe(
        record,
        "planner",
        lambda: probes.planner_boundary(model, held_out, int(policy["planner_horizon"])),
    )
