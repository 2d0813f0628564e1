"""One contract, two backends: every ledger test runs on SQLite and on MongoDB (mongomock)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import mongomock
import pymongo
import pytest

from assets.resources import (
    LedgerResource,
    MongoLedgerResource,
    SqliteLedgerResource,
)
from release.ledger import Ledger, LedgerError, PromotionEntry, ReportEntry
from release.ledger_mongo import MongoLedger
from release.ledger_sqlite import SqliteLedger

T0 = datetime(2026, 3, 1, 2, 0, 0, 123456, tzinfo=UTC)


def report(report_id: str, family: str = "dreamer", at: datetime = T0, **kw: Any) -> ReportEntry:
    fields: dict[str, Any] = {
        "releasable": False,
        "failing_gates": ("common.success_rate",),
        "uri": f"file:///store/reports/{family}/{report_id}.json",
        "dagster_run_id": "run-1",
        "report": {
            "success_rate": 0.61,
            "gates": {"common": {"ci_low": 0.5, "ci_high": 0.7, "pass": False}},
            "wf.planner.horizon": 12,
            "seeds": [1, 2, 3],
            "note": None,
        },
    }
    return ReportEntry(report_id=report_id, family=family, created_at=at, **{**fields, **kw})


def promotion(action: str = "promote", family: str = "dreamer", **kw: Any) -> PromotionEntry:
    fields: dict[str, Any] = {
        "from_version": "3",
        "to_version": "4",
        "actor": "alice",
        "reason": "gates passed",
        "report_id": "r1",
        "dagster_run_id": "run-9",
        "created_at": T0,
    }
    return PromotionEntry(family=family, action=action, **{**fields, **kw})


@pytest.fixture(params=["sqlite", "mongo"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Ledger]:
    """Opens a ledger on the same storage each call: SQLite file or one mongomock database."""
    if request.param == "sqlite":
        return lambda: SqliteLedger(tmp_path / "nested" / "ledger.db")
    database: Any = mongomock.MongoClient()["worldflux_test"]  # duck-types pymongo's Database
    return lambda: MongoLedger(database)


@pytest.fixture
def ledger(reopen: Callable[[], Ledger]) -> Iterator[Ledger]:
    with reopen() as opened:
        yield opened


def test_report_round_trip(ledger: Ledger) -> None:
    entry = report("r1", releasable=True, failing_gates=())
    ledger.add_report(entry)
    back = ledger.get_report("r1")
    assert back == entry
    assert back.created_at.tzinfo is UTC
    assert back.created_at.microsecond == 123456


def test_duplicate_report_id_is_refused_and_first_kept(ledger: Ledger) -> None:
    first = report("r1")
    ledger.add_report(first)
    with pytest.raises(LedgerError, match="'r1' is already in the ledger"):
        ledger.add_report(report("r1", family="tdmpc2", releasable=True))
    assert ledger.get_report("r1") == first
    assert ledger.reports() == [first]


def test_latest_report_per_family(ledger: Ledger) -> None:
    assert ledger.latest_report("dreamer") is None
    ledger.add_report(report("d-old", at=T0))
    ledger.add_report(report("d-new", at=T0 + timedelta(hours=1)))
    ledger.add_report(report("t-newest", family="tdmpc2", at=T0 + timedelta(days=1)))
    ledger.add_report(report("d-late-but-older", at=T0 - timedelta(days=1)))
    latest = ledger.latest_report("dreamer")
    assert latest is not None
    assert latest.report_id == "d-new"
    assert ledger.latest_report("jepa") is None


def test_same_timestamp_later_insertion_wins(ledger: Ledger) -> None:
    for report_id in ("b", "a", "c"):
        ledger.add_report(report(report_id))
    latest = ledger.latest_report("dreamer")
    assert latest is not None
    assert latest.report_id == "c"
    assert [r.report_id for r in ledger.reports()] == ["c", "a", "b"]


def test_reports_order_limit_and_family(ledger: Ledger) -> None:
    ledger.add_report(report("d1", at=T0 + timedelta(minutes=1)))
    ledger.add_report(report("t1", family="tdmpc2", at=T0 + timedelta(minutes=2)))
    ledger.add_report(report("d0", at=T0))
    ledger.add_report(report("d2", at=T0 + timedelta(minutes=3)))
    assert [r.report_id for r in ledger.reports()] == ["d2", "t1", "d1", "d0"]
    assert [r.report_id for r in ledger.reports("dreamer")] == ["d2", "d1", "d0"]
    assert [r.report_id for r in ledger.reports("dreamer", limit=2)] == ["d2", "d1"]
    assert ledger.reports("jepa") == []
    with pytest.raises(LedgerError, match="limit"):
        ledger.reports(limit=0)


def test_get_missing_report_names_the_id(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="no report 'nope-42'"):
        ledger.get_report("nope-42")


def test_promotions_round_trip_with_none_and_details(ledger: Ledger) -> None:
    first = promotion(from_version=None, to_version="1", details={"sha256": "ab", "seeds": [0, 1]})
    refused = promotion(
        "refused",
        from_version=None,
        to_version=None,
        reason="",
        report_id=None,
        created_at=T0 + timedelta(seconds=1),
        details={"failing_gates": ["common.success_rate"]},
    )
    other = promotion(family="tdmpc2", created_at=T0 + timedelta(seconds=2))
    for entry in (first, refused, other):
        ledger.add_promotion(entry)
    assert ledger.promotions() == [other, refused, first]
    assert ledger.promotions("dreamer") == [refused, first]
    assert ledger.promotions("dreamer", limit=1) == [refused]
    assert promotion().details == {}


def test_latest_promotion_skips_refusals_by_default(ledger: Ledger) -> None:
    assert ledger.latest_promotion("dreamer") is None
    promote = promotion("promote", created_at=T0)
    rollback = promotion(
        "rollback", from_version="4", to_version="3", reason="bad", created_at=T0 + timedelta(1)
    )
    refused = promotion("refused", reason="gates failed", created_at=T0 + timedelta(2))
    for entry in (
        promote,
        rollback,
        refused,
        promotion(family="tdmpc2", created_at=T0 + timedelta(3)),
    ):
        ledger.add_promotion(entry)
    assert ledger.latest_promotion("dreamer") == rollback
    assert ledger.latest_promotion("dreamer", actions=("refused",)) == refused
    assert ledger.latest_promotion("dreamer", actions=("promote",)) == promote
    with pytest.raises(LedgerError, match="actions"):
        ledger.latest_promotion("dreamer", actions=("promoted",))


def test_invalid_entries_are_refused(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="'promoted' is not one of"):
        promotion("promoted")
    with pytest.raises(LedgerError, match="actor"):
        promotion(actor=" ")
    with pytest.raises(LedgerError, match="reason"):
        promotion("rollback", reason="")
    with pytest.raises(LedgerError, match="naive"):
        promotion(created_at=datetime(2026, 3, 1, 2, 0))
    with pytest.raises(LedgerError, match="naive"):
        report("r1", at=datetime(2026, 3, 1, 2, 0))
    with pytest.raises(LedgerError, match="plain JSON"):
        report("r1", report={"at": T0})
    with pytest.raises(LedgerError, match="JSON round trip"):
        report("r1", report={"seeds": (1, 2)})
    assert ledger.reports() == []
    assert ledger.promotions() == []


def test_other_time_zones_become_utc(ledger: Ledger) -> None:
    tokyo = T0.astimezone(timezone(timedelta(hours=9)))
    entry = report("r1", at=tokyo, failing_gates=["a", "b"])
    assert entry.created_at.tzinfo is UTC
    assert entry.created_at == T0
    assert entry.failing_gates == ("a", "b")
    ledger.add_report(entry)
    assert ledger.get_report("r1") == entry


def test_everything_persists_across_reopen(reopen: Callable[[], Ledger]) -> None:
    reports = [report("r1"), report("r2", family="tdmpc2", at=T0 + timedelta(1))]
    promotions = [promotion(), promotion("refused", reason="", created_at=T0 + timedelta(1))]
    with reopen() as ledger:
        for r in reports:
            ledger.add_report(r)
        for p in promotions:
            ledger.add_promotion(p)
    with reopen() as ledger:
        assert ledger.reports() == reports[::-1]
        assert ledger.promotions() == promotions[::-1]
        # The insertion sequence carries on after reopening: ties still go to the newest write.
        ledger.add_report(report("r3", at=T0))
        latest = ledger.latest_report("dreamer")
        assert latest is not None
        assert latest.report_id == "r3"


def test_sqlite_ledgers_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with SqliteLedger(path) as a, SqliteLedger(path) as b:
        a.add_report(report("r1"))
        b.add_promotion(promotion())
        assert b.get_report("r1") == report("r1")
        assert a.promotions() == [promotion()]
        with pytest.raises(LedgerError, match="already in the ledger"):
            b.add_report(report("r1"))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _append_promotions(path: Path, actor: str) -> None:
    with SqliteLedger(path) as ledger:
        for _ in range(25):
            ledger.add_promotion(promotion(actor=actor))


def test_sqlite_concurrent_processes_lose_no_write(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    context = multiprocessing.get_context("spawn")  # as Dagster's multiprocess executor does
    workers = [context.Process(target=_append_promotions, args=(path, a)) for a in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    actors = [p.actor for p in SqliteLedger(path).promotions(limit=100)]
    assert sorted(actors) == ["a"] * 25 + ["b"] * 25


def test_sqlite_other_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    SqliteLedger(path).add_report(report("r1"))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(LedgerError, match=r"schema version 99.*migrate"):
        SqliteLedger(path)


def test_sqlite_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "mlflow.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE experiments (id INTEGER)")
    with pytest.raises(LedgerError, match="not a report ledger"):
        SqliteLedger(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(LedgerError, match="cannot open the report ledger"):
        SqliteLedger(garbage)


def test_mongo_unreachable_fails_fast_with_masked_password() -> None:
    uri = "mongodb://ledger:s3cr3t-pw@127.0.0.1:1/?serverSelectionTimeoutMS=300"
    started = time.monotonic()
    with pytest.raises(LedgerError, match="WORLDFLUX_MONGODB_URI") as caught:
        MongoLedger.from_uri(uri)
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "cannot reach MongoDB at mongodb://ledger:***@127.0.0.1:1/" in message
    assert "s3cr3t-pw" not in message
    assert caught.value.__cause__ is None


def test_resources_open_their_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SqliteLedgerResource(path=str(tmp_path / "r" / "ledger.db")).open() as ledger:
        assert isinstance(ledger, SqliteLedger)
        assert (tmp_path / "r" / "ledger.db").is_file()
    unreachable = MongoLedgerResource(uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200")
    with pytest.raises(LedgerError, match="cannot reach MongoDB"):
        unreachable.open()
    monkeypatch.setattr(pymongo, "MongoClient", mongomock.MongoClient)
    with MongoLedgerResource(uri="mongodb://db.example:27017").open() as ledger:
        assert isinstance(ledger, MongoLedger)
        ledger.add_report(report("r1"))
        assert ledger.get_report("r1") == report("r1")
    with pytest.raises(NotImplementedError):
        LedgerResource().open()
