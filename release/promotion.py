"""Promotion, rollback and reconciliation of a family's released weights: a recorded state machine.

State lives in three places that must always agree: the MLflow aliases (``champion``,
``previous-champion``), the release area's ``releases/<family>/champion.json`` and the ledger.
The ledger is the reference: its last committed ``promote`` or ``rollback`` record names the
champion (``to_version``) and the previous champion (``from_version``), and its records are
hash-chained, so an edit shows.

Every release action runs ``run_release``:

1. the request is checked (a reason, length caps, the actor is a release manager);
2. the family's lease is taken in the ledger backend, so one action per family runs at a time,
   across processes and machines;
3. the ledger's hash chain is verified;
4. an interrupted earlier action (a ``pending`` record without its end) is resolved by restoring
   the state its ledger records (aliases and ``champion.json``) and recording it ``aborted``;
5. drift (aliases or ``champion.json`` that disagree with the ledger) refuses, naming
   ``python -m orchestration reconcile <family>``, which puts them back as the ledger says;
6. the action itself, each step recorded: ``pending`` -> ``weights copied`` -> ``version
   registered`` -> ``aliases moved`` -> committed (the ``promote`` / ``rollback`` record).

A crash at any step leaves a ``pending`` record that step 4 of the next call resolves. A refusal
(the evidence says no) is recorded ``refused``; a fault (a service failed) is recorded ``failed``
and raised as ``ReleaseFault`` naming the service: a fault is never written down as a fact about
the model. Every record carries the request's report id when one is known.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quality.model_card import render_model_card
from release.datasets import read_manifest
from release.decision import Decision, PromotionRefused, decide, report_hash_agrees
from release.ledger import (
    MAX_ACTOR_CHARS,
    MAX_REASON_CHARS,
    Ledger,
    LedgerBusy,
    LedgerTampered,
    PromotionEntry,
    canonical_json,
)
from release.lineage import (
    LineageError,
    download_weights,
    read_rollout_pictures,
    scratch_dir,
)
from release.mlflow import RELEASE_EXPERIMENT, Mlflow, MlflowError, model_name
from release.object_store import ObjectStore, ObjectStoreError

REQUESTS = ("promote", "rollback", "reconcile")
# The records that end an intent; "failed" does not: a fault may leave it to be resolved.
_ENDS = ("promote", "rollback", "aborted")
STEPS = ("pending", "weights copied", "version registered", "aliases moved", "committed")
# How far back the ledger is read for an intent's records (one action writes five).
_HISTORY = 200

Observer = Callable[[str], None]
UNNAMED = "(no actor named)"  # what a request without an actor is recorded as


class ReleaseFault(RuntimeError):
    """A service the release needs failed; nothing was released. The message names the service
    and what to do."""


@dataclass(frozen=True)
class Services:
    store: ObjectStore
    ledger: Ledger
    mlflow: Mlflow


@dataclass(frozen=True)
class ReleaseRequest:
    """Who asks for what: every ledger record of one action shares it."""

    family: str
    action: str
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
            actor=_capped(self.actor.strip() or UNNAMED, MAX_ACTOR_CHARS),
            reason=_capped(self.reason, MAX_REASON_CHARS),
            report_id=report_id,
            dagster_run_id=self.dagster_run_id,
            created_at=dt.datetime.now(dt.UTC),
            details=details,
        )


def _capped(text: str, limit: int) -> str:
    """What a refusal of an over-long text records: its start, marked as cut."""
    return text if len(text) <= limit else text[: limit - 20] + " ...[cut]"


@dataclass(frozen=True)
class Release:
    action: str
    family: str
    version: str | None
    previous: str | None
    report_id: str | None
    uri: str
    details: dict[str, Any]


@dataclass(frozen=True)
class ChampionState:
    """What the ledger says is released: its last committed promote or rollback."""

    champion: str | None
    previous: str | None
    entry: PromotionEntry | None

    def aliases(self) -> dict[str, str | None]:
        return {"champion": self.champion, "previous-champion": self.previous}


def champion_state(ledger: Ledger, family: str) -> ChampionState:
    entry = ledger.latest_promotion(family, ("promote", "rollback"))
    if entry is None:
        return ChampionState(None, None, None)
    previous = entry.from_version if entry.from_version != entry.to_version else None
    return ChampionState(entry.to_version, previous, entry)


@dataclass(frozen=True)
class Intent:
    """An action that began (its ``pending`` record) and has not ended."""

    pending: PromotionEntry
    steps: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.pending.details["intent"])

    @property
    def reached(self) -> str:
        return self.steps[-1] if self.steps else "pending"


def open_intent(ledger: Ledger, family: str) -> Intent | None:
    history = ledger.promotions(family, limit=_HISTORY)  # newest first
    for index, entry in enumerate(history):
        if entry.action != "pending":
            continue
        later = history[:index]
        intent = entry.details.get("intent")
        if any(e.action in _ENDS and e.details.get("intent") == intent for e in later):
            return None
        steps = [
            str(e.details["step"])
            for e in reversed(later)
            if e.action == "step" and e.details.get("intent") == intent
        ]
        return Intent(entry, steps)
    return None


def champion_key(family: str) -> str:
    return f"releases/{family}/champion.json"


def champion_record(state: ChampionState) -> dict[str, Any] | None:
    """``champion.json`` as the ledger's state implies it (None: there is no champion)."""
    entry = state.entry
    if entry is None or state.champion is None:
        return None
    shown = ("weights_uri", "weights_key", "checkpoint_sha256", "model_card_uri", "report_sha256")
    return {
        "version": state.champion,
        "previous": state.previous,
        "action": entry.action,
        "actor": entry.actor,
        "report_id": entry.report_id,
        **{k: entry.details[k] for k in shown if k in entry.details},
    }


