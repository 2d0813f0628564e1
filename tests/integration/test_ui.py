"""`python -m orchestration ui` starts the Dagster UI and the MLflow UI on 127.0.0.1 and stops
both, with every process they spawned, on Ctrl-C (SIGINT to the command)."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from orchestration.servers import group_alive
from tests.integration.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_ui_starts_both_servers_and_ctrl_c_stops_them(tmp_path: Path) -> None:
    dagster_port, mlflow_port = free_port(), free_port()
    env = {
        **os.environ,
        "WORLDFLUX_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}",
    }
    env.pop("DAGSTER_HOME", None)
    command = [sys.executable, "-m", "orchestration", "ui"]
    command += ["--dagster-port", str(dagster_port), "--mlflow-port", str(mlflow_port)]
    log = (tmp_path / "ui.log").open("wb")
    # Own session, so SIGINT goes to the command alone; started with SIGINT ignored, as a
    # command launched in the background from a script is, which the command must undo.
    ui = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    urls = [f"http://127.0.0.1:{dagster_port}", f"http://127.0.0.1:{mlflow_port}"]
    children: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not all(_answers(u) for u in urls):
            assert ui.poll() is None, (tmp_path / "ui.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "ui.log").read_text()
            time.sleep(1)
        graphql = urllib.request.Request(
            f"{urls[0]}/graphql",
            data=b'{"query": "{ version }"}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(graphql, timeout=10) as response:
            assert b"version" in response.read()
        children += subprocess.run(
            ["pgrep", "-P", str(ui.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 2  # dagster dev and mlflow server, each in its own group
        os.kill(ui.pid, signal.SIGINT)
        assert ui.wait(timeout=60) == 0
        for url in urls:
            assert not _answers(url)
        for child in children:
            assert not group_alive(int(child))
    finally:
        for pgid in [ui.pid, *map(int, children)]:  # the servers have their own groups
            if group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)
        log.close()
