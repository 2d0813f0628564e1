"""Evaluate every gate for one family over its seed runs and build the report document."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import worldflux
from quality.gates import common, registry
from quality.gates.family import kind_of
from quality.gates.registry import Evidence
from quality.gates.result import GateResult
from quality.policy import Policy, load_policy
from worldflux.core.registry import get_family

SCHEMA_VERSION = 2
# The gates whose passing is seed document 004's ``gates.common.pass``.
COMMON_VERDICT_GATES = ("common.finite_runs", "common.seed_success_rate")
REPO_ROOT = Path(__file__).resolve().parents[1]


def evaluate_gates(
    runs: list[dict[str, Any]],
    policy: Policy,
    *,
    repeats: list[dict[str, Any]] | None = None,
    maturity: str | None = None,
    obs_shape: tuple[int, ...] = (),
) -> list[GateResult]:
    """Every gate of the registry that concerns the family, in report order. ``runs`` are the
    family's seed records."""
    if not runs:
        raise ValueError(f"no seed runs for family {policy.family!r}: nothing to evaluate")
    if maturity is None:
        maturity = get_family(policy.family).maturity.value
    evidence = Evidence(
        policy.family, kind_of(policy, maturity), runs, repeats, policy, tuple(obs_shape)
    )
    return registry.evaluate(evidence)


def gate_names(family: str, maturity: str | None = None) -> list[str]:
    """The names of the gates a family is judged by, in report order (from the registry and
    the family's policy, which sets its kind and open-loop horizons)."""
    policy = load_policy(family)
    if maturity is None:
        maturity = get_family(family).maturity.value
    return registry.expected_names(policy, kind_of(policy, maturity))


@dataclass(frozen=True)
class Verdict:
    """What the gate results decide; recomputed from the results wherever a report is read."""

    common_pass: bool
    family_pass: bool
    release_pass: bool
    failed_gates: list[str]


def verdict(results: list[dict[str, Any]]) -> Verdict:
    """Derived from the gates' statuses only (``{"name", "group", "status"}`` each): a gate
    blocks when it failed or was skipped; not-applicable gates do not block."""
    blocking = [g["name"] for g in results if g["status"] in ("fail", "skipped")]
    status = {g["name"]: g["status"] for g in results}
    common_pass = all(status.get(n) == "pass" for n in COMMON_VERDICT_GATES)
    family_blocks = any(g["group"] == "family" and g["name"] in blocking for g in results)
    return Verdict(common_pass, common_pass and not family_blocks, not blocking, blocking)


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
        "skill",
        "samples_per_second",
        "checkpoint",
        "timings",
    )
    summary = {k: run.get(k) for k in keys}
    summary["skill"] = common.skill_of(run)
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
    results = [g.to_dict() for g in gates]
    decided = verdict(results)
    # Microseconds: the same evidence evaluated twice in one second (a gate report run, then a
    # release run with gates) must get two report ids; the ledger refuses a repeated one.
    created = (created_at or dt.datetime.now(dt.UTC)).isoformat(timespec="microseconds")
    datasets = sorted(
        {(r["dataset"], r.get("dataset_digest"), r.get("dataset_file")) for r in runs},
        key=lambda d: d[0],
    )
    body: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "family": policy.family,
        "preset": runs[0]["preset"],
        "created_at": created,
        "code_version": code_version(),
        "policy": policy.to_dict(),
        "policy_digest": policy.digest,
        "policy_sources": list(policy.sources),
        # A data set given as a file (scripts/measure_quality_gates.py --dataset-file) is named.
        "datasets": [
            {"name": n, "digest": d, **({"file": f} if f else {})} for n, d, f in datasets
        ],
        "seeds": [r["seed"] for r in runs],
        "steps": max(r["steps"] for r in runs),
        "success_rate": stats.rate,
        "successes": stats.successes,
        "gates": {
            "common": {
                "pass": decided.common_pass,
                "ci_low": stats.bootstrap[0],
                "ci_high": stats.bootstrap[1],
                "ci_method": common.BOOTSTRAP_METHOD,
                "clopper_pearson_low": stats.clopper_pearson[0],
                "clopper_pearson_high": stats.clopper_pearson[1],
                "successes": stats.successes,
                "trials": stats.trials,
                "required": stats.required,
            },
            "family_pass": decided.family_pass,
            "release_pass": decided.release_pass,
            "results": results,
        },
        "failed_gates": decided.failed_gates,
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