def drift(services: Services, family: str) -> list[str]:
    """Where the MLflow aliases, ``champion.json`` or an unfinished action disagree with the
    ledger ([] when all agree)."""
    state = champion_state(services.ledger, family)
    problems = []
    intent = open_intent(services.ledger, family)
    if intent is not None:
        problems.append(
            f"an interrupted {intent.pending.details.get('requested')} by "
            f"{intent.pending.actor} (intent {intent.id}, reached '{intent.reached}') is "
            "unresolved"
        )
    aliases = services.mlflow.aliases(family)
    for alias, expected in state.aliases().items():
        actual = aliases.get(alias)
        if actual != expected:
            problems.append(
                f"MLflow alias {alias} of {model_name(family)} is "
                f"{'v' + actual if actual else 'unset'}, the ledger says "
                f"{'v' + expected if expected else 'unset'}"
            )
    key = champion_key(family)
    written = services.store.get_json(key).get("version") if services.store.exists(key) else None
    if written != state.champion:
        problems.append(
            f"{services.store.uri(key)} names {'v' + str(written) if written else 'no version'}, "
            f"the ledger says {'v' + state.champion if state.champion else 'none'}"
        )
    return problems


# ------------------------------------------------------------------------------ entry point
def run_release(
    request: ReleaseRequest,
    services: Services,
    *,
    seeds: list[int],
    managers: frozenset[str],
    observer: Observer | None = None,
    lease_wait: float = 30.0,
) -> Release:
    """Run one release action (``request.action``: promote, rollback or reconcile) under the
    family's lease (waiting up to ``lease_wait`` seconds for it). Raises ``PromotionRefused`` or
    ``ReleaseFault``; both are recorded. ``observer`` hears each step's name as it is done."""
    ledger = services.ledger
    try:
        check_request(request, managers)
    except PromotionRefused as refused:
        _record_refusal(request, ledger, refused)
        raise
    holder = f"{request.actor} ({request.action}, run {request.dagster_run_id})"
    try:
        with ledger.lease(request.family, holder, wait_seconds=lease_wait):
            return _locked(request, services, seeds, observer or (lambda step: None))
    except LedgerBusy as busy:
        raise _fault(request, ledger, "the report ledger", busy, None) from busy


