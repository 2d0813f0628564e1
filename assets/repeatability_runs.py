"""``repeatability_runs``: two short runs of a family's first seed, trained as their own lineage
step (checkpoint work, not report work); the gate report compares their weights digests."""

import time

import dagster as dg

from assets.partitions import SEEDS, dataset_of, family_partitions
from assets.resources import ObjectStoreResource, TorchResource
from quality.policy import load_policy
from quality.sweep import repeat_runs
from release.datasets import read_dataset
from release.lineage import publish_repeats


@dg.asset(
    partitions_def=family_partitions,
    deps=[dg.AssetDep("dataset", partition_mapping=dg.AllPartitionMapping())],
    group_name="training",
    kinds={"pytorch"},
    description=(
        "Two runs of the family's first seed for the policy's repeat_steps, on the validated "
        "data set: on a CPU they must train bit-identical weights (the repeatability gate "
        "compares their digests). Their records go to the object store."
    ),
)
def repeatability_runs(
    context: dg.AssetExecutionContext,
    object_store: ObjectStoreResource,
    compute: TorchResource,  # sets the run's torch threads before the asset starts
) -> dg.MaterializeResult:
    family = context.partition_key
    policy = load_policy(family)
    store = object_store.open()
    data, manifest = read_dataset(store, dataset_of(family))
    started = time.perf_counter()
    records = repeat_runs(policy, SEEDS[0], data=data)
    work_seconds = time.perf_counter() - started
    uri = publish_repeats(store, family, records, {"dagster_run_id": context.run.run_id})
    digests = [r.get("weights_digest") or "" for r in records]
    return dg.MaterializeResult(
        metadata={
            "seed": SEEDS[0],
            "steps": int(policy.training["repeat_steps"]),
            "runs": len(records),
            "statuses": dg.MetadataValue.json([r["status"] for r in records]),
            "weights_digests": dg.MetadataValue.json(digests),
            "identical": len(set(digests)) == 1 and bool(digests[0]),
            "dataset_digest": manifest["digest"],
            "uri": dg.MetadataValue.path(uri),
            "work_seconds": work_seconds,
        }
    )
