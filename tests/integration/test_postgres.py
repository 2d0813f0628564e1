"""Production backends end to end, configured only through the environment as production is:
Dagster's storage in a real PostgreSQL server (``DAGSTER_PG_URL``), and MLflow as a server
(``MLFLOW_TRACKING_URI=http://...``) whose backend store is PostgreSQL and whose artifacts go to
S3 (SeaweedFS). Both servers are started by the tests (PostgreSQL 16 from the pgserver package).
The released weights are then fetched from another "machine" with nothing but the tracking URI:
the standard MLflow client, then worldflux, each file verified."""

from __future__ import annotations

import hashlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import pytest

import worldflux
from assets.partitions import SEEDS
from orchestration import operations as ops
from orchestration.servers import start, stop, wait_http
from tests.integration.ports import free_port
from tests.integration.postgres import Postgres
from tests.integration.seaweedfs import SeaweedServer
from tests.orchestration.conftest import Platform, make_platform

FAMILY = "tdmpc2"


@pytest.fixture(scope="module")
def databases(postgres: Postgres) -> dict[str, str]:
    return {
        "dagster": postgres.create_database("dagster"),
        "mlflow": postgres.create_database("mlflow"),
    }


@pytest.fixture(scope="module")
def mlflow_server(
    postgres: Postgres,
    databases: dict[str, str],
    seaweedfs: SeaweedServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """``mlflow server`` on PostgreSQL, serving artifacts it keeps in an S3 bucket."""
    bucket = f"mlflow-{uuid.uuid4().hex[:12]}"
    s3 = {
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": seaweedfs.endpoint_url,
    }
    boto3.client(
        "s3",
        endpoint_url=seaweedfs.endpoint_url,
        aws_access_key_id=seaweedfs.access_key,
        aws_secret_access_key=seaweedfs.secret_key,
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    port = free_port()
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", postgres.url(databases["mlflow"], "postgresql+psycopg2")]
    command += ["--artifacts-destination", f"s3://{bucket}/artifacts"]
    env = {**os.environ, **s3, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = tmp_path_factory.mktemp("mlflow-server") / "mlflow.log"
    process = start(command, log, env, log.parent)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process, 120, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def platform(
    postgres: Postgres,
    databases: dict[str, str],
    mlflow_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    backends = {
        "DAGSTER_PG_URL": postgres.url(databases["dagster"]),
        "MLFLOW_TRACKING_URI": mlflow_server,
    }
    yield from make_platform(tmp_path_factory.mktemp("pg-platform"), backends)


def test_the_lineage_runs_and_releases_on_production_backends(
    platform: Platform, postgres: Postgres, databases: dict[str, str], tmp_path: Path
) -> None:
    import mlflow

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
    # Another machine needs only the tracking URI: the weights come from S3 through the server.
    uri = "models:/worldflux-tdmpc2@champion"
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=str(tmp_path), tracking_uri=platform.settings.mlflow_tracking_uri
    )
    tags = platform.mlflow.version_tags(FAMILY, platform.mlflow.aliases(FAMILY)["champion"])
    weights = Path(folder) / "model.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == tags["checkpoint_sha256"]
    assert worldflux.from_pretrained(folder).family == FAMILY
    model = worldflux.from_pretrained(uri, tracking_uri=platform.settings.mlflow_tracking_uri)
    assert model.family == FAMILY