def check_request(request: ReleaseRequest, managers: frozenset[str]) -> None:
    if request.action not in REQUESTS:
        raise PromotionRefused(f"unknown release action {request.action!r}: one of {REQUESTS}")
    if not request.actor.strip():
        raise PromotionRefused(
            "no actor named: set the run config's actor to your identity (a release manager); "
            "the CLI sets the login user"
        )
    if not request.reason.strip():
        raise PromotionRefused(f"a {request.action} needs a reason (it goes into the audit trail)")
    for what, text, cap in (
        ("actor", request.actor, MAX_ACTOR_CHARS),
        ("reason", request.reason, MAX_REASON_CHARS),
    ):
        if len(text) > cap:
            raise PromotionRefused(
                f"the {what} is {len(text)} characters long; at most {cap} are kept: shorten it"
            )
    if request.actor not in managers:
        listed = ", ".join(sorted(managers)) or "nobody"
        raise PromotionRefused(
            f"{request.actor!r} is not a release manager (the release managers are: {listed}; "
            "WORLDFLUX_RELEASE_MANAGERS sets them): ask one of them to "
            f"{request.action} {request.family}"
        )


def record_refusal(request: ReleaseRequest, ledger: Ledger, message: str) -> None:
    """Record a refusal decided outside ``run_release`` (e.g. by the CLI)."""
    _record_refusal(request, ledger, PromotionRefused(message))


def _record_refusal(
    request: ReleaseRequest,
    ledger: Ledger,
    refused: PromotionRefused,
    report_id: str | None = None,
) -> None:
    state = champion_state(ledger, request.family)
    ledger.add_promotion(
        request.entry(
            "refused",
            state.champion,
            None,
            {"refusal": str(refused), "requested": request.action},
            report_id=report_id or _latest_report_id(ledger, request.family),
        )
    )


def _latest_report_id(ledger: Ledger, family: str) -> str | None:
    """The report a request without one of its own was made against: the family's latest."""
    latest = ledger.latest_report(family)
    return latest.report_id if latest is not None else None


_SERVICES: tuple[tuple[type[BaseException], str], ...] = (
    (ObjectStoreError, "the object store"),
    (MlflowError, "the MLflow registry"),
    (LedgerBusy, "the report ledger"),
)


def _service_of(error: BaseException) -> str | None:
    for kind, name in _SERVICES:
        if isinstance(error, kind):
            return name
    module = type(error).__module__
    if module.startswith(("mlflow", "requests", "urllib3")):
        return "the MLflow registry"
    if module.startswith(("botocore", "boto3", "s3transfer")):
        return "the object store"
    if module.startswith(("pymongo", "sqlite3")):  # the ledger's storage, not an invalid entry
        return "the report ledger"
    return None


def _fault(
    request: ReleaseRequest,
    ledger: Ledger,
    service: str,
    error: BaseException,
    report_id: str | None,
    intent: Intent | None = None,
) -> ReleaseFault:
    """The fault, recorded ``failed`` when the ledger can still write (said in the message
    when it cannot)."""
    message = (
        f"{request.action} of {request.family} did not happen: {service} failed "
        f"({type(error).__name__}: {error}). Nothing was released; check that {service} is "
        "reachable and retry"
    )
    details: dict[str, Any] = {"fault": message, "service": service, "requested": request.action}
    if intent is not None:
        details |= {"intent": intent.id, "reached": intent.reached}
    try:
        state = champion_state(ledger, request.family)
        report_id = report_id or _latest_report_id(ledger, request.family)
        ledger.add_promotion(
            request.entry("failed", state.champion, None, details, report_id=report_id)
        )
    except Exception as unrecorded:  # reported even when it cannot be recorded
        message += f" (the ledger could not record this fault either: {unrecorded})"
    return ReleaseFault(message)


