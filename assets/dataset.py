"""``dataset``: a registered data set's table, checked raw, published as a version."""

import json
import time
from pathlib import Path

import dagster as dg

from assets.partitions import dataset_partitions
from assets.resources import ObjectStoreResource
from quality.expectations import EXPECTATION_GROUPS, ExpectationReport, validate_table
from quality.table import TableError, load_table, read_table_spec, table_digest
from release.datasets import BUNDLED, bundled_table, publish_version, read_registration
from release.lineage import scratch_dir
from release.object_store import ObjectStore


def fetch_table(store: ObjectStore, source: str, folder: Path) -> Path:
    """The registered table as a local Parquet file: a bundled data set is written in the
    table format first, so bundled and registered data sets take one path."""
    path = folder / "table.parquet"
    if source.startswith(BUNDLED):
        return bundled_table(source.removeprefix(BUNDLED), path)
    path.write_bytes(store.get_bytes(source))
    return path


def _check_results(report: ExpectationReport) -> list[dg.AssetCheckResult]:
    checks = []
    for group in EXPECTATION_GROUPS:
        results = report.group(group.name)
        failed = [r for r in results if not r.success]
        checks.append(
            dg.AssetCheckResult(
                check_name=f"expect_{group.name}",
                passed=bool(results) and not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                description="; ".join(r.describe() for r in failed)
                or f"{len(results)} expectations passed",
                metadata={
                    "expectations": len(results),
                    "failed": dg.MetadataValue.json([r.to_dict() for r in failed]),
                },
            )
        )
    return checks


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="data",
    kinds={"python", "parquet"},
    description=(
        "A registered trajectory data set (the bundled ones are pre-registered; `python -m "
        "orchestration dataset add` registers a Parquet table). The great-expectations suite "
        "runs on the raw table, streaming by row groups, as blocking checks that name the "
        "failing rows. Every version is kept under its content digest; only a passing one is "
        "built, published and made the latest good version that checkpoints train on."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            f"expect_{group.name}", asset="dataset", blocking=True, description=group.description
        )
        for group in EXPECTATION_GROUPS
    ],
)
def dataset(
    context: dg.AssetExecutionContext, object_store: ObjectStoreResource
) -> dg.MaterializeResult:
    name = context.partition_key
    store = object_store.open()
    registration = read_registration(store, name)
    with scratch_dir("dataset") as tmp:
        path = fetch_table(store, registration.source, Path(tmp))
        spec_file = None
        if registration.spec is not None:  # a third-party table without a spec of its own
            spec_file = Path(tmp) / "spec.json"
            spec_file.write_text(registration.spec)
        try:
            spec = read_table_spec(path, spec_file)
        except TableError as err:
            raise dg.Failure(description=f"dataset {name}: {err}", allow_retries=False) from err
        started = time.perf_counter()
        digest = table_digest(path)
        report = validate_table(path, spec)
        data = load_table(path, spec, name=name) if report.success else None
        work_seconds = time.perf_counter() - started
        manifest = publish_version(
            store,
            name,
            table=path,
            digest=digest,
            expectations={
                "success": report.success,
                "failures": [f.describe() for f in report.failures],
            },
            data=data,
            provenance={
                "source": registration.source,
                "table_spec": json.loads(spec.to_json()),
                "dagster_run_id": context.run.run_id,
            },
        )
    if not report.success:
        context.log.warning(
            f"dataset {name}: version {digest} failed its expectation suite; the latest good "
            "version stays what checkpoints train on"
        )
    return dg.MaterializeResult(
        metadata={
            "digest": digest,
            "good": report.success,
            "table_uri": dg.MetadataValue.path(manifest["table_uri"]),
            "rows": manifest.get("rows", 0),
            "episodes": manifest.get("episodes", 0),
            "expectations": report.summary(),
            "source": registration.source,
            "work_seconds": work_seconds,
        },
        check_results=_check_results(report),
    )
