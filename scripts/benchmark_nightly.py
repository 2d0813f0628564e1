"""The nightly's sweep with 1 and N workers on the run queue, side by side in one run: wall
time, start-up, run time, work, orchestration overhead (in all and per run) and the speed-up;
then whether both produced the same weights and the same gate verdicts.

    python scripts/benchmark_nightly.py                       # every family x 3 seeds x 1000 steps
    python scripts/benchmark_nightly.py --families tdmpc2 diffusion --steps 200 --workers 1 2

Each configuration runs in a fresh embedded home (SQLite Dagster, MLflow and ledger, local
object store) under a temporary folder, so neither warms the other's state. Figures are
recorded with this command in docs/orchestration.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Gates that time or size the process (latency, throughput, peak memory): their values differ
# between any two runs, parallel or not, and a verdict close to its budget can flip with the
# machine's load. A flip is printed with both values, apart from what must be identical.
TIMED_CATEGORY = "resource."


@dataclass
class Result:
    workers: int
    wall: float
    startup: float
    runs: float
    work: float
    per_job: dict[str, float]  # job -> mean overhead per run
    weights: dict[str, str]  # "family seed" -> sha256 of the stored weights
    gates: dict[str, dict[str, tuple[str, Any]]]  # family -> gate -> (status, value)
    failures: list[str]

    @property
    def overhead(self) -> float:
        return (self.runs - self.work) / max(self.runs, 1e-9)


def sweep(families: list[str], steps: int | None, workers: int, home: Path) -> Result:
    env = {
        "WORLDFLUX_HOME": str(home),
        "DAGSTER_HOME": "",
        "DAGSTER_PG_URL": "",
        "MLFLOW_TRACKING_URI": "",
        "WORLDFLUX_S3_BUCKET": "",
        "WORLDFLUX_MONGODB_URI": "",
    }
    with mock.patch.dict(os.environ, env):
        from assets.partitions import SEEDS
        from orchestration.cli import lineage_tasks, run_lineage
        from release.lineage import read_checkpoint_records

        tasks = lineage_tasks(families, dict.fromkeys(families, steps), SEEDS, release=False)
        started = time.perf_counter()
        lineage = run_lineage(tasks, workers)
        wall = time.perf_counter() - started
        defs, finished = lineage.defs, lineage.finished
        ran = [d for d in finished if d.ran]
        per_job: dict[str, list[float]] = {}
        for done in ran:
            per_job.setdefault(done.job, []).append(done.seconds - done.work_seconds)
        store = defs.resources["object_store"].open()
        weights, gates = {}, {}
        with defs.resources["ledger"].open() as ledger:
            for family in families:
                for record in read_checkpoint_records(store, family, SEEDS):
                    checkpoint = record.get("checkpoint") or {}
                    weights[f"{family} {record['seed']}"] = checkpoint.get("sha256", "")
                entry = ledger.latest_report(family)
                results = entry.report["gates"]["results"] if entry else []
                gates[family] = {g["name"]: (g["status"], g.get("value")) for g in results}
        return Result(
            workers=workers,
            wall=wall,
            startup=lineage.startup,
            runs=sum(d.seconds for d in ran),
            work=sum(d.work_seconds for d in ran),
            per_job={job: statistics.mean(v) for job, v in per_job.items()},
            weights=weights,
            gates=gates,
            failures=[f"{d.label}: {d.message}" for d in lineage.faults],
        )


def compare(base: Result, other: Result) -> tuple[list[str], list[str]]:
    """(what differs that must not: weights, the verdict or value of any gate that does not
    measure the process; timed gates whose verdict differs, with both values)."""
    problems = [
        f"{key}: weights {base.weights[key][:12]} vs {other.weights.get(key, '')[:12]}"
        for key in base.weights
        if base.weights[key] != other.weights.get(key)
    ]
    timed = []
    for family, gates in base.gates.items():
        for name, (status, value) in gates.items():
            theirs = other.gates.get(family, {}).get(name)
            if theirs is None:
                problems.append(f"{family} {name}: missing")
            elif name.startswith(TIMED_CATEGORY):
                if theirs[0] != status:
                    timed.append(
                        f"{family} {name}: {status} ({value}) vs {theirs[0]} ({theirs[1]})"
                    )
            elif theirs != (status, value):
                problems.append(f"{family} {name}: {status} {value} vs {theirs[0]} {theirs[1]}")
    return problems, timed


def main() -> int:
    import warnings

    import dagster as dg

    from assets.partitions import FAMILIES, SEEDS

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=FAMILIES)
    parser.add_argument("--steps", type=int, default=1000, help="0: each family's policy steps")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    unknown = sorted(set(args.families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; the families are {FAMILIES}")
    steps = args.steps or None
    print(
        f"sweep: {len(args.families)} families x {len(SEEDS)} seeds x "
        f"{steps or 'policy'} steps (+ re-runs and gate reports); {os.cpu_count()} CPUs; "
        f"workers {args.workers}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="worldflux-bench-nightly-") as tmp:
        for workers in args.workers:
            print(f"\n--- {workers} worker(s)", flush=True)
            results.append(sweep(args.families, steps, workers, Path(tmp) / f"w{workers}"))
    base = results[0]
    rows = [
        ("wall s", [f"{r.wall:.1f}" for r in results]),
        ("start-up s", [f"{r.startup:.1f}" for r in results]),
        ("run time s (all workers)", [f"{r.runs:.1f}" for r in results]),
        ("work s", [f"{r.work:.1f}" for r in results]),
        ("overhead % of run time", [f"{r.overhead:.1%}" for r in results]),
        *[
            (f"overhead per {job} s", [f"{r.per_job.get(job, float('nan')):.2f}" for r in results])
            for job in base.per_job
        ],
        ("speed-up (wall)", [f"{base.wall / r.wall:.2f}x" for r in results]),
    ]
    print("\n" + f"{'':<34}" + "".join(f"{f'{r.workers} worker(s)':>16}" for r in results))
    for name, values in rows:
        print(f"{name:<34}" + "".join(f"{v:>16}" for v in values))
    status = 0
    for result in results:
        for failure in result.failures:
            print(f"FAULT with {result.workers} worker(s): {failure}")
            status = 1
        if result is base:
            continue
        problems, timed = compare(base, result)
        if problems:
            status = 1
            print(f"{result.workers} worker(s) DIFFER from {base.workers}: " + "; ".join(problems))
        else:
            print(
                f"{result.workers} worker(s) vs {base.workers}: same weights "
                f"({len(base.weights)} seeds), same verdict and value of every gate outside "
                f"{TIMED_CATEGORY}* ({len(base.gates)} families)"
            )
        for flip in timed:
            print(f"  timed gate verdict differs (the machine's load at that moment): {flip}")
    return status


if __name__ == "__main__":
    sys.exit(main())
