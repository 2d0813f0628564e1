"""The report ledger in one SQLite file: the embedded default.

Dagster runs steps in subprocesses, so every call opens its own short-lived connection (WAL mode,
30 s busy timeout): nothing is shared between threads or processes but the file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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

SCHEMA_VERSION = 1

# `seq` is the insertion order that breaks created_at ties; AUTOINCREMENT never reuses a value.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS gate_reports (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        report_id TEXT NOT NULL,
        family TEXT NOT NULL,
        created_at TEXT NOT NULL,
        releasable INTEGER NOT NULL,
        failing_gates TEXT NOT NULL,
        uri TEXT NOT NULL,
        dagster_run_id TEXT NOT NULL,
        report TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS gate_reports_report_id ON gate_reports (report_id)",
    "CREATE INDEX IF NOT EXISTS gate_reports_family ON gate_reports (family, created_at, seq)",
    """CREATE TABLE IF NOT EXISTS promotions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
)
_TABLES = {"gate_reports", "promotions", "sqlite_sequence"}
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
            if version not in (0, SCHEMA_VERSION):
                raise LedgerError(
                    f"report ledger {self._path} has schema version {version}, this code reads "
                    f"version {SCHEMA_VERSION}: migrate the file or point the ledger at a new path"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def add_report(self, entry: ReportEntry) -> None:
        try:
            with self._connect() as conn:
                conn.execute(
                    "INSERT INTO gate_reports (report_id, family, created_at, releasable, "
                    "failing_gates, uri, dagster_run_id, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.report_id,
                        entry.family,
                        to_iso(entry.created_at),
                        int(entry.releasable),
                        json.dumps(list(entry.failing_gates)),
                        entry.uri,
                        entry.dagster_run_id,
                        json.dumps(entry.report),
                    ),
                )
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
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO promotions (family, action, from_version, to_version, actor, reason, "
                "report_id, dagster_run_id, created_at, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.family,
                    entry.action,
                    entry.from_version,
                    entry.to_version,
                    entry.actor,
                    entry.reason,
                    entry.report_id,
                    entry.dagster_run_id,
                    to_iso(entry.created_at),
                    json.dumps(entry.details),
                ),
            )

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


def _family_filter(family: str | None) -> tuple[str, tuple[Any, ...]]:
    return ("", ()) if family is None else ("WHERE family = ?", (family,))


def _report(row: sqlite3.Row) -> ReportEntry:
    return ReportEntry(
        report_id=row["report_id"],
        family=row["family"],
        created_at=from_iso(row["created_at"]),
        releasable=bool(row["releasable"]),
        failing_gates=tuple(json.loads(row["failing_gates"])),
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
