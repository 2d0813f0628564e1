"""The environment, read once, turned into resources.

Standard variables keep their meaning (``DAGSTER_HOME``, ``MLFLOW_TRACKING_URI``,
``MLFLOW_REGISTRY_URI``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_REGION``); the
project's own start with ``WORLDFLUX_``. With none set, everything is embedded under one root
folder (``WORLDFLUX_HOME``, default ``./.worldflux``): deleting it resets the system.

- ``WORLDFLUX_HOME``: the root of embedded state (default ``./.worldflux``).
- ``DAGSTER_HOME``: default ``$WORLDFLUX_HOME/dagster``; its dagster.yaml (written by the CLI
  when missing) keeps runs, events and schedules in SQLite there (run and event storage with
  their connections kept open, orchestration/sqlite_storage.py), or in PostgreSQL when
  ``DAGSTER_PG_URL`` is set (``postgresql://user:password@host:5432/dagster``).
- ``MLFLOW_TRACKING_URI``: default ``sqlite:///$WORLDFLUX_HOME/mlflow.db`` with artifacts under
  ``$WORLDFLUX_HOME/mlflow-artifacts``; production ``http://mlflow-server:5000``, or a database
  directly (``postgresql+psycopg2://...``).
- ``WORLDFLUX_S3_BUCKET`` (+ ``WORLDFLUX_S3_ENDPOINT_URL`` for MinIO/SeaweedFS,
  ``WORLDFLUX_S3_PREFIX``): objects in S3; unset, under ``$WORLDFLUX_HOME/objects``.
- ``WORLDFLUX_MONGODB_URI`` (+ ``WORLDFLUX_MONGODB_DATABASE``, default ``worldflux``): the
  report ledger in MongoDB; unset, SQLite at ``$WORLDFLUX_HOME/ledger.db``.
- ``WORLDFLUX_RELEASE_MANAGERS``: comma-separated identities that may promote, roll back and
  reconcile. Unset, the list is ``$WORLDFLUX_HOME/release-managers.txt`` (one identity per line),
  created on first use with the login user alone, so the embedded default is closed to others.
- ``WORLDFLUX_CELERY_BROKER``: a Celery broker (``redis://host:6379/0``), also the result
  backend. Set, the code location gains ``checkpoint_celery_job``, whose training steps run on
  Celery workers, on this machine or others (see ``orchestration/distributed.py`` for the worker
  command); unset, every step runs in its run's own process.
- ``WORLDFLUX_TORCH_THREADS``: torch CPU threads per run (default 1: runs share the cores, as
  many at once as dagster.yaml's run queue allows).
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PREFIX = "WORLDFLUX_"
REPO = Path(__file__).resolve().parents[1]
PG_VARIABLE = "DAGSTER_PG_URL"
# Added to the project's dagster.yaml when DAGSTER_PG_URL is set (dagster-postgres reads it).
_PG_STORAGE = f"""
storage:
  postgres:
    postgres_url:
      env: {PG_VARIABLE}
"""
# Otherwise: Dagster's default SQLite layout under DAGSTER_HOME, by absolute path (the file is
# written for one home; a relative path would follow the working directory).
_SQLITE_STORAGE = """
run_storage:
  module: orchestration.sqlite_storage
  class: PooledSqliteRunStorage
  config:
    base_dir: {runs}
event_log_storage:
  module: orchestration.sqlite_storage
  class: PooledSqliteEventLogStorage
  config:
    base_dir: {events}
