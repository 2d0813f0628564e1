"""Requests/s and latency of the serving API at 1, 8 and 32 concurrent clients, and the
post-guard's share of the latency.

It serves the champion of a platform that already released one (run `python -m orchestration
demo` first; the same WORLDFLUX_HOME), starting a real `python -m orchestration serve` on a free
loopback port, and drives it with HTTP clients in threads (keep-alive sessions). Nothing else
should run on the machine meanwhile.

    python scripts/benchmark_serving.py [--family tdmpc2] [--seconds 10] [--clients 1,8,32]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.serving import Server, serving  # noqa: E402


def bodies(family: str, server: Server) -> dict[str, dict[str, Any]]:
    [model] = [m for m in server.get("/api/v1/models").json()["models"] if m["family"] == family]
    obs = np.zeros(model["observation_shape"]).tolist()
    action = model["action"]
    step: Any = 0 if action["discrete"] else [0.0] * action["dim"]
    return {
        "/api/v1/rollout": {"family": family, "observations": [obs], "actions": [[step] * 10]},
        "/api/v1/plan": {"family": family, "observation": obs, "horizon": 5},
    }


def drive(server: Server, route: str, body: dict[str, Any], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        session = requests.Session()
        mine = []
        while time.monotonic() < stop:
            started = time.perf_counter()
            answer = session.post(server.url + route, json=body, headers=server.headers())
            mine.append(time.perf_counter() - started)
            if answer.status_code != 200:
                with lock:
                    failures[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ordered = np.sort(np.asarray(latencies))
    return {
        "requests": len(ordered),
        "failed": failures[0],
        "rps": len(ordered) / wall,
        "p50_ms": 1000 * float(np.percentile(ordered, 50)),
        "p95_ms": 1000 * float(np.percentile(ordered, 95)),
    }


def guard_share(server: Server, route: str) -> float:
    """The post-guard's median seconds over the median request seconds, from /metrics."""
    text = server.get("/metrics").text

    def median(metric: str) -> float:
        pattern = rf'{metric}{{route="{re.escape(route)}",quantile="0.5"}} ([0-9.eE+-]+)'
        found = re.search(pattern, text)
        return float(found.group(1)) if found else float("nan")

    return median("worldflux_guard_seconds") / median("worldflux_request_seconds")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="tdmpc2")
    parser.add_argument("--seconds", type=float, default=10.0, help="per route and client count")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--workers", type=int, default=None, help="the server's --workers")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    extra = ("--workers", str(args.workers)) if args.workers else ()
    with (
        tempfile.TemporaryDirectory() as logs,
        serving(Path(logs), [args.family], extra=extra) as server,
    ):
        routes = bodies(args.family, server)
        for route, body in routes.items():  # warm up: first requests pay lazy initialisation
            for _ in range(5):
                server.post(route, body).raise_for_status()
        print(
            f"{'route':<18} {'clients':>7} {'requests':>8} {'failed':>6} {'req/s':>8} "
            f"{'p50 ms':>8} {'p95 ms':>8} {'guard':>7}"
        )
        for route, body in routes.items():
            for clients in counts:
                row = drive(server, route, body, clients, args.seconds)
                share = guard_share(server, route)
                print(
                    f"{route:<18} {clients:>7} {row['requests']:>8} {row['failed']:>6} "
                    f"{row['rps']:>8.1f} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} "
                    f"{share:>6.1%}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
