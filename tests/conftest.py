"""Fixtures shared by several test folders."""

import os
from collections.abc import Iterator

import pytest
import torch

from tests.integration import postgres as pg
from tests.integration.seaweedfs import SeaweedServer, start_seaweedfs, stop


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist two workers share the machine's cores: one torch thread each (and in
    the processes they start), or both would spin up a thread per core and slow each other."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One real SeaweedFS S3 server for the session; tests isolate themselves by bucket."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        stop(server)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pg.Postgres]:
    """One real PostgreSQL server for the session; tests isolate themselves by database."""
    server = pg.start_postgres(tmp_path_factory.mktemp("pg"))
    try:
        yield server
    finally:
        pg.stop(server)
