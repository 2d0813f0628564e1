"""The Dagster UI (with its daemon, so schedules and sensors run) and the MLflow UI, on
127.0.0.1, stopped together.

Each server gets its own process group: a background server started from a script ignores
SIGINT, and Dagster maps SIGTERM onto that handler, so only signalling the whole group stops
every child it spawned.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def start(command: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to the whole group, then SIGKILL to whatever is left after ``grace`` seconds.
    Waits for the group, not only its leader: dagster dev's webserver and daemon outlive it
    for a moment."""
    pgid = process.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()  # reap the leader, or the group never looks empty
            if not group_alive(pgid):
                return
            time.sleep(0.1)
    process.poll()


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{url} exited with {process.returncode} while starting:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s (log: {log})")


def serve_uis(
    settings: Any, repo: Path, dagster_port: int, mlflow_port: int, console: Console
) -> int:
    # The code server resolves the settings again: pin them to what this command resolved,
    # whatever directory it was started from.
    env = {
        **os.environ,
        "DAGSTER_HOME": str(settings.dagster_home),
        "WORLDFLUX_HOME": str(settings.home),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
    }
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Without this the MLflow server starts a 7-process job runner (~1.9 GB) this UI never uses.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    logs = settings.home / "logs"
    # Ctrl-C, and `kill` too, end the wait below: a command started in the background from a
    # script inherits SIGINT ignored, and SIGTERM would otherwise skip the clean-up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    urls: dict[str, str] = {}
    try:
        dagster_cmd = [_bin("dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1"]
        dagster_cmd += ["-p", str(dagster_port)]
        processes["dagster"] = start(dagster_cmd, logs / "dagster.log", env, repo)
        urls["dagster"] = f"http://127.0.0.1:{dagster_port}"
        tracking = settings.mlflow_tracking_uri
        if tracking.startswith(("http://", "https://")):
            urls["mlflow"] = tracking  # a tracking server exists: browse it there
        else:
            mlflow_cmd = [_bin("mlflow"), "server", "--backend-store-uri", tracking]
            mlflow_cmd += ["--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"]
            processes["mlflow"] = start(mlflow_cmd, logs / "mlflow.log", env, repo)
            urls["mlflow"] = f"http://127.0.0.1:{mlflow_port}"
        with console.status("starting the Dagster UI and the MLflow UI..."):
            for name, process in processes.items():
                wait_http(urls[name], process, 90.0, logs / f"{name}.log")
        console.print(f"Dagster UI  {urls['dagster']}  (lineage, checks, runs, schedules)")
        console.print(f"MLflow UI   {urls['mlflow']}  (runs, registry: worldflux-<family>)")
        console.print(f"logs in {logs}; Ctrl-C stops both")
        while all(p.poll() is None for p in processes.values()):
            time.sleep(1.0)
        dead = [n for n, p in processes.items() if p.poll() is not None]
        console.print(f"[red]{', '.join(dead)} stopped unexpectedly[/red]; see {logs}")
        return 1
    except KeyboardInterrupt:
        console.print("stopping...")
        return 0
    except RuntimeError as err:
        console.print(f"[red]{err}[/red]")
        return 1
    finally:
        for process in processes.values():
            stop(process)
