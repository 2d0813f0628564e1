"""The Dagster resources the assets use: thin ``ConfigurableResource`` wrappers whose ``open()``
builds the plain-Python object of ``release/`` (settings choose the implementation)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from release.ledger import Ledger
from release.ledger_mongo import MongoLedger
from release.ledger_sqlite import SqliteLedger
from release.mlflow import EXPERIMENT, Mlflow
from release.object_store import LocalObjectStore, ObjectStore, S3ObjectStore


class ObjectStoreResource(dg.ConfigurableResource):
    """The object store; assets annotate this type and call open()."""

    def open(self) -> ObjectStore:
        raise NotImplementedError(
            f"{type(self).__name__} is the abstract object store resource: configure "
            "LocalObjectStoreResource or S3ObjectStoreResource"
        )


class LocalObjectStoreResource(ObjectStoreResource):
    """Objects under a local folder (the embedded default)."""

    root: str

    def open(self) -> ObjectStore:
        return LocalObjectStore(Path(self.root))


class S3ObjectStoreResource(ObjectStoreResource):
    """Objects in an S3-compatible bucket, with the client built by dagster-aws's S3Resource.

    S3Resource (dagster-aws 0.29.27) has no addressing-style option, only endpoint_url, use_ssl,
    verify, region_name, max_attempts and credentials. None is needed: botocore switches to
    path-style URLs (http://host:port/bucket/key) whenever endpoint_url is set, which is what
    SeaweedFS and MinIO require. Checked with boto3 1.44.5 for 127.0.0.1, localhost and plain host
    names, and by the contract tests against SeaweedFS 4.48.

    Each open() builds a new boto3 session (S3Resource.get_client does; ~0.2 s of model loading),
    so open the store once per asset and reuse it for every object.
    """

    s3: S3Resource
    bucket: str
    prefix: str = ""

    def open(self) -> ObjectStore:
        return S3ObjectStore(self.s3.get_client(), self.bucket, self.prefix)


class LedgerResource(dg.ConfigurableResource):
    """Assets depend on this base, so the backend can change without touching them."""

    def open(self) -> Ledger:
        raise NotImplementedError("use SqliteLedgerResource or MongoLedgerResource")


class SqliteLedgerResource(LedgerResource):
    """The embedded default: one SQLite file."""

    path: str

    def open(self) -> Ledger:
        return SqliteLedger(Path(self.path))


class MongoLedgerResource(LedgerResource):
    """Production: MongoDB; opening pings the server and fails fast if it cannot be reached."""

    uri: str
    database: str = "worldflux"

    def open(self) -> Ledger:
        return MongoLedger.from_uri(self.uri, self.database)


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and registry (``release.mlflow.Mlflow``)."""

    tracking_uri: str
    registry_uri: str | None = None
    artifact_root: str | None = None
    experiment: str = EXPERIMENT

    def open(self) -> Mlflow:
        return Mlflow(self.tracking_uri, self.registry_uri, self.artifact_root, self.experiment)


class ReleaseManagersResource(dg.ConfigurableResource):
    """Who may promote, roll back or reconcile (settings: ``WORLDFLUX_RELEASE_MANAGERS``)."""

    managers: list[str]


class TorchResource(dg.ConfigurableResource):
    """Torch's CPU threads for a run's computation (settings: ``WORLDFLUX_TORCH_THREADS``).
    Runs share the cores: the run queue (dagster.yaml) bounds how many run at once, and one
    thread each keeps them from oversubscribing the cores; for this project's small models one
    thread is also the fastest (measured: docs/orchestration.md)."""

    threads: int = 1
    _before: int = PrivateAttr(default=0)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        import torch

        self._before = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # A run executed in process (CLI, tests) hands the process back as it found it.
        import torch

        torch.set_num_threads(self._before)
