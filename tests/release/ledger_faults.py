"""Raw access to a ledger's storage, bypassing the ledger: how the contract tests tamper with it.

Also the targets of the subprocesses of the SQLite tests. They live here, not in the test module,
so a spawned child imports only the SQLite backend (not Dagster and the rest of the test module).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from release.ledger import Ledger, PromotionEntry
from release.ledger_mongo import MongoLedger
from release.ledger_sqlite import SqliteLedger

_JSON_COLUMNS = {"report", "details"}


@dataclass(frozen=True)
class Storage:
    """One ledger's storage: an SQLite file or one (mongomock) MongoDB database."""

    kind: str
    path: Path | None = None
    database: Any = None

    def open(self) -> Ledger:
        if self.kind == "sqlite":
            assert self.path is not None
            return SqliteLedger(self.path)
        return MongoLedger(self.database)

    def _sql(self, statement: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        assert self.path is not None
        with closing(sqlite3.connect(self.path)) as conn:
            conn.row_factory = sqlite3.Row
            with conn:
                return conn.execute(statement, args).fetchall()

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every stored record with its seq, prev_hash and hash, in seq order, JSON decoded."""
        if self.kind == "sqlite":
            rows = [dict(r) for r in self._sql(f"SELECT * FROM {table} ORDER BY seq")]
            for row in rows:
                for column in _JSON_COLUMNS & row.keys():
                    row[column] = json.loads(row[column])
            return rows
        return list(self.database[table].find({}, {"_id": False}).sort("seq", 1))

    def update(self, table: str, seq: int, **changes: Any) -> None:
        """Overwrite fields of record `seq` (JSON fields given as Python values)."""
        if self.kind == "sqlite":
            values = {k: json.dumps(v) if k in _JSON_COLUMNS else v for k, v in changes.items()}
            assignments = ", ".join(f"{column} = ?" for column in values)
            self._sql(f"UPDATE {table} SET {assignments} WHERE seq = ?", (*values.values(), seq))
        else:
            result = self.database[table].update_one({"seq": seq}, {"$set": changes})
            assert result.matched_count == 1
        # A raw edit that missed its record would make a tamper test pass for nothing.
        assert any(row["seq"] == seq for row in self.rows(table))

    def delete(self, table: str, seq: int) -> None:
        if self.kind == "sqlite":
            self._sql(f"DELETE FROM {table} WHERE seq = ?", (seq,))
        else:
            assert self.database[table].delete_one({"seq": seq}).deleted_count == 1

    def swap(self, table: str, a: int, b: int) -> None:
        """Records a and b trade places: each keeps its content, prev_hash and hash, but takes
        the other's seq, so reading in seq order meets them in the other order."""
        parked = -1  # seq is unique in both backends: park one record while moving the other
        for old, new in ((a, parked), (b, a), (parked, b)):
            if self.kind == "sqlite":
                self._sql(f"UPDATE {table} SET seq = ? WHERE seq = ?", (new, old))
            else:
                self.database[table].update_one({"seq": old}, {"$set": {"seq": new}})

    def put_lease(self, **document: Any) -> None:
        """Store a lease as if some process had taken it (timestamps as datetimes)."""
        stored = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in document.items()}
        if self.kind == "sqlite":
            columns = ", ".join(stored)
            marks = ", ".join("?" * len(stored))
            self._sql(
                f"INSERT OR REPLACE INTO leases ({columns}) VALUES ({marks})",
                tuple(stored.values()),
            )
        else:
            self.database["leases"].replace_one({"family": stored["family"]}, stored, upsert=True)

    def lease_holders(self) -> dict[str, str]:
        """family -> holder of every stored lease."""
        if self.kind == "sqlite":
            return {r["family"]: r["holder"] for r in self._sql("SELECT * FROM leases")}
        return {d["family"]: d["holder"] for d in self.database["leases"].find()}


def append_promotions(path: Path, actor: str, count: int, start: Any) -> None:
    """Subprocess target: append `count` promotions by `actor` to the SQLite ledger at `path`,
    once every writer passed the `start` barrier (so that their appends overlap)."""
    with SqliteLedger(path) as ledger:
        start.wait(60)
        for _ in range(count):
            ledger.add_promotion(
                PromotionEntry(
                    family="dreamer",
                    action="promote",
                    from_version="3",
                    to_version="4",
                    actor=actor,
                    reason="concurrent append",
                    report_id=None,
                    dagster_run_id="run-concurrent",
                    created_at=datetime.now(UTC),
                )
            )


def hold_lease(path: Path, family: str, holder: str, ready: Path) -> None:
    """Subprocess target: take the family's lease, say so by creating `ready`, then hold it
    until killed (a minute at most, so a failed test leaves no process behind for long)."""
    with SqliteLedger(path) as ledger, ledger.lease(family, holder, ttl_seconds=600):
        ready.write_text(str(os.getpid()))
        time.sleep(60)


def kill_hard(pid: int) -> None:
    """SIGKILL: the holder gets no chance to release its lease."""
    os.kill(pid, signal.SIGKILL)
