"""The report ledger: an append-only, tamper-evident record of gate reports and of the promotion
audit trail, plus the per-family lease that serializes release actions.

MLflow aliases keep no history, so the ledger is where "who promoted what, when, why, from which
version to which" lives. Two backends implement one contract: SQLite (embedded default) and
MongoDB (production); `tests/release/test_ledger_contract.py` runs the same suite on both.

Hash chain: each table (`gate_reports`, `promotions`) numbers its records `seq` 1, 2, 3... with
no gap, assigned at append time (a failed append, or two processes appending at once, leave
none). Each record stores `prev_hash` (the `hash` of record seq-1, 64 zeros for seq 1) and
`hash` = `chain_hash(table, seq, prev_hash, record)`, the sha256 of the canonical JSON of the
table name, seq, prev_hash and every field of the entry (`entry_record`). `Ledger.verify()`
re-reads every record and raises `LedgerTampered` at the first edited, missing or reordered one;
it cannot see the newest records removed, which is why it returns each table's head hash for
callers to anchor elsewhere.

Gate reports keep the whole report JSON and nothing derived from it: a release decision never
reads a stored verdict, it recomputes one from `report` (`ReportEntry.report_sha256` names the
exact report that was judged).

Leases: `Ledger.lease(family, holder)` holds a per-family lock across processes and machines
while a release action runs. Leases are mutable state, kept outside the chain.

Timestamps: `created_at` must be timezone-aware. A naive datetime is refused, because guessing
whether it meant local time or UTC would silently reorder the audit trail; an aware datetime in
another zone is converted to UTC. Backends store it as a fixed-width ISO-8601 UTC string with
microseconds (`to_iso`), so entries read back compare equal (MongoDB dates would keep
milliseconds only), the strings sort in time order and hash the same when verified. "Newest"
means latest `created_at`, ties broken by insertion order (`seq`).

`report` and `details` must be plain JSON (string keys; no NaN, tuples, datetimes...): what is
stored must be what is read back, in both backends.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

# promote / rollback: a committed release; reconcile: aliases and champion.json put back as the
# ledger records them; refused / failed: a request the evidence refused / a service failed;
# pending / step / aborted: the recorded states of one release action (release/promotion.py).
ACTIONS = (
    "promote",
    "rollback",
    "reconcile",
    "refused",
    "failed",
    "pending",
    "step",
    "aborted",
)
# Only an act of a release manager must say why; the other actions record outcomes and steps
# whose reason, if any, is in `details`.
ACTIONS_NEEDING_REASON = ("promote", "rollback", "reconcile")
MAX_ACTOR_CHARS = 128
MAX_REASON_CHARS = 2000
# A lease holder names who and what acts (an actor plus the action and run), so more than an actor.
MAX_HOLDER_CHARS = 512

TABLES = ("gate_reports", "promotions")
GENESIS_HASH = "0" * 64  # the prev_hash of record 1

LEASE_POLL_SECONDS = 0.1

_RESTORE = (
    "Restore the ledger from a backup; do not promote until "
    "`python -m orchestration status --verify` passes."
)


class LedgerError(RuntimeError):
    """A ledger entry or operation is invalid, or the ledger's storage cannot be used."""


class LedgerTampered(LedgerError):
    """A stored record breaks the hash chain: the ledger was changed outside this code."""


class LedgerBusy(LedgerError):
    """Another holder keeps the family's lease for longer than the caller would wait."""


def canonical_json(value: Any) -> str:
    """One text per JSON value: sorted keys, no spaces, no NaN, UTF-8 kept as is."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical_sha256(value: Any) -> str:
    """Hex sha256 of `canonical_json(value)`: equal JSON values hash equal, whatever key order."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def _utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise LedgerError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise LedgerError(
            f"{what} is a naive datetime ({value.isoformat()}): pass an aware one, "
            "e.g. datetime.now(UTC)"
        )
    return value.astimezone(UTC)


def _plain_json(value: dict[str, Any], what: str) -> None:
    if not isinstance(value, dict):
        raise LedgerError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        same = json.loads(json.dumps(value, allow_nan=False)) == value
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"{what} is not plain JSON: {exc}") from exc
    if not same:
        raise LedgerError(
            f"{what} does not survive a JSON round trip (tuples, non-string keys?): "
            "use lists and string keys"
        )


