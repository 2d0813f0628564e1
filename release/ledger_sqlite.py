"""The report ledger in one SQLite file: the embedded default.

Dagster runs steps in subprocesses, so every call opens its own short-lived connection (WAL mode,
30 s busy timeout): nothing is shared between threads or processes but the file. Appends and
lease changes each run in one BEGIN IMMEDIATE transaction, which takes the file's write lock
before reading: the next seq and prev_hash, or whether a lease is free, cannot change between
the read and the write.

Schema version 2 (the hash chain and the `leases` table). A version-1 file is refused: its
records were never hashed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

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

SCHEMA_VERSION = 2

# `seq` is assigned by the ledger inside the appending transaction (see `_append`), never by
# SQLite, so it has no gap; it also breaks created_at ties. The JSON fields are stored as text.
_CHAIN_COLUMNS = """seq INTEGER PRIMARY KEY,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,"""
_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS gate_reports (
        {_CHAIN_COLUMNS}
        report_id TEXT NOT NULL,
        family TEXT NOT NULL,
        created_at TEXT NOT NULL,
        uri TEXT NOT NULL,
        dagster_run_id TEXT NOT NULL,
        report TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS gate_reports_report_id ON gate_reports (report_id)",
    "CREATE INDEX IF NOT EXISTS gate_reports_family ON gate_reports (family, created_at, seq)",
    f"""CREATE TABLE IF NOT EXISTS promotions (
        {_CHAIN_COLUMNS}
        family TEXT NOT NULL,
        action TEXT NOT NULL,
        from_version TEXT,
        to_version TEXT,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        report_id TEXT,
        dagster_run_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        details TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS promotions_family ON promotions (family, created_at, seq)",
    # Mutable state, outside the chain: one row per family while a release action runs.
    """CREATE TABLE IF NOT EXISTS leases (
        family TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        token TEXT NOT NULL,
        acquired_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
)
_TABLES = {"gate_reports", "promotions", "leases", "sqlite_sequence"}
_JSON_FIELDS = {"gate_reports": "report", "promotions": "details"}
_LEASE_FIELDS = ("family", "holder", "host", "pid", "token", "acquired_at", "expires_at")
BUSY_TIMEOUT_SECONDS = 30
_NEWEST_FIRST = "ORDER BY created_at DESC, seq DESC LIMIT ?"


class SqliteLedger(Ledger):
    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._create_schema()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(
                f"cannot open the report ledger {self._path}: {exc} "
                "(is it an SQLite file? point the ledger at another path)"
            ) from exc

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_SECONDS)
        conn.row_factory = sqlite3.Row
        try:
            with conn:  # one transaction: commit on success, roll back on error
                yield conn
        finally:
            conn.close()

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (it sticks to the file). Changing the journal mode needs an
        exclusive lock, and two processes opening a new ledger at once have been seen to fail
        with "database is locked" there (CI, a loaded 2-core machine): skip the switch when the
        file is already in WAL, and retry a refused switch for as long as the busy timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                    return  # another process switched it: no exclusive lock needed
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _create_schema(self) -> None:
        with self._connect() as conn:
            # Outside any transaction (journal_mode cannot change in one).
            self._use_wal(conn)
            # IMMEDIATE: two processes opening a new file must not both create the schema.
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if version == 0 and tables - _TABLES:
                raise LedgerError(
                    f"{self._path} is an SQLite file but not a report ledger (tables: "
                    f"{sorted(tables)}): point the ledger at another path"
                )
            if version == 1:
                # Its records were never hashed: hashing them now would vouch for whatever the
                # file holds today, so there is no honest in-place upgrade.
                raise LedgerError(
                    f"report ledger {self._path} has schema version 1, which predates the hash "
                    "chain this code requires (tamper-evident records) and cannot be upgraded "
                    "in place: move the file away (keep it as an archive of the old audit "
                    "trail) or point WORLDFLUX_HOME at a new folder; the embedded demo "
                    "resets with `rm -rf .worldflux`"
                )
            if version not in (0, SCHEMA_VERSION):
                raise LedgerError(
                    f"report ledger {self._path} has schema version {version}, this code reads "
                    f"version {SCHEMA_VERSION}: migrate the file or point the ledger at a new path"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _append(self, table: str, record: dict[str, Any]) -> None:
        """Chain and insert one record. BEGIN IMMEDIATE takes the write lock before the last
        record is read, so two processes cannot both take the same seq, and a failed insert
        rolls the whole transaction back: no gap."""
        stored = dict(record)
        stored[_JSON_FIELDS[table]] = json.dumps(record[_JSON_FIELDS[table]])
        columns = ("seq", "prev_hash", "hash", *stored)
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            last = conn.execute(
                f"SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, prev_hash = (1, GENESIS_HASH) if last is None else (last[0] + 1, last[1])
            conn.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                (seq, prev_hash, chain_hash(table, seq, prev_hash, record), *stored.values()),
            )

    def add_report(self, entry: ReportEntry) -> None:
        try:
            self._append("gate_reports", entry_record(entry))
        except sqlite3.IntegrityError as exc:
            raise LedgerError(
                f"report {entry.report_id!r} is already in the ledger: reports are append-only, "
                "give a new evaluation a new report_id"
            ) from exc

    def get_report(self, report_id: str) -> ReportEntry:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT * FROM gate_reports WHERE report_id = ?", (report_id,)
            ).fetchone()
        if row is None:
            raise LedgerError(f"no report {report_id!r} in the ledger {self._path}")
        return _report(row)

    def reports(self, family: str | None = None, limit: int = 50) -> list[ReportEntry]:
        check_limit(limit)
        where, args = _family_filter(family)
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT * FROM gate_reports {where} {_NEWEST_FIRST}", (*args, limit)
            ).fetchall()
        return [_report(row) for row in rows]

    def add_promotion(self, entry: PromotionEntry) -> None:
        self._append("promotions", entry_record(entry))

    def promotions(self, family: str | None = None, limit: int = 50) -> list[PromotionEntry]:
        check_limit(limit)
        where, args = _family_filter(family)
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT * FROM promotions {where} {_NEWEST_FIRST}", (*args, limit)
            ).fetchall()
        return [_promotion(row) for row in rows]

    def latest_promotion(
        self, family: str, actions: tuple[str, ...] = ("promote", "rollback")
    ) -> PromotionEntry | None:
        check_actions(actions)
        marks = ", ".join("?" * len(actions))
        with self._connect() as conn:
            row = conn.execute(
                "SELECT * FROM promotions WHERE family = ? "
                f"AND action IN ({marks}) {_NEWEST_FIRST}",
                (family, *actions, 1),
            ).fetchone()
        return None if row is None else _promotion(row)

    def close(self) -> None:
        """Nothing to release: every call closes its own connection."""

    def _chain_rows(self, table: str) -> Generator[ChainRow, None, None]:
        names = record_fields(table)
        with self._connect() as conn:
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY seq"):
                column = _JSON_FIELDS[table]
                try:
                    decoded = json.loads(row[column])
                except (TypeError, ValueError):
                    yield ChainRow(
                        row["seq"],
                        row["prev_hash"],
                        row["hash"],
                        None,
                        f"its {column} is no longer valid JSON",
                    )
                    continue
                record = {name: row[name] for name in names}
                record[column] = decoded
                yield ChainRow(row["seq"], row["prev_hash"], row["hash"], record)

    def _try_lease(self, lease: Lease, now: datetime) -> Lease | None:
        # One IMMEDIATE transaction: the check and the set cannot interleave with another taker.
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT * FROM leases WHERE family = ?", (lease.family,)).fetchone()
            if row is not None:
                current = Lease.from_document(dict(row))
                if not current.takeable(now):
                    return current
            document = lease.document()
            conn.execute(
                f"INSERT OR REPLACE INTO leases ({', '.join(_LEASE_FIELDS)}) "
                f"VALUES ({', '.join('?' * len(_LEASE_FIELDS))})",
                tuple(document[name] for name in _LEASE_FIELDS),
            )
        return None

    def _release_lease(self, family: str, token: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM leases WHERE family = ? AND token = ?", (family, token))


def _family_filter(family: str | None) -> tuple[str, tuple[Any, ...]]:
    return ("", ()) if family is None else ("WHERE family = ?", (family,))


def _report(row: sqlite3.Row) -> ReportEntry:
    return ReportEntry(
        report_id=row["report_id"],
        family=row["family"],
        created_at=from_iso(row["created_at"]),
        uri=row["uri"],
        dagster_run_id=row["dagster_run_id"],
        report=json.loads(row["report"]),
    )


def _promotion(row: sqlite3.Row) -> PromotionEntry:
    return PromotionEntry(
        family=row["family"],
        action=row["action"],
        from_version=row["from_version"],
        to_version=row["to_version"],
        actor=row["actor"],
        reason=row["reason"],
        report_id=row["report_id"],
        dagster_run_id=row["dagster_run_id"],
        created_at=from_iso(row["created_at"]),
        details=json.loads(row["details"]),
    )
