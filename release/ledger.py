"""The report ledger: an append-only record of gate reports and of the promotion audit trail.

MLflow aliases keep no history, so the ledger is where "who promoted what, when, why, from which
version to which" lives. Two backends implement one contract: SQLite (embedded default) and
MongoDB (production); `tests/release/test_ledger_contract.py` runs the same suite on both.

Timestamps: `created_at` must be timezone-aware. A naive datetime is refused, because guessing
whether it meant local time or UTC would silently reorder the audit trail; an aware datetime in
another zone is converted to UTC. Backends store it as a fixed-width ISO-8601 UTC string with
microseconds, so entries read back compare equal (MongoDB dates would keep milliseconds only)
and the strings sort in time order. "Newest" means latest `created_at`, ties broken by insertion
order (each backend keeps an insertion sequence number).

`report` and `details` must be plain JSON (string keys; no NaN, tuples, datetimes...): what is
stored must be what is read back, in both backends.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

ACTIONS = ("promote", "rollback", "refused")


class LedgerError(RuntimeError):
    """A ledger entry or operation is invalid, or the ledger's storage cannot be used."""


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


@dataclass(frozen=True)
class ReportEntry:
    """One gate evaluation of one family; `report` is the whole gate report JSON."""

    report_id: str
    family: str
    created_at: datetime
    releasable: bool
    failing_gates: tuple[str, ...]
    uri: str
    dagster_run_id: str
    report: dict[str, Any]

    def __post_init__(self) -> None:
        _non_empty(self.report_id, "report_id")
        _non_empty(self.family, "family")
        object.__setattr__(self, "created_at", _utc(self.created_at, "created_at"))
        # A list passed by a caller would never equal the tuple read back.
        object.__setattr__(self, "failing_gates", tuple(self.failing_gates))
        _plain_json(self.report, f"report {self.report_id!r}")


@dataclass(frozen=True)
class PromotionEntry:
    """One promotion, rollback or refused promotion of one family: the audit trail."""

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
        if self.action != "refused":
            _non_empty(self.reason, f"reason (why this {self.action})")
        object.__setattr__(self, "created_at", _utc(self.created_at, "created_at"))
        _plain_json(self.details, "details")


def to_iso(value: datetime) -> str:
    """Fixed-width UTC string: exact to the microsecond and sortable as text."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def check_limit(limit: int) -> None:
    # MongoDB reads limit(0) as "no limit" and SQLite reads LIMIT -1 the same way: refuse both.
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise LedgerError(f"limit must be a positive integer, got {limit!r}")


def check_actions(actions: tuple[str, ...]) -> None:
    unknown = [a for a in actions if a not in ACTIONS]
    if not actions or unknown:
        raise LedgerError(f"actions must be a non-empty subset of {ACTIONS}, got {actions!r}")


class Ledger(ABC):
    """Append-only store of gate reports and promotions; lists are newest first."""

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
        """Append a promotion, rollback or refused promotion."""

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

    def latest_report(self, family: str) -> ReportEntry | None:
        newest = self.reports(family, limit=1)
        return newest[0] if newest else None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
