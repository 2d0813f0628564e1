"""The report ledger in MongoDB: the production backend.

`from_uri` pings the server at once, so a wrong or unreachable URI fails when the resource is
opened, with the URI (password masked) and the variable to fix, not in the middle of a step.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pymongo
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from release.ledger import (
    Ledger,
    LedgerError,
    PromotionEntry,
    ReportEntry,
    check_actions,
    check_limit,
    from_iso,
    to_iso,
)

_NEWEST_FIRST = [("created_at", pymongo.DESCENDING), ("seq", pymongo.DESCENDING)]
_HIDDEN = {"_id": False, "seq": False}
_PASSWORD = re.compile(r"(://[^:@/]*:)([^@/]*)@")


class MongoLedger(Ledger):
    def __init__(self, database: Database[Any]) -> None:
        self._db = database
        self._reports: Collection[Any] = database["gate_reports"]
        self._promotions: Collection[Any] = database["promotions"]
        self._owned_client: pymongo.MongoClient[Any] | None = None
        self._reports.create_index("report_id", unique=True)
        for collection in (self._reports, self._promotions):
            collection.create_index([("family", pymongo.ASCENDING), *_NEWEST_FIRST])

    @classmethod
    def from_uri(cls, uri: str, database: str = "worldflux", timeout_ms: int = 5000) -> MongoLedger:
        """Connect and ping; `timeout_ms` applies unless the URI sets serverSelectionTimeoutMS."""
        kwargs: dict[str, Any] = {}
        if "serverselectiontimeoutms" not in {k.lower() for k in parse_qs(urlsplit(uri).query)}:
            kwargs["serverSelectionTimeoutMS"] = timeout_ms
        client: pymongo.MongoClient[Any] | None = None
        try:
            client = pymongo.MongoClient(uri, **kwargs)
            client.admin.command("ping")
            ledger = cls(client[database])
        except PyMongoError as exc:
            if client is not None:
                client.close()
            raise LedgerError(
                f"cannot reach MongoDB at {mask_password(uri)}: {_masked(str(exc), uri)} "
                "(check WORLDFLUX_MONGODB_URI)"
            ) from None  # the chained error would print the URI's password again
        ledger._owned_client = client
        return ledger

    def _next_seq(self, collection: str) -> int:
        # A shared counter, not a timestamp: insertion order must hold across processes.
        counter = self._db["counters"].find_one_and_update(
            {"_id": collection},
            {"$inc": {"seq": 1}},
            upsert=True,
            return_document=pymongo.ReturnDocument.AFTER,
        )
        if counter is None:  # cannot happen with upsert + AFTER; keeps the type honest
            raise LedgerError(f"MongoDB returned no {collection} counter: retry the write")
        return int(counter["seq"])

    def add_report(self, entry: ReportEntry) -> None:
        document = {
            "report_id": entry.report_id,
            "family": entry.family,
            "created_at": to_iso(entry.created_at),
            "releasable": entry.releasable,
            "failing_gates": list(entry.failing_gates),
            "uri": entry.uri,
            "dagster_run_id": entry.dagster_run_id,
            "report": entry.report,
            "seq": self._next_seq("gate_reports"),
        }
        try:
            self._reports.insert_one(document)
        except DuplicateKeyError as exc:
            raise LedgerError(
                f"report {entry.report_id!r} is already in the ledger: reports are append-only, "
                "give a new evaluation a new report_id"
            ) from exc

    def get_report(self, report_id: str) -> ReportEntry:
        document = self._reports.find_one({"report_id": report_id}, _HIDDEN)
        if document is None:
            raise LedgerError(f"no report {report_id!r} in the ledger (MongoDB {self._db.name})")
        return _report(document)

    def reports(self, family: str | None = None, limit: int = 50) -> list[ReportEntry]:
        check_limit(limit)
        query = {} if family is None else {"family": family}
        cursor = self._reports.find(query, _HIDDEN).sort(_NEWEST_FIRST).limit(limit)
        return [_report(document) for document in cursor]

    def add_promotion(self, entry: PromotionEntry) -> None:
        document = {
            "family": entry.family,
            "action": entry.action,
            "from_version": entry.from_version,
            "to_version": entry.to_version,
            "actor": entry.actor,
            "reason": entry.reason,
            "report_id": entry.report_id,
            "dagster_run_id": entry.dagster_run_id,
            "created_at": to_iso(entry.created_at),
            "details": entry.details,
            "seq": self._next_seq("promotions"),
        }
        self._promotions.insert_one(document)

    def promotions(self, family: str | None = None, limit: int = 50) -> list[PromotionEntry]:
        check_limit(limit)
        query = {} if family is None else {"family": family}
        cursor = self._promotions.find(query, _HIDDEN).sort(_NEWEST_FIRST).limit(limit)
        return [_promotion(document) for document in cursor]

    def latest_promotion(
        self, family: str, actions: tuple[str, ...] = ("promote", "rollback")
    ) -> PromotionEntry | None:
        check_actions(actions)
        query = {"family": family, "action": {"$in": list(actions)}}
        for document in self._promotions.find(query, _HIDDEN).sort(_NEWEST_FIRST).limit(1):
            return _promotion(document)
        return None

    def close(self) -> None:
        """Close the client if `from_uri` made it; a database passed in belongs to the caller."""
        if self._owned_client is not None:
            self._owned_client.close()
            self._owned_client = None


def mask_password(uri: str) -> str:
    return _PASSWORD.sub(r"\1***@", uri)


def _masked(text: str, uri: str) -> str:
    match = _PASSWORD.search(uri)
    if match is None or not match.group(2):
        return text
    # pymongo's messages may quote the password decoded, so hide both spellings.
    for secret in (match.group(2), unquote(match.group(2))):
        text = text.replace(secret, "***")
    return text


def _report(document: dict[str, Any]) -> ReportEntry:
    return ReportEntry(**{**document, "created_at": from_iso(document["created_at"])})


def _promotion(document: dict[str, Any]) -> PromotionEntry:
    return PromotionEntry(**{**document, "created_at": from_iso(document["created_at"])})
