"""The lineage end to end with Dagster's storage and MLflow's backend store in a real
PostgreSQL server (started by the tests from the pgserver package), configured only through the
environment as production is: DAGSTER_PG_URL and MLFLOW_TRACKING_URI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import worldflux
from assets.partitions import SEEDS
from orchestration import operations as ops
from tests.integration.postgres import Postgres
from tests.orchestration.conftest import Platform, make_platform

FAMILY = "tdmpc2"


@pytest.fixture(scope="module")
def databases(postgres: Postgres) -> dict[str, str]:
    return {
        "dagster": postgres.create_database("dagster"),
        "mlflow": postgres.create_database("mlflow"),
    }


@pytest.fixture(scope="module")
def platform(
    postgres: Postgres, databases: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    backends = {
        "DAGSTER_PG_URL": postgres.url(databases["dagster"]),
        "MLFLOW_TRACKING_URI": postgres.url(databases["mlflow"], "postgresql+psycopg2"),
    }
    yield from make_platform(tmp_path_factory.mktemp("pg-platform"), backends)


def test_the_lineage_runs_and_releases_on_postgresql(
    platform: Platform, postgres: Postgres, databases: dict[str, str]
) -> None:
    defs, instance = platform.defs, platform.instance
    assert "Postgres" in type(instance.run_storage).__name__
    assert ops.materialize_dataset(defs, instance, "pendulum").success
    for seed in SEEDS:
        assert ops.train(defs, instance, FAMILY, seed, steps=1000).success
    assert ops.repeat(defs, instance, FAMILY).success
    assert ops.evaluate(defs, instance, FAMILY).success
    released = ops.release(defs, instance, FAMILY, action="promote", reason="pg", actor="alice")
    assert released.success, released.message
    # The runs are in PostgreSQL, and so is the registered model with its champion alias.
    [(runs,)] = postgres.query(databases["dagster"], "SELECT count(*) FROM runs;")
    assert runs == len(instance.get_runs()) >= 7
    aliases = postgres.query(
        databases["mlflow"], "SELECT name, alias FROM registered_model_aliases;"
    )
    assert ("worldflux-tdmpc2", "champion") in aliases
    model = worldflux.from_pretrained(
        "models:/worldflux-tdmpc2@champion", tracking_uri=platform.settings.mlflow_tracking_uri
    )
    assert model.family == FAMILY
