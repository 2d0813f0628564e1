"""Fixtures shared by several test folders."""

from collections.abc import Iterator

import pytest

from tests.integration import postgres as pg
from tests.integration.seaweedfs import SeaweedServer, start_seaweedfs, stop


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
