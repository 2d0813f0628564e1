"""Evaluate every gate for one family over its seed runs and build the report document."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import worldflux
from quality.gates import common, measurements
from quality.gates.family import family_gates
from quality.gates.result import GateResult
from quality.policy import Policy
from worldflux.core.registry import get_family

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]


def evaluate_gates(
    runs: list[dict[str, Any]],
    policy: Policy,
    *,
    repeats: list[dict[str, Any]] | None = None,
    maturity: str | None = None,
    obs_shape: tuple[int, ...] = (),
) -> list[GateResult]:
    """Every gate, in report order. ``runs`` are the family's seed records."""
    if not runs:
        raise ValueError(f"no seed runs for family {policy.family!r}: nothing to evaluate")
    if maturity is None:
        maturity = get_family(policy.family).maturity.value
    return [
        common.finite_runs(runs),
        common.seed_success_rate(runs, policy),
        common.seed_stability(runs, policy),
        common.repeatability(repeats, policy),
        common.save_load_parity(runs, policy),
        common.numerical_stability(runs),
        common.loss_trend(runs, policy),
        measurements.peak_memory(runs, policy),
        measurements.throughput(runs, policy),
        measurements.rollout_latency(runs, policy),
        *measurements.open_loop_error(runs, policy),
        measurements.psnr(runs, policy, obs_shape),
        measurements.plausibility(runs, policy),
        measurements.planner_boundary(runs, policy),
        *family_gates(policy.family, maturity, runs, policy),
    ]


def gate_names(family: str, maturity: str | None = None) -> list[str]:
    """The names of the gates a family is judged by, in report order.

    Taken from ``evaluate_gates`` itself over one run that failed before training, so the list
    can never drift from what an evaluation reports (every gate reports its name even with no
    evidence)."""
    from quality.policy import load_policy

    placeholder = {
        "kind": "seed",
        "family": family,
        "seed": 0,
        "steps": 0,
        "steps_completed": 0,
        "status": "failed",
        "failure": {"kind": "exception", "message": "placeholder"},
        "probes": {},
        "checkpoint": None,
    }
    gates = evaluate_gates([placeholder], load_policy(family), maturity=maturity)
    return [g.name for g in gates]


def code_version() -> dict[str, Any]:
    """The library version and, when run from a git checkout, the commit and whether the
    working tree had uncommitted changes."""
    version: dict[str, Any] = {"library_version": worldflux.__version__}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        version.update(git_commit=commit, git_dirty=bool(dirty))
    except (OSError, subprocess.CalledProcessError):
        version.update(git_commit=None, git_dirty=None)
    return version


def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "seed",
        "status",
        "failure",
        "steps",
        "steps_completed",
        "dataset",
        "dataset_digest",
        "gate_metric",
        "metric_before",
        "metric_after",
        "drop",
        "samples_per_second",
        "checkpoint",
        "timings",
    )
    summary = {k: run.get(k) for k in keys}
    # Where an orchestrated run came from (absent from local sweeps).
    origin = ("landed_at", "mlflow_run_id", "dagster_run_id")
    summary.update({k: run[k] for k in origin if k in run})
    if summary["failure"]:
        summary["failure"] = {k: v for k, v in summary["failure"].items() if k != "traceback"}
    return summary


def build_report(
    runs: list[dict[str, Any]],
    policy: Policy,
    gates: list[GateResult],
    *,
    repeats: list[dict[str, Any]] | None = None,
    created_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """The report document; field names of seed document 004 are kept (``success_rate``,
    ``gates.common.pass/ci_low/ci_high``, ``gates.family_pass``)."""
    stats = common.success_stats(runs, policy)
    by_name = {g.name: g for g in gates}
    common_pass = (
        by_name["common.finite_runs"].passed and by_name["common.seed_success_rate"].passed
    )
    family_results = [g for g in gates if g.group == "family"]
    family_pass = common_pass and all(not g.blocks for g in family_results)
    release_pass = all(not g.blocks for g in gates)
    created = (created_at or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    datasets = sorted({(r["dataset"], r.get("dataset_digest")) for r in runs}, key=lambda d: d[0])
    body: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "family": policy.family,
        "preset": runs[0]["preset"],
        "created_at": created,
        "code_version": code_version(),
        "policy": policy.to_dict(),
        "policy_digest": policy.digest,
        "policy_sources": list(policy.sources),
        "datasets": [{"name": n, "digest": d} for n, d in datasets],
        "seeds": [r["seed"] for r in runs],
        "steps": max(r["steps"] for r in runs),
        "success_rate": stats.rate,
        "successes": stats.successes,
        "gates": {
            "common": {
                "pass": common_pass,
                "ci_low": stats.bootstrap[0],
                "ci_high": stats.bootstrap[1],
                "ci_method": common.BOOTSTRAP_METHOD,
                "clopper_pearson_low": stats.clopper_pearson[0],
                "clopper_pearson_high": stats.clopper_pearson[1],
                "successes": stats.successes,
                "trials": stats.trials,
                "required": stats.required,
            },
            "family_pass": family_pass,
            "release_pass": release_pass,
            "results": [g.to_dict() for g in gates],
        },
        "failed_gates": [g.name for g in gates if g.blocks],
        "runs": [_run_summary(r) for r in runs],
        "repeatability_runs": [_run_summary(r) for r in (repeats or [])],
        "checkpoints": [
            {"seed": r["seed"], **r["checkpoint"]} for r in runs if r.get("checkpoint")
        ],
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    stamp = created.replace(":", "").replace("-", "").replace("+0000", "Z")
    body["report_id"] = f"{policy.family}-{stamp}-{digest}"
    return body
