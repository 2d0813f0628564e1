"""Data sets as a release manager handles them: registered (bundled ones at start-up, others
with ``dataset add``), checked through a Dagster run, exported, removed. Registration lives in
the object store (``release.datasets``) and as a dynamic partition of ``dataset``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from assets.partitions import BUNDLED_DATASETS, dataset_partitions
from orchestration import operations as ops
from quality.table import TableError, export_table, read_table_spec
from release import datasets
from release.lineage import LineageError
from release.object_store import ObjectStore
from worldflux.data import load_bundled

PARTITIONS = str(dataset_partitions.name)


def object_store(defs: dg.Definitions) -> ObjectStore:
    """The code location's object store."""
    if defs.resources is None or "object_store" not in defs.resources:
        raise RuntimeError("the definitions have no object_store resource")
    store: ObjectStore = defs.resources["object_store"].open()
    return store


def ensure_bundled(store: ObjectStore, instance: dg.DagsterInstance) -> list[str]:
    """Pre-register every bundled data set not registered yet (one removed on purpose stays
    removed); returns the names added as partitions."""
    known = set(instance.get_dynamic_partitions(PARTITIONS))
    added = []
    for name in BUNDLED_DATASETS:
        try:
            registration = datasets.read_registration(store, name)
        except LineageError:
            registration = datasets.register(
                store, name, f"{datasets.BUNDLED}{name}", "platform", "bundled with worldflux"
            )
        if registration.removed is None and name not in known:
            added.append(name)
    if added:
        instance.add_dynamic_partitions(PARTITIONS, added)
    return added


def fetch_source(source: str, folder: Path) -> Path:
    """A local copy of a table given as a path or an ``s3://bucket/key`` URI. S3 is reached
    with boto3's standard configuration: ``AWS_ENDPOINT_URL`` (for MinIO or SeaweedFS),
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``."""
    if not source.startswith("s3://"):
        return Path(source)
    import boto3  # type: ignore[import-untyped]
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    bucket, _, key = source.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise TableError(f"{source} is not an S3 object URI: use s3://<bucket>/<key>")
    path = folder / Path(key).name
    try:
        boto3.client("s3").download_file(bucket, key, str(path))
    except (BotoCoreError, ClientError) as err:
        raise TableError(
            f"cannot download {source}: {err} (check AWS_ENDPOINT_URL, the credentials and the "
            "object's name)"
        ) from err
    return path


@dataclass(frozen=True)
class Added:
    name: str
    source: str
    outcome: ops.Outcome
    digest: str
    good: bool
    failed_checks: list[dg.AssetCheckEvaluation]


def add(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    name: str,
    table: Path,
    *,
    actor: str,
    spec_file: Path | None = None,
    quiet: bool = False,
) -> Added:
    """Register a Parquet table as (a new version of) data set ``name`` and check it through
    a ``dataset_job`` run. The table's spec is read first, so a file that is not a trajectory
    table is refused before anything is registered."""
    datasets.check_name(name)
    read_table_spec(table, spec_file)  # TableError: nothing registered
    store = object_store(defs)
    source = datasets.upload_source(store, name, table)
    spec = spec_file.read_text() if spec_file is not None else None
    datasets.register(store, name, source, actor, f"dataset add {table.name}", spec=spec)
    if name not in instance.get_dynamic_partitions(PARTITIONS):
        instance.add_dynamic_partitions(PARTITIONS, [name])
    outcome = ops.materialize_dataset(defs, instance, name, quiet=quiet)
    check = datasets.last_check(store, name) or {}
    return Added(
        name,
        source,
        outcome,
        str(check.get("digest", "")),
        bool(check.get("success")),
        outcome.failed_checks(),
    )


def remove(
    defs: dg.Definitions, instance: dg.DagsterInstance, name: str, *, actor: str, reason: str
) -> datasets.Registration:
    """No longer a partition (the nightly skips it); its registration and every version stay."""
    store = object_store(defs)
    removed = datasets.remove(store, name, actor, reason)
    if name in instance.get_dynamic_partitions(PARTITIONS):
        instance.delete_dynamic_partition(PARTITIONS, name)
    return removed


def export(defs: dg.Definitions, name: str, path: Path) -> dict[str, Any]:
    """Write the latest good version of ``name`` as a Parquet table (a bundled data set never
    materialized is exported from the package). Returns the version's manifest, or the
    bundled data set's figures."""
    store = object_store(defs)
    try:
        data, manifest = datasets.read_dataset(store, name)
        table_spec = manifest.get("table_spec") or {}
        source = str(table_spec.get("source", manifest.get("source", name)))
        licence = str(table_spec.get("licence", "unknown"))
    except LineageError:
        if name not in BUNDLED_DATASETS:
            raise
        datasets.bundled_table(name, path)
        data = load_bundled(name)
        return {"name": name, "digest": data.digest, "rows": len(data)}
    export_table(data, path, source=source, licence=licence)
    return manifest
