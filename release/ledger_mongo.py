"""The report ledger in MongoDB: the production backend.

`from_uri` pings the server at once, so a wrong or unreachable URI fails when the resource is
opened, with the URI (password masked) and the variable to fix, not in the middle of a step.

Appends read the last record by seq and insert the next one; a unique index on seq makes a
concurrent writer that took the same seq fail with DuplicateKeyError, and the append retries on
the new last record (bounded by APPEND_ATTEMPTS). A failed insert stores nothing, so seq has no
gap. Leases live in their own `leases` collection (unique on family), taken by an insert or by a
replace conditional on the exact lease judged free. A database holding records written before
the hash chain (no `hash` field) is refused.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pymongo
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from release.ledger import (
    GENESIS_HASH,
    ChainRow,
    Lease,
    Ledger,
    LedgerError,
    PromotionEntry,
    ReportEntry,
    chain_hash,
    check_actions,
    check_limit,
    entry_record,
    from_iso,
    record_fields,
)

_NEWEST_FIRST = [("created_at", pymongo.DESCENDING), ("seq", pymongo.DESCENDING)]
_BY_SEQ = [("seq", pymongo.ASCENDING)]
_HIDDEN = {"_id": False, "seq": False, "prev_hash": False, "hash": False}
# Each retry means another writer appended in between; 50 in a row means something is wrong.
APPEND_ATTEMPTS = 50
_PASSWORD = re.compile(r"(://[^:@/]*:)([^@/]*)@")


class MongoLedger(Ledger):
    def __init__(self, database: Database[Any]) -> None:
        self._db = database
        self._reports: Collection[Any] = database["gate_reports"]
        self._promotions: Collection[Any] = database["promotions"]
        self._leases: Collection[Any] = database["leases"]
        self._owned_client: pymongo.MongoClient[Any] | None = None
        for name, collection in self._chained().items():
            # Any one document tells: the old layout wrote none with a hash, this code none
            # without (O(1), unlike a scan for documents lacking it on every open).
            sample = collection.find_one({}, {"hash": True})
            if sample is not None and "hash" not in sample:
                raise LedgerError(
                    f"MongoDB database {database.name!r} holds {name} records written before the "
                    "hash chain this code requires (tamper-evident records); they cannot be "
                    "upgraded in place: point WORLDFLUX_MONGODB_DATABASE at a new database, or "
                    "move the gate_reports, promotions and counters collections away (keep "
                    "them as an archive of the old audit trail)"
                )
            collection.create_index(_BY_SEQ, unique=True)
            collection.create_index([("family", pymongo.ASCENDING), *_NEWEST_FIRST])
        self._reports.create_index("report_id", unique=True)
        self._leases.create_index("family", unique=True)

    def _chained(self) -> dict[str, Collection[Any]]:
        return {"gate_reports": self._reports, "promotions": self._promotions}

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
        except LedgerError:  # reachable, but not a ledger this code can use
            if client is not None:
                client.close()
            raise
        except PyMongoError as exc:
            if client is not None:
                client.close()
            raise LedgerError(
                f"cannot reach MongoDB at {mask_password(uri)}: {_masked(str(exc), uri)} "
                "(check WORLDFLUX_MONGODB_URI)"
            ) from None  # the chained error would print the URI's password again
        ledger._owned_client = client
        return ledger

    def _last_link(self, table: str) -> tuple[int, str]:
        """The seq and hash of the table's last record: (0, GENESIS_HASH) when it is empty."""
        last = self._chained()[table].find_one(
            {}, {"seq": True, "hash": True}, sort=[("seq", pymongo.DESCENDING)]
        )
        return (0, GENESIS_HASH) if last is None else (int(last["seq"]), str(last["hash"]))

    def _append(self, table: str, record: dict[str, Any]) -> None:
        collection = self._chained()[table]
        for _ in range(APPEND_ATTEMPTS):
            last_seq, prev_hash = self._last_link(table)
            seq = last_seq + 1
            document = {
                **record,
                "seq": seq,
                "prev_hash": prev_hash,
                "hash": chain_hash(table, seq, prev_hash, record),
            }
            try:
                collection.insert_one(document)
                return
            except DuplicateKeyError:
                # seq is the only unique key of promotions; for reports it may be report_id,
                # which a retry cannot fix: the caller tells the two apart.
                if table == "gate_reports" and self._reports.find_one(
                    {"report_id": record["report_id"]}, {"_id": True}
                ):
                    raise
        raise LedgerError(
            f"could not append to {table} in MongoDB {self._db.name!r}: {APPEND_ATTEMPTS} "
            "attempts in a row lost the race for the next seq to other writers; nothing was "
            "written, retry the action (and check what else writes to this ledger)"
        )

    def add_report(self, entry: ReportEntry) -> None:
        try:
            self._append("gate_reports", entry_record(entry))
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
        self._append("promotions", entry_record(entry))

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

    def _chain_rows(self, table: str) -> Generator[ChainRow, None, None]:
        names = record_fields(table)
        for document in self._chained()[table].find({}, {"_id": False}).sort(_BY_SEQ):
            missing = [name for name in names if name not in document]
            record = None if missing else {name: document[name] for name in names}
            yield ChainRow(
                document.get("seq"),
                document.get("prev_hash"),
                document.get("hash"),
                record,
                f"its fields {missing} were removed" if missing else "",
            )

    def _try_lease(self, lease: Lease, now: datetime) -> Lease | None:
        # A free family: insert, the unique index on family lets one taker win. A taken one:
        # replace it only if it is still the exact lease judged takeable (same token), so an
        # expired lease or the lease of a dead process goes to one taker, and a lease renewed
        # or taken by someone else in between is left alone.
        while True:  # each repeat means another taker changed the lease in between: progress
            current = self._leases.find_one({"family": lease.family}, {"_id": False})
            if current is None:
                try:
                    self._leases.insert_one(lease.document())
                    return None
                except DuplicateKeyError:
                    continue  # another taker won: look at its lease
            held = Lease.from_document(current)
            if not held.takeable(now):
                return held
            replaced = self._leases.find_one_and_replace(
                {"family": lease.family, "token": held.token}, lease.document()
            )
            if replaced is not None:
                return None

    def _release_lease(self, family: str, token: str) -> None:
        self._leases.delete_one({"family": family, "token": token})


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
