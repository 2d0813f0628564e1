"""A whole platform in a temporary folder: Dagster instance (the project's dagster.yaml), MLflow,
object store and ledger, built from the same settings code as production; embedded (SQLite)
unless ``backends`` names other stores."""

import getpass
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import dagster as dg
import pytest

from orchestration.datasets import ensure_bundled
from orchestration.definitions import build_definitions
from orchestration.settings import Settings
from release.ledger import Ledger
from release.mlflow import Mlflow
from release.object_store import ObjectStore

REPO = Path(__file__).resolve().parents[2]
ACTORS = ("alice", "bob", "carol", "fay", "mal")


@dataclass
class Platform:
    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance

    def resource(self, name: str) -> Any:
        return self.defs.resources[name]

    @property
    def mlflow(self) -> Mlflow:
        return self.resource("mlflow").open()

    def store(self) -> ObjectStore:
        return self.resource("object_store").open()

    def ledger(self) -> Ledger:
        return self.resource("ledger").open()


def make_platform(root: Path, backends: dict[str, str] | None = None) -> Iterator[Platform]:
    """``backends``: environment that replaces the embedded defaults (e.g. PostgreSQL URLs)."""
    env = {
        "WORLDFLUX_HOME": str(root / "home"),
        "DAGSTER_HOME": str(root / "dagster"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'home' / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # The tests' actors and whoever runs the tests (the CLI acts as the login user).
        "WORLDFLUX_RELEASE_MANAGERS": ",".join([*ACTORS, getpass.getuser()]),
        "DAGSTER_PG_URL": "",  # whatever the caller's environment says
        **(backends or {}),
    }
    with mock.patch.dict(os.environ, env):
        settings = Settings.from_env()
        settings.write_instance_yaml()
        with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            defs = build_definitions(settings)
            ensure_bundled(defs.resources["object_store"].open(), instance)
            yield Platform(settings, defs, instance)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from make_platform(tmp_path_factory.mktemp("platform"))