"""
MANAGERS_FILE = "release-managers.txt"
CELERY_BROKER_VARIABLE = f"{PREFIX}CELERY_BROKER"


class SettingsError(ValueError):
    """A variable holds something unusable; the message names it and what to set."""


@dataclass(frozen=True)
class Settings:
    home: Path
    dagster_home: Path
    mlflow_tracking_uri: str
    mlflow_registry_uri: str | None
    mlflow_artifact_root: Path
    s3_bucket: str | None
    s3_endpoint_url: str | None
    s3_prefix: str
    s3_region: str | None
    mongodb_uri: str | None
    mongodb_database: str
    release_managers_list: str | None = None  # WORLDFLUX_RELEASE_MANAGERS as given
    dagster_pg_url: str | None = None
    celery_broker: str | None = None
    torch_threads: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get(f"{PREFIX}HOME") or ".worldflux").expanduser().resolve()
        dagster_home = Path(env.get("DAGSTER_HOME") or home / "dagster").expanduser().resolve()
        tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
        bucket = env.get(f"{PREFIX}S3_BUCKET") or None
        endpoint = env.get(f"{PREFIX}S3_ENDPOINT_URL") or None
        if endpoint and not bucket:
            raise SettingsError(
                f"{PREFIX}S3_ENDPOINT_URL is set ({endpoint}) but {PREFIX}S3_BUCKET is not: set "
                "the bucket too, or unset the endpoint to keep objects under "
                f"{home / 'objects'}"
            )
        broker = env.get(CELERY_BROKER_VARIABLE) or None
        if broker and "://" not in broker:
            raise SettingsError(
                f"{CELERY_BROKER_VARIABLE} is {broker!r}, not a broker URL: give one such as "
                "redis://127.0.0.1:6379/0, or unset it to run every step in its run's process"
            )
        threads = env.get(f"{PREFIX}TORCH_THREADS") or "1"
        if not threads.isdigit() or int(threads) < 1:
            raise SettingsError(
                f"{PREFIX}TORCH_THREADS is {threads!r}: give a positive number of torch CPU "
                "threads per run (default 1), or unset it"
            )
        return cls(
            home=home,
            dagster_home=dagster_home,
            mlflow_tracking_uri=tracking,
            mlflow_registry_uri=env.get("MLFLOW_REGISTRY_URI") or None,
            mlflow_artifact_root=home / "mlflow-artifacts",
            s3_bucket=bucket,
            s3_endpoint_url=endpoint,
            s3_prefix=env.get(f"{PREFIX}S3_PREFIX", ""),
            s3_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            mongodb_uri=env.get(f"{PREFIX}MONGODB_URI") or None,
            mongodb_database=env.get(f"{PREFIX}MONGODB_DATABASE") or "worldflux",
            release_managers_list=env.get(f"{PREFIX}RELEASE_MANAGERS"),
            dagster_pg_url=env.get(PG_VARIABLE) or None,
            celery_broker=broker,
            torch_threads=int(threads),
        )

    def instance_yaml(self) -> str:
        """The Dagster instance's dagster.yaml: the project's, plus PostgreSQL storage when
        ``DAGSTER_PG_URL`` is set, else Dagster's SQLite files in ``DAGSTER_HOME`` written
        through connections kept open (orchestration/sqlite_storage.py)."""
        text = (REPO / "dagster.yaml").read_text()
        if self.dagster_pg_url:
            return text + _PG_STORAGE
        history = (self.dagster_home / "history").resolve()
        return text + _SQLITE_STORAGE.format(
            runs=json.dumps(str(history)), events=json.dumps(str(history / "runs"))
        )

    def write_instance_yaml(self) -> None:
        """Give ``DAGSTER_HOME`` its dagster.yaml when it has none; an existing one is kept,
        but one without PostgreSQL storage while ``DAGSTER_PG_URL`` is set is an error, not a
        silent fallback to SQLite."""
        target = self.dagster_home / "dagster.yaml"
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.write_text(self.instance_yaml())
        elif self.dagster_pg_url and "postgres" not in target.read_text():
            raise SettingsError(
                f"{PG_VARIABLE} is set but {target} keeps Dagster's storage in SQLite: delete "
                "that file (it is written again with PostgreSQL storage) or add a "
                "`storage: postgres:` section to it"
            )

    def release_managers(self) -> list[str]:
        """The identities that may act on releases: the variable, else the embedded list file
        (created with the login user on first use)."""
        if self.release_managers_list is not None:
            names = [n.strip() for n in self.release_managers_list.split(",") if n.strip()]
            if not names:
                raise SettingsError(
                    f"{PREFIX}RELEASE_MANAGERS is set but names nobody: give comma-separated "
                    "identities (e.g. alice,bob), or unset it to use "
                    f"{self.home / MANAGERS_FILE}"
                )
            return names
        path = self.home / MANAGERS_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                "# Who may promote, roll back and reconcile releases: one identity per line.\n"
                f"{getpass.getuser()}\n"
            )
        lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
        names = [line for line in lines if line]
        if not names:
            raise SettingsError(
                f"{path} names no release manager: add one identity per line, or set "
                f"{PREFIX}RELEASE_MANAGERS"
            )
        return names

    def describe(self) -> dict[str, str]:
        """Where each kind of state lives (for people; secrets are not included)."""
        objects = (
            f"s3://{self.s3_bucket}/{self.s3_prefix}"
            + (f" at {self.s3_endpoint_url}" if self.s3_endpoint_url else "")
            if self.s3_bucket
            else str(self.home / "objects")
        )
        managers = (
            f"{PREFIX}RELEASE_MANAGERS"
            if self.release_managers_list is not None
            else str(self.home / MANAGERS_FILE)
        )
        described = {
            "dagster instance": str(self.dagster_home)
            + (" (PostgreSQL storage: DAGSTER_PG_URL)" if self.dagster_pg_url else ""),
            "mlflow tracking": self.mlflow_tracking_uri,
            "object store": objects,
            "report ledger": (
                f"MongoDB database {self.mongodb_database!r}"
                if self.mongodb_uri
                else str(self.home / "ledger.db")
            ),
            "release managers": managers,
        }
        if self.celery_broker:
            # Without the user part and the query: a broker URL carries its password there.
            parts = urlsplit(self.celery_broker)
            host = parts.netloc.rpartition("@")[2]
            described["celery broker"] = (
                f"{parts.scheme}://{host}{parts.path} (checkpoint_celery_job)"
            )
        return described


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources of the code location, chosen by the settings (the one place that does)."""
    from dagster_aws.s3 import S3Resource

    from assets.resources import (
        LedgerResource,
        LocalObjectStoreResource,
        MlflowResource,
        MongoLedgerResource,
        ObjectStoreResource,
        ReleaseManagersResource,
        S3ObjectStoreResource,
        SqliteLedgerResource,
        TorchResource,
    )

    object_store: ObjectStoreResource
    if settings.s3_bucket:
        object_store = S3ObjectStoreResource(
            s3=S3Resource(endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region),
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
        )
    else:
        object_store = LocalObjectStoreResource(root=str(settings.home / "objects"))
    ledger: LedgerResource
    if settings.mongodb_uri:
        ledger = MongoLedgerResource(uri=settings.mongodb_uri, database=settings.mongodb_database)
    else:
        ledger = SqliteLedgerResource(path=str(settings.home / "ledger.db"))
    mlflow = MlflowResource(
        tracking_uri=settings.mlflow_tracking_uri,
        registry_uri=settings.mlflow_registry_uri,
        artifact_root=str(settings.mlflow_artifact_root),
    )
    return {
        "object_store": object_store,
        "ledger": ledger,
        "mlflow": mlflow,
        "release_managers": ReleaseManagersResource(managers=settings.release_managers()),
        "compute": TorchResource(threads=settings.torch_threads),
    }