def _locked(
    request: ReleaseRequest, services: Services, seeds: list[int], observer: Observer
) -> Release:
    ledger, family = services.ledger, request.family
    report_id: str | None = None
    intent: Intent | None = None
    try:
        try:
            ledger.verify()
        except LedgerTampered as tampered:
            raise PromotionRefused(
                f"the report ledger failed verification, so no release decision can rest on "
                f"it: {tampered}"
            ) from tampered
        resolved = resolve_interrupted(request, services)
        if request.action == "reconcile":
            return _reconcile(request, services, resolved)
        problems = drift(services, family)
        if problems:
            raise PromotionRefused(
                f"{family}'s release state disagrees with the ledger: {'; '.join(problems)}. "
                f"Run `python -m orchestration reconcile {family} --reason ...` to put it "
                "back as the ledger records it, then retry"
            )
        if request.action == "promote":
            latest = ledger.latest_report(family)
            report_id = latest.report_id if latest is not None else None
            decision = decide(ledger, services.store, services.mlflow, family, seeds)
            intent = _begin(request, services, report_id, observer)
            return _promote(request, services, decision, intent, observer)
        target = _rollback_target(services, family)
        report_id = target.report_id
        intent = _begin(request, services, report_id, observer)
        return _rollback(request, services, target, intent, observer)
    except PromotionRefused as refused:
        if intent is not None:  # refused mid-way (e.g. the release copy reads back wrong)
            with contextlib.suppress(Exception):  # if not now, the next call resolves it
                resolve_interrupted(request, services)
        _record_refusal(request, ledger, refused, report_id)
        raise
    except Exception as error:
        service = _service_of(error)
        if service is None:
            raise  # a bug, not a fault of a service: the traceback is wanted
        if intent is not None:  # put back now if the services allow; else the next call does
            with contextlib.suppress(Exception):
                resolve_interrupted(request, services)
        raise _fault(request, ledger, service, error, report_id, intent) from error


# --------------------------------------------------------------------- the state machine
def _begin(
    request: ReleaseRequest, services: Services, report_id: str | None, observer: Observer
) -> Intent:
    state = champion_state(services.ledger, request.family)
    details = {"intent": uuid.uuid4().hex, "requested": request.action, "before": state.aliases()}
    observer("pending")
    entry = request.entry("pending", state.champion, None, details, report_id=report_id)
    services.ledger.add_promotion(entry)
    return Intent(entry)


def _step(
    request: ReleaseRequest,
    services: Services,
    intent: Intent,
    step: str,
    observer: Observer,
    **details: Any,
) -> None:
    """The step was done; the observer hears of it before the ledger does (a crash between
    the two is the case recovery must handle)."""
    observer(step)
    services.ledger.add_promotion(
        request.entry(
            "step",
            intent.pending.from_version,
            details.get("version"),
            {"intent": intent.id, "step": step, **details},
            report_id=intent.pending.report_id,
        )
    )
    intent.steps.append(step)


def resolve_interrupted(request: ReleaseRequest, services: Services) -> str | None:
    """Put an interrupted action's aliases and ``champion.json`` back as the ledger's last
    committed state says, and record it ``aborted``. Returns what was resolved, or None."""
    ledger, family = services.ledger, request.family
    intent = open_intent(ledger, family)
    if intent is None:
        return None
    state = champion_state(ledger, family)
    services.mlflow.put_aliases(family, state.aliases())
    _write_champion_record(services.store, family, state)
    registered = [
        e.to_version
        for e in ledger.promotions(family, limit=_HISTORY)
        if e.action == "step" and e.details.get("intent") == intent.id and e.to_version
    ]
    for version in registered:  # registered but never released: say so in the registry
        services.mlflow.set_version_tag(family, version, "release_state", f"aborted {intent.id}")
    note = (
        f"resolved an interrupted {intent.pending.details.get('requested')} by "
        f"{intent.pending.actor} (intent {intent.id}, reached '{intent.reached}'): aliases and "
        f"champion.json restored to champion {state.champion or 'none'}"
    )
    ledger.add_promotion(
        request.entry(
            "aborted",
            state.champion,
            None,
            {"intent": intent.id, "reached": intent.reached, "resolution": note},
            report_id=intent.pending.report_id,
        )
    )
    return note


