"""A real ``python -m orchestration serve`` in a subprocess on a free loopback port, for tests and
the benchmark; stopped with its whole process group."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from orchestration.servers import start, stop, wait_http
from tests.integration.ports import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    url: str
    token: str
    log: Path

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers(), timeout=30, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        """``body`` is sent as JSON as Python writes it, NaN and Infinity included (as some
        clients do), unless ``data=`` is given."""
        if body is not None:
            kwargs["data"] = json.dumps(body)
        headers = {**self.headers(), "Content-Type": "application/json"}
        return requests.post(self.url + path, headers=headers, timeout=60, **kwargs)


@contextmanager
def serving(
    log_dir: Path,
    families: list[str],
    token: str = "test-token",
    poll: float = 0.5,
    extra: tuple[str, ...] = (),
) -> Iterator[Server]:
    """The server with the current environment (the platform's settings) plus the token."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    env = {**os.environ, "WORLDFLUX_API_TOKEN": token}
    command = [sys.executable, "-m", "orchestration", "serve", "--port", str(port)]
    command += ["--poll", str(poll), *extra, "--families", *families]
    process = start(command, log, env, REPO)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process, 120, log)
        yield Server(f"http://127.0.0.1:{port}", token, log)
    finally:
        stop(process)
