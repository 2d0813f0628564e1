"""``checkpoint``: one family trained with one seed; a failed seed is a recorded result."""

import os
import socket
import time
from pathlib import Path

import dagster as dg
import torch

from assets.metadata import number, rollout_metadata, table
from assets.partitions import checkpoint_partitions, dataset_of
from assets.resources import MlflowResource, ObjectStoreResource, TorchResource
from quality import visuals
from quality.policy import load_policy
from quality.seed_run import SeedRunSpec, run_seed
from release.datasets import read_dataset
from release.lineage import (
    checkpoint_prefix,
    publish_checkpoint,
    scratch_dir,
)
from release.tracking import LogProgress, track_seed_run
from worldflux.training import History


class TrainConfig(dg.Config):
    steps: int | None = None  # None: the family policy's training.steps
    lr: float | None = None  # None: the policy's learning rate
    device: str = "auto"  # "auto" picks a GPU when one is present


@dg.asset(
    partitions_def=checkpoint_partitions,
    deps=[dg.AssetDep("dataset", partition_mapping=dg.AllPartitionMapping())],
    group_name="training",
    kinds={"pytorch", "mlflow"},
    description=(
        "One family trained with one seed on its policy's data set (read back from the object "
        "store and checked against its manifest). Weights and config go to the object store, "
        "the run to MLflow (params, per-step metrics, data-set input, loss curve, and real "
        "versus imagined on a held-out segment, also shown here). A diverged seed is "
        "materialized as a failed seed with its reason."
    ),
)
def checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    object_store: ObjectStoreResource,
    mlflow: MlflowResource,
    compute: TorchResource,  # sets the run's torch threads before the asset starts
) -> dg.MaterializeResult:
    key = context.partition_key
    assert isinstance(key, dg.MultiPartitionKey), f"not a family x seed key: {key!r}"
    family, seed = key.keys_by_dimension["family"], int(key.keys_by_dimension["seed"])
    policy = load_policy(family)
    store, tracker = object_store.open(), mlflow.open()
    data, manifest = read_dataset(store, dataset_of(family))
    steps = config.steps or int(policy.training["steps"])
    changes = {"lr": config.lr} if config.lr is not None else {}
    spec = SeedRunSpec.from_policy(policy, seed, steps, device=config.device, **changes)
    run_id = tracker.start_run(
        f"{family}-seed{seed}",
        {"family": family, "seed": str(seed), "dagster_run_id": context.run.run_id},
    )
    tracker.log_params(run_id, {k: v for k, v in vars(spec).items() if k != "overrides"})
    history = History()
    progress = LogProgress(context.log.info, steps, f"{family} seed {seed}")
    with scratch_dir("checkpoint") as tmp:
        record = run_seed(
            spec, policy, checkpoint_root=Path(tmp), data=data, callbacks=[history, progress]
        )
        # Real versus imagined on a held-out segment, drawn from the saved weights (evaluation
        # work, like the probes: counted in work_seconds, not as orchestration overhead).
        horizon = max(int(k) for k in policy["skill_horizons"])
        drawing = time.perf_counter()
        pictures = (
            visuals.of_checkpoint(
                record["checkpoint"]["path"], data, horizon, f"{family} seed {seed}"
            )
            if record["checkpoint"]
            else {}
        )
        drawing = time.perf_counter() - drawing
        provenance = {"mlflow_run_id": run_id, "dagster_run_id": context.run.run_id}
        record = publish_checkpoint(store, family, seed, record, provenance)
    png = track_seed_run(tracker, run_id, record, history, manifest)
    prefix = checkpoint_prefix(family, seed)
    curve = store.put_bytes(f"{prefix}/loss_curve.png", png) if png else ""
    stored = {}
    for name in visuals.PICTURE_FILES:  # a failed seed must not keep an older run's pictures
        if name in pictures:
            tracker.log_bytes(run_id, pictures[name], name)
            stored[name] = store.put_bytes(f"{prefix}/{name}", pictures[name])
        elif store.exists(f"{prefix}/{name}"):
            store.delete(f"{prefix}/{name}")
    after = record.get("after") or {}
    held_out = [
        {"metric": k, "before": number(v), "after": number(after.get(k))}
        for k, v in (record.get("before") or {}).items()
    ]
    failure = record["failure"] or {}
    if failure:
        context.log.warning(f"{family} seed {seed} failed: {failure.get('message')}")
    ckpt = record["checkpoint"] or {}
    return dg.MaterializeResult(
        metadata={
            "status": record["status"],
            "failure": failure.get("message", ""),
            "metric": record.get("gate_metric") or "",
            "metric_before": record.get("metric_before"),
            "metric_after": record.get("metric_after"),
            "drop": record.get("drop"),
            "samples_per_second": record.get("samples_per_second"),
            "train_seconds": record["timings"]["train_seconds"],
            "uri": ckpt.get("uri", ""),
            "sha256": ckpt.get("sha256", ""),
            "mlflow_run_id": run_id,
            "dataset_digest": manifest["digest"],
            # Which process trained it (a run queue or Celery worker; the run's own otherwise).
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "torch_threads": torch.get_num_threads(),  # the compute resource's, for timings
            "work_seconds": record["timings"]["total_seconds"] + drawing,
            "loss_curve": dg.MetadataValue.path(curve),
            **rollout_metadata(pictures, stored),
            "held_out": table(held_out),
        }
    )
