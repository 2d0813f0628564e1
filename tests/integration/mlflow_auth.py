"""Start and stop a real MLflow tracking server with basic authentication for tests.

`mlflow server --app-name basic-auth` on loopback, one uvicorn worker, SQLite stores and an
auth config written next to them: the production set-up (see docs) minus the database server.
Start-up takes ~8 s on 2 cores, so the tests share one server per module. The server runs in its
own session and stopping it signals the whole process group (the CLI and its uvicorn worker).
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from orchestration import servers

# Ports from below the kernel's ephemeral range (32768-60999 by default), so that an outgoing
# connection cannot take the port between the check and the bind; not the SeaweedFS range.
_PORT_RANGE = (23000, 32000)
_START_ATTEMPTS = 3
# Variables the server or its clients would otherwise take from the caller's environment.
# MLFLOW_AUTH_ADMIN_* override the ini's admin_username/admin_password when set, even empty.
_SERVER_ENV_DROPPED = (
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_ENABLE_WORKSPACES",
)


@dataclass
class MlflowAuthServer:
    url: str
    admin_username: str
    admin_password: str
    process: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path


def mlflow_binary() -> Path:
    mlflow = Path(sys.executable).parent / "mlflow"
    if not mlflow.is_file():
        raise RuntimeError(f"mlflow not found at {mlflow}: pip install 'mlflow[auth]==3.17.2'")
    return mlflow


def _free_port() -> int:
    while True:
        port = random.randrange(*_PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def write_auth_config(
    run_dir: Path, admin_username: str, admin_password: str, auth_cache_ttl_seconds: int
) -> Path:
    """The basic-auth ini: the keys of MLflow 3.17.2's own mlflow/server/auth/basic_auth.ini."""
    path = run_dir / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        # What a user may do on a resource nobody granted them anything on: read only.
        "default_permission = READ\n"
        f"database_uri = sqlite:///{run_dir / 'basic_auth.db'}\n"
        f"admin_username = {admin_username}\n"
        # Only used to create the admin on the first start against an empty user store.
        f"admin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {auth_cache_ttl_seconds}\n"
    )
    return path


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _start_once(
    tmp_dir: Path, timeout: float, auth_cache_ttl_seconds: int
) -> MlflowAuthServer | Path:
    """A running server, or the log of one that exited early (likely a port taken meanwhile)."""
    port = _free_port()
    run_dir = tmp_dir / f"mlflow-{port}"
    run_dir.mkdir(parents=True, exist_ok=True)
    admin_username, admin_password = "admin", f"admin-{secrets.token_hex(12)}"
    config_path = write_auth_config(run_dir, admin_username, admin_password, auth_cache_ttl_seconds)
    command = [
        str(mlflow_binary()),
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",  # the default is 4 uvicorn workers, each importing MLflow (~2 s of CPU)
        "--backend-store-uri",
        f"sqlite:///{run_dir / 'mlflow.db'}",
        "--default-artifact-root",
        str(run_dir / "artifacts"),
    ]
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_DROPPED}
    env.update(
        {
            "MLFLOW_AUTH_CONFIG_PATH": str(config_path),
            # The auth app refuses to start without it (it signs the UI's session and CSRF tokens).
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            # Without this the server also starts a job runner (several processes) nobody uses here.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    log_path = run_dir / "mlflow.log"
    process = servers.start(command, log_path, env, run_dir)
    server = MlflowAuthServer(
        url=f"http://127.0.0.1:{port}",
        admin_username=admin_username,
        admin_password=admin_password,
        process=process,
        log_path=log_path,
        config_path=config_path,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop(server)
            return log_path
        if _answers(server.url):
            return server
        time.sleep(0.2)
    stop(server)
    raise RuntimeError(
        f"the MLflow server did not answer {server.url}/health within {timeout:.0f} s; "
        f"log {log_path} ends with:\n{_log_tail(log_path)}"
    )


def start_mlflow_auth(
    tmp_dir: Path, timeout: float = 90.0, auth_cache_ttl_seconds: int = 60
) -> MlflowAuthServer:
    """Start `mlflow server --app-name basic-auth` and wait until /health answers.

    MLflow checks the password (a ~0.1 s scrypt hash here) two to four times per request unless
    `auth_cache_ttl_seconds` lets it remember a login that succeeded: 0.2-0.4 s against ~10 ms a
    request, ~45 s against ~15 s for the test module. The cache only remembers good
    (user, password) pairs; what a user may do is decided on every request either way."""
    for _ in range(_START_ATTEMPTS):
        started = _start_once(Path(tmp_dir), timeout, auth_cache_ttl_seconds)
        if isinstance(started, MlflowAuthServer):
            return started
        log_path = started
        if "address already in use" not in log_path.read_text(errors="replace").lower():
            break  # a configuration error: another port would not help
    raise RuntimeError(
        f"the MLflow server exited during start-up; log {log_path} ends with:\n"
        f"{_log_tail(log_path)}"
    )


def stop(server: MlflowAuthServer, grace: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after `grace` seconds."""
    servers.stop(server.process, grace)
    server.process.wait()
