"""``dataset``: a bundled data set, validated and published to the object store."""

import time

import dagster as dg

from assets.partitions import dataset_partitions
from assets.resources import ObjectStoreResource
from quality.expectations import CHECK_GROUPS, validate_dataset
from release.lineage import publish_dataset
from worldflux.data import list_bundled, load_bundled

CHECK_DESCRIPTIONS = {
    "row_count": "enough rows to train and hold out episodes",
    "schema": "every column present with the right dtype",
    "no_nulls": "no missing values",
    "finite_values": "no NaN or infinite values",
    "action_bounds": "actions inside the action space (placeholders at episode starts)",
    "unique_episode_step": "each (episode, step) appears once",
    "one_end_per_episode": "exactly one terminated/truncated row per episode, at its last step",
}


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="data",
    kinds={"python", "safetensors"},
    description=(
        "A bundled trajectory data set (CartPole, Pendulum, rendered CartPole frames) published "
        "to the object store with its manifest. The great-expectations suite runs as blocking "
        "checks; checkpoints refuse a data set whose latest suite failed."
    ),
    check_specs=[
        dg.AssetCheckSpec(f"expect_{group}", asset="dataset", blocking=True, description=text)
        for group, text in CHECK_DESCRIPTIONS.items()
    ],
)
def dataset(
    context: dg.AssetExecutionContext, object_store: ObjectStoreResource
) -> dg.MaterializeResult:
    name = context.partition_key
    data = load_bundled(name)
    started = time.perf_counter()
    report = validate_dataset(data)
    work_seconds = time.perf_counter() - started
    source = next(entry for entry in list_bundled() if entry["name"] == name)
    expectations = {"success": report.success, "failures": [f.describe() for f in report.failures]}
    manifest = publish_dataset(
        object_store.open(),
        data,
        {"source": source, "expectations": expectations, "dagster_run_id": context.run.run_id},
    )
    checks = []
    for group in CHECK_GROUPS:
        results = report.group(group)
        failed = [r.describe() for r in results if not r.success]
        checks.append(
            dg.AssetCheckResult(
                check_name=f"expect_{group}",
                passed=bool(results) and not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                description="; ".join(failed) or f"{len(results)} expectations passed",
                metadata={"expectations": len(results), "failed": dg.MetadataValue.json(failed)},
            )
        )
    return dg.MaterializeResult(
        metadata={
            "uri": dg.MetadataValue.path(manifest["uri"]),
            "rows": manifest["rows"],
            "episodes": manifest["episodes"],
            "sha256": manifest["sha256"],
            "digest": manifest["digest"],
            "expectations": report.summary(),
            "source": dg.MetadataValue.json(source),
            "work_seconds": work_seconds,
        },
        check_results=checks,
    )
