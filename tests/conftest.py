"""Fixtures shared by several test folders."""

from collections.abc import Iterator

import pytest

from tests.integration.seaweedfs import SeaweedServer, start_seaweedfs, stop


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One real SeaweedFS S3 server for the session; tests isolate themselves by bucket."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        stop(server)