def _write_champion_record(store: ObjectStore, family: str, state: ChampionState) -> None:
    record = champion_record(state)
    if record is None:
        if store.exists(champion_key(family)):
            store.delete(champion_key(family))
        return
    store.put_json(champion_key(family), record)


def _promote(
    request: ReleaseRequest,
    services: Services,
    decision: Decision,
    intent: Intent,
    observer: Observer,
) -> Release:
    store, family = services.store, request.family
    report, run = decision.report, decision.run
    checkpoint = run["checkpoint"]
    previous = intent.pending.from_version
    area = f"releases/{family}/{checkpoint['sha256'][:16]}/weights"
    with scratch_dir("release") as tmp:
        weights = _verified(download_weights, store, checkpoint, Path(tmp) / "weights")
        uri = store.put_dir(area, weights)
        copy = {**checkpoint, "uri": uri, "key": area}
        # Read the release copy back: what consumers will download is what the gates measured.
        verified = _verified(download_weights, store, copy, Path(tmp) / "read-back")
        # The same bytes as MLflow artifacts of a release run: the registered version's source,
        # so any machine with the tracking URI downloads them with the standard MLflow client.
        release_run = services.mlflow.start_run(
            f"{family}-release-{intent.id[:8]}",
            {"family": family, "release_intent": intent.id, "weights_uri": uri},
            experiment=RELEASE_EXPERIMENT,
        )
        source = services.mlflow.log_artifacts(release_run, verified, "weights")
    _step(request, services, intent, "weights copied", observer, weights_uri=uri, source=source)
    tags = {
        "family": family,
        "gate_report_id": decision.entry.report_id,
        "gate_report_sha256": decision.report_sha256,
        "checkpoint_sha256": checkpoint["sha256"],
        "dataset": str(report["datasets"][0]["name"]),
        "dataset_digest": str(report["datasets"][0]["digest"]),
        # What a consumer verifies every downloaded file against (worldflux.hub).
        "files_sha256": canonical_json(checkpoint["files"]),
        "policy_digest": report["policy_digest"],
        "dagster_run_id": request.dagster_run_id,
        "code_version": str(report["code_version"].get("git_commit")),
        "seed": str(run["seed"]),
        "source_mlflow_run_id": str(run.get("mlflow_run_id")),
        "release_intent": intent.id,
        "weights_uri": uri,
    }
    version = services.mlflow.register_version(
        family,
        source=source,
        run_id=release_run,
        tags=tags,
        description=(
            f"{family} seed {run['seed']}, gate report {decision.entry.report_id}: {request.reason}"
        ),
    )
    _step(request, services, intent, "version registered", observer, version=version)
    kept = previous if previous not in (None, version) else None
    services.mlflow.put_aliases(family, {"champion": version, "previous-champion": kept})
    _step(request, services, intent, "aliases moved", observer, version=version)
    card_key = f"releases/{family}/v{version}/model_card.md"
    card = render_model_card(
        report,
        run,
        {
            "model_name": model_name(family),
            "version": version,
            "actor": request.actor,
            "reason": request.reason,
            "released_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "dagster_run_id": request.dagster_run_id,
            "dataset": read_manifest(store, report["datasets"][0]["name"]),
        },
        read_rollout_pictures(store, family, [run["seed"]]).get(run["seed"]),
    )
    details = {
        "intent": intent.id,
        "seed": run["seed"],
        "checkpoint_sha256": checkpoint["sha256"],
        "files": checkpoint["files"],
        "weights_uri": uri,
        "weights_key": area,
        "report_sha256": decision.report_sha256,
        "model_card_uri": store.put_bytes(card_key, card.encode()),
        "model_card_key": card_key,
    }
    services.mlflow.set_version_tag(family, version, "model_card_uri", details["model_card_uri"])
    services.mlflow.log_text(release_run, card, "model_card.md")
    services.mlflow.end_run(release_run, ok=True)
    return _commit(request, services, intent, "promote", previous, version, details, observer, uri)


