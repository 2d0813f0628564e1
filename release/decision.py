"""Whether a family may be released, derived from evidence every time, never read back.

A release decision recomputes everything from the stored gate report and checks that what it
reads is what was measured:

- the report is valid (schema, the family's exact gate list, every recorded verdict recomputed)
  and its gate results, through the gate registry, permit a release;
- the report's content hash is the same in the ledger, in the object store and in the MLflow run
  that recorded it (an edit in any one place shows as a disagreement naming both values);
- it is fresh: no checkpoint landed after it, the data set it was measured on is still the
  latest good one (its expectation suite passed, same digest) and the family's gate policy has
  the digest the report recorded;
- the seed released is one that succeeded by skill and left a checkpoint.

Anything that fails raises ``PromotionRefused`` with what is wrong and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quality.evaluate import verdict
from quality.policy import load_policy
from quality.report import ReportError, validate_report
from release.datasets import last_check, read_manifest
from release.ledger import Ledger, ReportEntry, canonical_sha256
from release.lineage import LineageError, read_checkpoint_records
from release.mlflow import Mlflow
from release.object_store import ObjectStore


class PromotionRefused(RuntimeError):
    """The release was refused; the message says why and what to do."""


@dataclass(frozen=True)
class Decision:
    """A permitted release: the report it rests on and the seed it ships."""

    entry: ReportEntry
    report_sha256: str
    run: dict[str, Any]

    @property
    def report(self) -> dict[str, Any]:
        return self.entry.report


def report_key(family: str, report_id: str) -> str:
    return f"reports/{family}/{report_id}.json"


def decide(
    ledger: Ledger, store: ObjectStore, mlflow: Mlflow, family: str, seeds: list[int]
) -> Decision:
    """The latest gate evaluation of the family and the seed to release, if every check above
    holds; else ``PromotionRefused``."""
    entry = ledger.latest_report(family)
    if entry is None:
        raise PromotionRefused(
            f"{family} has no gate evaluation: materialize gate_report[{family}] (the nightly job "
            "does) and promote once it passes"
        )
    label = f"the latest gate evaluation of {family} ({entry.report_id}, "
    label += f"{entry.created_at.isoformat(timespec='seconds')})"
    _check_valid(entry, family, label)
    _check_passed(entry.report, label)
    sha = report_hash_agrees(entry, store, mlflow)
    try:
        _check_fresh(entry, store, family, seeds, label)
    except LineageError as err:  # a checkpoint or data set it was measured on is gone
        raise PromotionRefused(f"{label} cannot be checked for freshness: {err}") from err
    return Decision(entry, sha, best_seed(entry.report))


def _check_valid(entry: ReportEntry, family: str, label: str) -> None:
    report = entry.report
    try:
        validate_report(report)
        if report["family"] != family or report["report_id"] != entry.report_id:
            raise ReportError(
                f"the ledger entry {entry.report_id} of {family} holds report "
                f"{report['report_id']} of {report['family']}"
            )
    except ReportError as err:
        raise PromotionRefused(
            f"{label} is not a valid report: {err}{_blocking_note(report)}. Run "
            f"gate_report[{family}] again; nothing was promoted"
        ) from err


def _check_passed(report: dict[str, Any], label: str) -> None:
    decided = verdict(report["gates"]["results"])
    if decided.release_pass:
        return
    reasons = [
        f"{g['name']}: {g['reason']}"
        for g in report["gates"]["results"]
        if g["name"] in decided.failed_gates
    ]
    raise PromotionRefused(
        f"{label} FAILED: "
        + "; ".join(reasons)
        + ". Fix the family or its data and run the gates again; nothing was promoted"
    )


def report_hash_agrees(entry: ReportEntry, store: ObjectStore, mlflow: Mlflow) -> str:
    """The report's content hash, after checking that the object store's copy and the MLflow
    run's ``report_sha256`` tag give the same one (the ledger's copy is the reference: its
    records are hash-chained)."""
    family, report_id = entry.family, entry.report_id
    in_ledger = entry.report_sha256
    key = report_key(family, report_id)
    if not store.exists(key):
        raise PromotionRefused(
            f"gate report {report_id} is in the ledger but not in the object store "
            f"({store.uri(key)} is missing): run gate_report[{family}] again"
        )
    in_store = canonical_sha256(store.get_json(key))
    if in_store != in_ledger:
        raise PromotionRefused(
            f"gate report {report_id} differs between the ledger (sha256 {in_ledger}) and the "
            f"object store ({store.uri(key)}: sha256 {in_store}): one was edited; run "
            f"gate_report[{family}] again"
        )
    in_mlflow = mlflow.report_run_tags(report_id).get("report_sha256")
    if in_mlflow != in_ledger:
        raise PromotionRefused(
            f"gate report {report_id} differs between the ledger (sha256 {in_ledger}) and its "
            f"MLflow run (tag report_sha256: {in_mlflow or 'missing'}): run "
            f"gate_report[{family}] again"
        )
    return in_ledger


def _check_fresh(
    entry: ReportEntry, store: ObjectStore, family: str, seeds: list[int], label: str
) -> None:
    report = entry.report
    again = f"run gate_report[{family}] again before promoting"
    evaluated = {run["seed"]: run for run in report["runs"]}
    newer = []
    for record in read_checkpoint_records(store, family, seeds):
        seen = evaluated.get(record["seed"])
        sha = (record.get("checkpoint") or {}).get("sha256")
        seen_sha = ((seen or {}).get("checkpoint") or {}).get("sha256")
        if seen is None or seen.get("landed_at") != record.get("landed_at") or seen_sha != sha:
            newer.append(record["seed"])
    if newer:
        raise PromotionRefused(f"{label} is older than the checkpoints of seeds {newer}: {again}")
    for dataset in report["datasets"]:
        name = dataset["name"]
        manifest = read_manifest(store, name)  # the latest good version
        check = last_check(store, name) or {}
        newest = manifest
        if check.get("digest") not in (None, manifest.get("digest")):
            newest = read_manifest(store, name, str(check["digest"]))
        expectations = newest.get("expectations") or {}
        if expectations.get("success") is not True or check.get("success") is not True:
            failed = "; ".join(expectations.get("failures") or []) or "no failure listed"
            raise PromotionRefused(
                f"the data set {name!r} of {family} failed its latest expectation suite "
                f"(version {newest.get('digest')}: {failed}): fix the data, re-materialize "
                f"dataset[{name}] and {again}"
            )
        if manifest.get("digest") != dataset["digest"]:
            raise PromotionRefused(
                f"{label} was measured on data set {name!r} with digest {dataset['digest']}, "
                f"but its latest good version has digest {manifest.get('digest')}: retrain on "
                f"it and {again}"
            )
    policy = load_policy(family)
    if policy.digest != report["policy_digest"]:
        raise PromotionRefused(
            f"{label} was measured under gate policy digest {report['policy_digest']}, but "
            f"{family}'s policy now has digest {policy.digest} "
            f"({', '.join(policy.sources) or 'defaults'}): {again}"
        )


def _blocking_note(report: dict[str, Any]) -> str:
    """What the (invalid) report's own gate results say, when they can be read at all."""
    try:
        blocking = verdict(report["gates"]["results"]).failed_gates
    except (KeyError, TypeError):
        return ""
    return f" (its gate results block on: {', '.join(blocking)})" if blocking else ""


def best_seed(report: dict[str, Any]) -> dict[str, Any]:
    """Among the seeds that succeeded by skill (held-out skill over the trivial baselines >=
    the report's policy ``min_skill``) and left a checkpoint, the one with the lowest held-out
    gate metric after training."""
    min_skill = float(report["policy"]["thresholds"]["min_skill"])
    passing = [
        run
        for run in report["runs"]
        if run["status"] == "ok"
        and run.get("checkpoint")
        and run.get("skill") is not None
        and run["skill"] >= min_skill
        and run["metric_after"] is not None
    ]
    if not passing:
        raise PromotionRefused(
            f"no seed of {report['family']} reached held-out skill >= {min_skill} with a "
            "checkpoint; nothing was promoted"
        )
    return min(passing, key=lambda run: (run["metric_after"], run["seed"]))
