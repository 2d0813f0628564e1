"""Promotion and rollback of a family's released weights.

MLflow aliases carry the state (``candidate`` -> ``champion``, the champion before it as
``previous-champion``); the ledger keeps the history aliases cannot (who, when, why, from, to).
A promotion is refused unless the family's latest gate evaluation passed and is newer than
every checkpoint of the family: blocking checks only act inside one Dagster run, so a later
run that selects only ``released_weights`` must refuse by itself. A refusal is recorded too.
Nothing stored is trusted for the decision: not the ledger's ``releasable`` column nor the
report's own ``release_pass``. The stored report is validated again (schema, the family's exact
gate list, every recorded verdict recomputed from the gate statuses) and the release decided
from its gate statuses; the seed released is one that succeeded by skill.

Order of a promotion, so that a failure never half-promotes: verify the weights' sha256, copy
them to the release area with the model card, register the version, then move the aliases
(restored if a later step fails), then append the ledger record.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quality.evaluate import verdict
from quality.model_card import render_model_card
from quality.report import ReportError, validate_report
from release.ledger import Ledger, PromotionEntry, ReportEntry
from release.lineage import (
    download_weights,
    read_checkpoint_records,
    read_dataset_manifest,
    scratch_dir,
)
from release.mlflow import Mlflow, model_name
from release.object_store import ObjectStore

ACTOR_VARIABLE = "WORLDFLUX_ACTOR"


class PromotionRefused(RuntimeError):
    """The release was refused; the message says why and what to do."""


def actor_from_env(explicit: str = "") -> str:
    """Who acts: the flag, else ``WORLDFLUX_ACTOR``, else the login name."""
    if explicit.strip():
        return explicit.strip()
    return os.environ.get(ACTOR_VARIABLE, "").strip() or getpass.getuser()


@dataclass(frozen=True)
class _Request:
    """Who asks for what: every ledger entry of one promotion or rollback shares it."""

    family: str
    actor: str
    reason: str
    dagster_run_id: str

    def entry(
        self,
        action: str,
        from_version: str | None,
        to_version: str | None,
        details: dict[str, Any],
        report_id: str | None = None,
    ) -> PromotionEntry:
        return PromotionEntry(
            family=self.family,
            action=action,
            from_version=from_version,
            to_version=to_version,
            actor=self.actor,
            reason=self.reason,
            report_id=report_id,
            dagster_run_id=self.dagster_run_id,
            created_at=dt.datetime.now(dt.UTC),
            details=details,
        )


@dataclass(frozen=True)
class Release:
    action: str
    family: str
    version: str
    previous: str | None
    report_id: str | None
    uri: str
    details: dict[str, Any]


def releasable_report(
    ledger: Ledger, store: ObjectStore, family: str, seeds: list[int]
) -> ReportEntry:
    """The latest gate evaluation of the family, if it permits a release; else refuse."""
    entry = ledger.latest_report(family)
    if entry is None:
        raise PromotionRefused(
            f"{family} has no gate evaluation: materialize gate_report[{family}] (the nightly job "
            "does) and promote once it passes"
        )
    when = entry.created_at.isoformat(timespec="seconds")
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
            f"the latest gate evaluation of {family} ({entry.report_id}, {when}) is not a valid "
            f"report: {err}{_blocking_note(report)}. Run gate_report[{family}] again; nothing "
            "was promoted"
        ) from err
    decided = verdict(report["gates"]["results"])
    if not decided.release_pass:
        reasons = [
            f"{g['name']}: {g['reason']}"
            for g in report["gates"]["results"]
            if g["name"] in decided.failed_gates
        ]
        raise PromotionRefused(
            f"the latest gate evaluation of {family} ({entry.report_id}, {when}) FAILED: "
            + "; ".join(reasons)
            + ". Fix the family or its data and run the gates again; nothing was promoted"
        )
    evaluated = {run["seed"]: run for run in entry.report["runs"]}
    newer = []
    for record in read_checkpoint_records(store, family, seeds):
        seen = evaluated.get(record["seed"])
        sha = (record.get("checkpoint") or {}).get("sha256")
        seen_sha = ((seen or {}).get("checkpoint") or {}).get("sha256")
        if seen is None or seen.get("landed_at") != record.get("landed_at") or seen_sha != sha:
            newer.append(record["seed"])
    if newer:
        raise PromotionRefused(
            f"the latest gate evaluation of {family} ({entry.report_id}, {when}) is older than "
            f"the checkpoints of seeds {newer}: run gate_report[{family}] again before promoting"
        )
    return entry


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


def promote(
    family: str,
    *,
    store: ObjectStore,
    ledger: Ledger,
    mlflow: Mlflow,
    seeds: list[int],
    actor: str,
    reason: str,
    dagster_run_id: str,
) -> Release:
    now = dt.datetime.now(dt.UTC)
    request = _Request(family, actor, reason, dagster_run_id)
    try:
        if not reason.strip():
            raise PromotionRefused("a promotion needs a reason (it goes into the audit trail)")
        entry = releasable_report(ledger, store, family, seeds)
        run = best_seed(entry.report)
    except PromotionRefused as refused:
        ledger.add_promotion(
            request.entry(
                "refused",
                mlflow.aliases(family).get("champion"),
                None,
                {"refusal": str(refused), "requested": "promote"},
            )
        )
        raise
    report = entry.report
    checkpoint = run["checkpoint"]
    manifest = read_dataset_manifest(store, report["datasets"][0]["name"])
    previous = mlflow.aliases(family).get("champion")
    with scratch_dir("release") as tmp:
        weights = download_weights(store, checkpoint, Path(tmp) / "weights")
        tags = {
            "family": family,
            "gate_report_id": entry.report_id,
            "checkpoint_sha256": checkpoint["sha256"],
            "dataset_digest": str(report["datasets"][0]["digest"]),
            "dagster_run_id": dagster_run_id,
            "code_version": str(report["code_version"].get("git_commit")),
            "seed": str(run["seed"]),
            "source_mlflow_run_id": str(run.get("mlflow_run_id")),
        }
        # The version number is known only once registered: the weights are keyed by the
        # checkpoint, and the version points at them.
        area = f"releases/{family}/{checkpoint['sha256'][:16]}"
        uri = store.put_dir(f"{area}/weights", weights)
        version = mlflow.register_version(
            family,
            source=uri,
            run_id=str(run.get("mlflow_run_id")),
            tags=tags,
            description=f"{family} seed {run['seed']}, gate report {entry.report_id}: {reason}",
        )
    card = render_model_card(
        report,
        run,
        {
            "model_name": model_name(family),
            "version": version,
            "actor": actor,
            "reason": reason,
            "released_at": now.isoformat(timespec="seconds"),
            "dagster_run_id": dagster_run_id,
            "dataset": manifest,
        },
    )
    card_key = f"releases/{family}/v{version}/model_card.md"  # per version: one checkpoint
    card_uri = store.put_bytes(card_key, card.encode())  # may be released twice
    details = {
        "seed": run["seed"],
        "checkpoint_sha256": checkpoint["sha256"],
        "weights_uri": uri,
        "model_card_uri": card_uri,
        "model_card_key": card_key,
    }
    before = mlflow.aliases(family)
    _move_aliases(mlflow, family, version, previous)
    try:
        store.put_json(
            f"releases/{family}/champion.json", {"version": version, **details, "actor": actor}
        )
        ledger.add_promotion(
            request.entry("promote", previous, version, details, report_id=entry.report_id)
        )
    except Exception:  # no alias may point at a release the audit trail does not hold
        _restore_aliases(mlflow, family, before)
        raise
    return Release("promote", family, version, previous, entry.report_id, uri, details)


def _move_aliases(mlflow: Mlflow, family: str, version: str, previous: str | None) -> None:
    """candidate -> champion, the old champion kept as previous-champion. If a move fails the
    aliases are put back as they were."""
    before = mlflow.aliases(family)
    try:
        mlflow.set_alias(family, "candidate", version)
        mlflow.set_alias(family, "champion", version)
        if previous is not None and previous != version:
            mlflow.set_alias(family, "previous-champion", previous)
        mlflow.delete_alias(family, "candidate")  # promoted: no longer only a candidate
    except Exception:
        _restore_aliases(mlflow, family, before)
        raise


def _restore_aliases(mlflow: Mlflow, family: str, before: dict[str, str]) -> None:
    now = mlflow.aliases(family)
    for alias in set(now) - set(before):
        mlflow.delete_alias(family, alias)
    for alias, version in before.items():
        mlflow.set_alias(family, alias, version)


def rollback(
    family: str,
    *,
    store: ObjectStore,
    ledger: Ledger,
    mlflow: Mlflow,
    actor: str,
    reason: str,
    dagster_run_id: str,
) -> Release:
    """Swap ``champion`` and ``previous-champion`` (a second rollback undoes the first)."""
    request = _Request(family, actor, reason, dagster_run_id)
    aliases = mlflow.aliases(family)
    current, target = aliases.get("champion"), aliases.get("previous-champion")
    refusal = None
    if not reason.strip():
        refusal = "a rollback needs a reason (it goes into the audit trail)"
    elif current is None or target is None:
        refusal = (
            f"{family} has no previous champion to roll back to (aliases: {aliases or 'none'})"
        )
    if refusal is not None:
        ledger.add_promotion(
            request.entry("refused", current, target, {"refusal": refusal, "requested": "rollback"})
        )
        raise PromotionRefused(refusal)
    assert current is not None and target is not None  # refused above otherwise
    tags = mlflow.version_tags(family, target)
    source = mlflow.version_source(family, target)
    details = {"weights_uri": source, "checkpoint_sha256": tags.get("checkpoint_sha256")}
    try:
        mlflow.set_alias(family, "champion", target)
        mlflow.set_alias(family, "previous-champion", current)
        store.put_json(
            f"releases/{family}/champion.json", {"version": target, **details, "actor": actor}
        )
        ledger.add_promotion(
            request.entry(
                "rollback", current, target, details, report_id=tags.get("gate_report_id")
            )
        )
    except Exception:
        _restore_aliases(mlflow, family, aliases)
        raise
    return Release("rollback", family, target, current, tags.get("gate_report_id"), source, details)