def _commit(
    request: ReleaseRequest,
    services: Services,
    intent: Intent,
    action: str,
    previous: str | None,
    version: str,
    details: dict[str, Any],
    observer: Observer,
    uri: str,
) -> Release:
    report_id = intent.pending.report_id
    entry = request.entry(action, previous, version, details, report_id=report_id)
    state = ChampionState(version, previous if previous != version else None, entry)
    # Written before the commit record: a crash between the two is resolved back to the
    # ledger's state, which rewrites champion.json.
    _write_champion_record(services.store, request.family, state)
    observer("committed")
    services.ledger.add_promotion(entry)
    return Release(action, request.family, version, previous, report_id, uri, details)


@dataclass(frozen=True)
class _Target:
    current: str
    version: str
    report_id: str | None
    released: PromotionEntry  # the promotion that first released the target


def _rollback_target(services: Services, family: str) -> _Target:
    state = champion_state(services.ledger, family)
    if state.champion is None or state.previous is None:
        raise PromotionRefused(
            f"{family} has no previous champion to roll back to (the ledger records champion "
            f"{state.champion or 'none'}, previous champion {state.previous or 'none'})"
        )
    released = next(
        (
            e
            for e in services.ledger.promotions(family, limit=_HISTORY)
            if e.action == "promote" and e.to_version == state.previous
        ),
        None,
    )
    if released is None or "files" not in released.details:
        raise PromotionRefused(
            f"the ledger holds no promotion record of v{state.previous} with its file manifest, "
            f"so its weights cannot be verified: promote a passing report of {family} instead"
        )
    report_id = released.report_id
    tags = services.mlflow.version_tags(family, state.previous)
    if report_id is not None:
        recorded = services.ledger.get_report(report_id)
        sha = report_hash_agrees(recorded, services.store, services.mlflow)
        if tags.get("gate_report_sha256") != sha:
            raise PromotionRefused(
                f"v{state.previous}'s MLflow tag gate_report_sha256 is "
                f"{tags.get('gate_report_sha256') or 'missing'}, but its gate report "
                f"{report_id} has sha256 {sha}: the registry was edited; nothing was rolled back"
            )
    return _Target(state.champion, state.previous, report_id, released)


def _rollback(
    request: ReleaseRequest,
    services: Services,
    target: _Target,
    intent: Intent,
    observer: Observer,
) -> Release:
    family, details = request.family, target.released.details
    copy = {
        "uri": details["weights_uri"],
        "key": details["weights_key"],
        "files": details["files"],
        "sha256": details["checkpoint_sha256"],
    }
    with scratch_dir("rollback") as tmp:  # the weights consumers will get back, verified
        _verified(download_weights, services.store, copy, Path(tmp) / "weights")
    services.mlflow.put_aliases(
        family, {"champion": target.version, "previous-champion": target.current}
    )
    _step(request, services, intent, "aliases moved", observer, version=target.version)
    kept = {k: details[k] for k in details if k != "intent"}
    return _commit(
        request,
        services,
        intent,
        "rollback",
        target.current,
        target.version,
        {**kept, "intent": intent.id},
        observer,
        details["weights_uri"],
    )


def _reconcile(request: ReleaseRequest, services: Services, resolved: str | None) -> Release:
    family = request.family
    before = services.mlflow.aliases(family)
    problems = drift(services, family)
    state = champion_state(services.ledger, family)
    services.mlflow.put_aliases(family, state.aliases())
    _write_champion_record(services.store, family, state)
    details = {
        "drift": problems,
        "aliases_before": before,
        "aliases_after": services.mlflow.aliases(family),
        "resolved": resolved or "",
    }
    services.ledger.add_promotion(
        request.entry("reconcile", state.champion, state.champion, details)
    )
    uri = services.store.uri(champion_key(family))
    return Release("reconcile", family, state.champion, state.previous, None, uri, details)


def _verified(download: Callable[..., Path], *args: Any) -> Path:
    """A download whose bytes do not match their manifest refuses the release."""
    try:
        return download(*args)
    except LineageError as err:
        raise PromotionRefused(f"{err}; nothing was released") from err