def _non_empty(value: str, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise LedgerError(f"{what} must be a non-empty string, got {value!r}")


def _at_most(value: str, cap: int, what: str) -> None:
    # The audit trail is read by people and shown in UIs: an unbounded field is a mistake
    # (a pasted log) or an attack, and would bloat every record and its hash.
    if isinstance(value, str) and len(value) > cap:
        raise LedgerError(
            f"{what} is {len(value)} characters long, at most {cap} are allowed: shorten it"
        )


@dataclass(frozen=True)
class ReportEntry:
    """One gate evaluation of one family; `report` is the whole gate report JSON, the only
    source of its verdict."""

    report_id: str
    family: str
    created_at: datetime
    uri: str
    dagster_run_id: str
    report: dict[str, Any]

    def __post_init__(self) -> None:
        _non_empty(self.report_id, "report_id")
        _non_empty(self.family, "family")
        object.__setattr__(self, "created_at", _utc(self.created_at, "created_at"))
        _plain_json(self.report, f"report {self.report_id!r}")

    @property
    def report_sha256(self) -> str:
        """The canonical sha256 of `report`: names exactly which report a decision judged."""
        return canonical_sha256(self.report)


@dataclass(frozen=True)
class PromotionEntry:
    """One action on one family's release: a promotion, rollback or refusal, a fault ("failed"),
    or a step of a promotion in progress ("pending", "step", "aborted"). The audit trail."""

    family: str
    action: str
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    report_id: str | None
    dagster_run_id: str
    created_at: datetime
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _non_empty(self.family, "family")
        if self.action not in ACTIONS:
            raise LedgerError(f"action {self.action!r} is not one of {ACTIONS}")
        _non_empty(self.actor, "actor (who acted)")
        _at_most(self.actor, MAX_ACTOR_CHARS, "actor")
        if self.action in ACTIONS_NEEDING_REASON:
            _non_empty(self.reason, f"reason (why this {self.action})")
        elif not isinstance(self.reason, str):
            raise LedgerError(f"reason must be a string (may be empty), got {self.reason!r}")
        _at_most(self.reason, MAX_REASON_CHARS, "reason")
        object.__setattr__(self, "created_at", _utc(self.created_at, "created_at"))
        _plain_json(self.details, "details")


def to_iso(value: datetime) -> str:
    """Fixed-width UTC string: exact to the microsecond and sortable as text."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def entry_record(entry: ReportEntry | PromotionEntry) -> dict[str, Any]:
    """Every field of the entry as plain JSON (created_at as `to_iso`): what the hash covers.
    Backends store exactly these values, so `verify` can rebuild this dict from storage."""
    record = {f.name: getattr(entry, f.name) for f in fields(entry)}
    record["created_at"] = to_iso(entry.created_at)
    return record


def record_fields(table: str) -> tuple[str, ...]:
    """The names of the fields `entry_record` gives for a table's entries."""
    entry_type = {"gate_reports": ReportEntry, "promotions": PromotionEntry}[table]
    return tuple(f.name for f in fields(entry_type))


def chain_hash(table: str, seq: int, prev_hash: str, record: Mapping[str, Any]) -> str:
    """The hash of one chained record; the table and seq are in it, so a record moved to another
    place or table does not verify there."""
    return canonical_sha256(
        {"table": table, "seq": seq, "prev_hash": prev_hash, "record": dict(record)}
    )


def check_limit(limit: int) -> None:
    # MongoDB reads limit(0) as "no limit" and SQLite reads LIMIT -1 the same way: refuse both.
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise LedgerError(f"limit must be a positive integer, got {limit!r}")


def check_actions(actions: tuple[str, ...]) -> None:
    unknown = [a for a in actions if a not in ACTIONS]
    if not actions or unknown:
        raise LedgerError(f"actions must be a non-empty subset of {ACTIONS}, got {actions!r}")


@dataclass(frozen=True)
class ChainRow:
    """One stored record as the backend reads it, unvalidated: `verify` judges it.

    `record` is None when the stored fields cannot even be decoded (`problem` says why)."""

    seq: Any
    prev_hash: Any
    hash: Any
    record: dict[str, Any] | None
    problem: str = ""


@dataclass(frozen=True)
class ChainStatus:
    """What `Ledger.verify` checked: per table, the number of records and the head hash (the
    `hash` of the last record, highest seq; `GENESIS_HASH` for an empty table)."""

    records: Mapping[str, int]
    heads: Mapping[str, str]

    def describe(self) -> str:
        """One line for people: e.g. "gate_reports: 3 records, head 9f...; promotions: ..."."""
        return "; ".join(
            f"{table}: {self.records[table]} record{'' if self.records[table] == 1 else 's'}, "
            f"head {self.heads[table]}"
            for table in self.records
        )


@dataclass(frozen=True)
class Lease:
    """Who holds a family's release lease. `token` identifies one acquisition, so a holder
    never releases a lease that expired and was taken over by someone else."""

    family: str
    holder: str
    host: str
    pid: int
    token: str
    acquired_at: datetime
    expires_at: datetime

    def document(self) -> dict[str, Any]:
        """The stored form (timestamps as `to_iso` strings), the same in both backends."""
        return {
            "family": self.family,
            "holder": self.holder,
            "host": self.host,
            "pid": self.pid,
            "token": self.token,
            "acquired_at": to_iso(self.acquired_at),
            "expires_at": to_iso(self.expires_at),
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Lease:
        return cls(
            family=document["family"],
            holder=document["holder"],
            host=document["host"],
            pid=int(document["pid"]),
            token=document["token"],
            acquired_at=from_iso(document["acquired_at"]),
            expires_at=from_iso(document["expires_at"]),
        )

    def takeable(self, now: datetime) -> bool:
        """Expired, or held by a process of this host that no longer exists."""
        return now > self.expires_at or (
            self.host == socket.gethostname() and not _process_exists(self.pid)
        )


def _process_exists(pid: int) -> bool:
    # Signal 0 checks existence only. A process we may not signal exists (PermissionError); an
    # unreaped zombie still counts as existing, and a pid reused by another process reads as
    # alive: both only make a taker wait for the expiry, never take a live holder's lease.
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _check_seconds(value: float, what: str, allow_zero: bool) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = "zero or more" if allow_zero else "more than zero"
        raise LedgerError(f"{what} must be a finite number of seconds, {bound}; got {value!r}")


class Ledger(ABC):
    """Append-only, hash-chained store of gate reports and promotions (lists are newest first),
    with `verify` to check the chain and `lease` to serialize release actions per family."""

    @abstractmethod
    def add_report(self, entry: ReportEntry) -> None:
        """Append a report; a report_id already present raises LedgerError and changes nothing."""

    @abstractmethod
    def get_report(self, report_id: str) -> ReportEntry:
        """The report with this id; LedgerError naming the id if there is none."""

    @abstractmethod
    def reports(self, family: str | None = None, limit: int = 50) -> list[ReportEntry]:
        """Reports of one family (or all), newest first, at most `limit`."""

    @abstractmethod
    def add_promotion(self, entry: PromotionEntry) -> None:
        """Append an entry of the promotion audit trail (any of ACTIONS)."""

    @abstractmethod
    def promotions(self, family: str | None = None, limit: int = 50) -> list[PromotionEntry]:
        """Promotion entries of one family (or all), newest first, at most `limit`."""

    @abstractmethod
    def latest_promotion(
        self, family: str, actions: tuple[str, ...] = ("promote", "rollback")
    ) -> PromotionEntry | None:
        """Newest entry of `family` whose action is in `actions` (refusals skipped by default)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the ledger must not be used afterwards."""

    @abstractmethod
    def _chain_rows(self, table: str) -> Generator[ChainRow, None, None]:
        """Every stored record of `table`, in ascending seq order, as stored."""

    @abstractmethod
    def _try_lease(self, lease: Lease, now: datetime) -> Lease | None:
        """Atomically store `lease` if the family has none or its lease is `takeable(now)`:
        None when stored, else the lease that blocks."""

    @abstractmethod
    def _release_lease(self, family: str, token: str) -> None:
        """Delete the family's lease if its token is still `token`."""

    def latest_report(self, family: str) -> ReportEntry | None:
        newest = self.reports(family, limit=1)
        return newest[0] if newest else None

    def verify(self) -> ChainStatus:
        """Re-read every record of every table in seq order and check the hash chain: seq runs
        1, 2, 3... without a gap, each prev_hash is the previous record's hash, each hash matches
        the record's content. Raises LedgerTampered at the first record that fails.

        A chain alone cannot detect the newest records removed (truncation): what remains is a
        valid, shorter chain. Nor can it detect a chain rewritten from some record on with fresh
        hashes, since there is no secret. Both change the head hash, so callers anchor the heads
        returned here elsewhere (a release's MLflow tags, a report, a log) and compare."""
        records: dict[str, int] = {}
        heads: dict[str, str] = {}
        for table in TABLES:
            # Closed at once even when verification fails: the exception's traceback would
            # otherwise keep the reader (an open database cursor) alive.
            with closing(self._chain_rows(table)) as rows:
                records[table], heads[table] = _verify_table(table, rows)
        return ChainStatus(records=records, heads=heads)

    def lease(
        self, family: str, holder: str, ttl_seconds: float = 600, wait_seconds: float = 30
    ) -> AbstractContextManager[None]:
        """Hold the family's release lease for the `with` block, across processes and machines.

        Acquired when the family has no lease, or its lease expired (`ttl_seconds` after it was
        taken), or it was taken on this host by a process that no longer exists. Otherwise polls
        every LEASE_POLL_SECONDS until `wait_seconds` passed, then raises LedgerBusy naming the
        holder. Not re-entrant: a second lease of the same family, even from this process, waits
        like any other. On exit the lease is deleted if it is still ours; choose `ttl_seconds`
        longer than the longest action, since an expired lease can be taken over mid-action.
        Times are wall-clock UTC, so machines sharing a ledger need synchronized clocks."""
        _non_empty(family, "family")
        _non_empty(holder, "holder (who holds the lease)")
        _at_most(holder, MAX_HOLDER_CHARS, "holder")
        _check_seconds(ttl_seconds, "ttl_seconds", allow_zero=False)
        _check_seconds(wait_seconds, "wait_seconds", allow_zero=True)
        return self._held(family, holder, ttl_seconds, wait_seconds)

    @contextmanager
    def _held(
        self, family: str, holder: str, ttl_seconds: float, wait_seconds: float
    ) -> Iterator[None]:
        deadline = time.monotonic() + wait_seconds
        token = uuid.uuid4().hex
        while True:
            now = datetime.now(UTC)
            mine = Lease(
                family=family,
                holder=holder,
                host=socket.gethostname(),
                pid=os.getpid(),
                token=token,
                acquired_at=now,
                expires_at=now + timedelta(seconds=ttl_seconds),
            )
            blocking = self._try_lease(mine, now)
            if blocking is None:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise LedgerBusy(
                    f"family {family!r} is busy: {blocking.holder!r} (host {blocking.host}, pid "
                    f"{blocking.pid}) holds its release lease since "
                    f"{to_iso(blocking.acquired_at)} until {to_iso(blocking.expires_at)}; "
                    f"{holder!r} waited {wait_seconds:g} s. Wait for that action to finish and "
                    "retry; a lease whose holder died frees itself at expiry."
                )
            time.sleep(min(LEASE_POLL_SECONDS, left))
        try:
            yield
        finally:
            self._release_lease(family, token)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _tampered(table: str, problem: str) -> LedgerTampered:
    return LedgerTampered(
        f"{table} {problem}. The report ledger was changed outside this code. {_RESTORE}"
    )


def _verify_table(table: str, rows: Iterable[ChainRow]) -> tuple[int, str]:
    expected, head = 1, GENESIS_HASH
    for row in rows:
        seq = row.seq
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise _tampered(table, f"record after record {expected - 1} has no valid seq ({seq!r})")
        if seq < expected:
            raise _tampered(table, f"record {seq} appears more than once")
        if seq > expected:
            gone = (
                f"record {expected} is"
                if seq == expected + 1
                else f"records {expected} to {seq - 1} are"
            )
            where = (
                f"the chain starts at {seq}"
                if expected == 1
                else f"seq goes {expected - 1} -> {seq}"
            )
            raise _tampered(table, f"{gone} missing ({where})")
        if row.prev_hash != head:
            if seq == 1:
                raise _tampered(
                    table,
                    "record 1 does not start the chain (its prev_hash is not 64 zeros): "
                    "records before it were removed or it was rewritten",
                )
            raise _tampered(
                table,
                f"record {seq} does not follow record {seq - 1} (prev_hash differs): records "
                f"were reordered or removed, or record {seq - 1} was rewritten with a new hash",
            )
        if row.record is None:
            raise _tampered(table, f"record {seq} was edited: {row.problem}")
        try:
            computed = chain_hash(table, seq, row.prev_hash, row.record)
        except (TypeError, ValueError) as exc:
            raise _tampered(
                table, f"record {seq} was edited: it is not plain JSON ({exc})"
            ) from None
        if computed != row.hash:
            raise _tampered(
                table, f"record {seq} was edited: its content no longer matches its hash"
            )
        expected, head = seq + 1, computed
    return expected - 1, head
