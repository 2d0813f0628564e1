"""One contract, two backends: every ledger test runs on SQLite and on MongoDB (mongomock).

Tamper tests change the storage directly (raw SQL, raw mongomock updates; `ledger_faults`), as
someone with access to the database but not going through this code would."""

from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
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
from release.ledger import (
    ACTIONS,
    ACTIONS_NEEDING_REASON,
    GENESIS_HASH,
    MAX_ACTOR_CHARS,
    MAX_REASON_CHARS,
    ChainStatus,
    Ledger,
    LedgerBusy,
    LedgerError,
    LedgerTampered,
    PromotionEntry,
    ReportEntry,
    canonical_sha256,
    entry_record,
)
from release.ledger_mongo import APPEND_ATTEMPTS, MongoLedger
from release.ledger_sqlite import SqliteLedger
from tests.release.ledger_faults import Storage, append_promotions, hold_lease, kill_hard

T0 = datetime(2026, 3, 1, 2, 0, 0, 123456, tzinfo=UTC)


def report(report_id: str, family: str = "dreamer", at: datetime = T0, **kw: Any) -> ReportEntry:
    fields: dict[str, Any] = {
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
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """An SQLite file or one mongomock database, with raw access to tamper with it."""
    if request.param == "sqlite":
        return Storage("sqlite", path=tmp_path / "nested" / "ledger.db")
    database: Any = mongomock.MongoClient()["worldflux_test"]  # duck-types pymongo's Database
    return Storage("mongo", database=database)


@pytest.fixture
def reopen(storage: Storage) -> Callable[[], Ledger]:
    """Opens a ledger on the same storage each call."""
    return storage.open


@pytest.fixture
def ledger(reopen: Callable[[], Ledger]) -> Iterator[Ledger]:
    with reopen() as opened:
        yield opened


def test_report_round_trip(ledger: Ledger) -> None:
    entry = report("r1")
    ledger.add_report(entry)
    back = ledger.get_report("r1")
    assert back == entry
    assert back.created_at.tzinfo is UTC
    assert back.created_at.microsecond == 123456


def test_duplicate_report_id_is_refused_and_first_kept(ledger: Ledger) -> None:
    first = report("r1")
    ledger.add_report(first)
    with pytest.raises(LedgerError, match="'r1' is already in the ledger"):
        ledger.add_report(report("r1", family="tdmpc2", uri="file:///elsewhere.json"))
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
    entry = report("r1", at=tokyo)
    assert entry.created_at.tzinfo is UTC
    assert entry.created_at == T0
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


def test_sqlite_concurrent_processes_lose_no_write_and_keep_one_chain(tmp_path: Path) -> None:
    """Two real processes append to one file at once: no write lost, seq 1..60 without a gap
    or a duplicate, and the chain verifies (each took the write lock before reading the last
    record)."""
    path = tmp_path / "ledger.db"
    SqliteLedger(path)  # create the schema first: the test is about appends, not creation
    context = multiprocessing.get_context("spawn")  # as Dagster's multiprocess executor does
    start = context.Barrier(2)  # both start appending together, so the appends overlap
    workers = [
        context.Process(target=append_promotions, args=(path, actor, 30, start)) for actor in "ab"
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    with SqliteLedger(path) as ledger:
        actors = [p.actor for p in ledger.promotions(limit=100)]
        status = ledger.verify()
    assert sorted(actors) == ["a"] * 30 + ["b"] * 30
    assert status.records == {"gate_reports": 0, "promotions": 60}
    rows = Storage("sqlite", path=path).rows("promotions")
    assert [row["seq"] for row in rows] == list(range(1, 61))
    assert status.heads["promotions"] == rows[-1]["hash"]


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


# --- Entries: actions, caps, the report's canonical hash --------------------------------------


def test_canonical_sha256_is_the_sha256_of_canonical_json() -> None:
    value = {"b": [1, 2.5, None], "a": "é", "c": {"z": True, "y": "x"}}
    text = '{"a":"é","b":[1,2.5,null],"c":{"y":"x","z":true}}'
    assert canonical_sha256(value) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert canonical_sha256(dict(reversed(value.items()))) == canonical_sha256(value)
    with pytest.raises(ValueError, match="JSON compliant"):
        canonical_sha256({"x": float("nan")})


def test_report_sha256_names_the_report_content(ledger: Ledger) -> None:
    entry = report("r1")
    assert entry.report_sha256 == canonical_sha256(entry.report)
    ledger.add_report(entry)
    assert ledger.get_report("r1").report_sha256 == entry.report_sha256
    assert report("r2").report_sha256 == entry.report_sha256  # same report, same hash
    edited = report("r3", report={**entry.report, "success_rate": 0.62})
    assert edited.report_sha256 != entry.report_sha256


def test_every_action_is_stored_and_only_releases_need_a_reason(ledger: Ledger) -> None:
    assert set(ACTIONS_NEEDING_REASON) == {"promote", "rollback", "reconcile"}
    entries = [
        promotion(action, reason="why" if action in ACTIONS_NEEDING_REASON else "")
        for action in ACTIONS
    ]
    for entry in entries:
        ledger.add_promotion(entry)
    assert ledger.promotions(limit=len(ACTIONS)) == entries[::-1]
    step = entries[ACTIONS.index("step")]
    assert ledger.latest_promotion("dreamer", actions=("pending", "step")) == step
    for action in ACTIONS_NEEDING_REASON:
        with pytest.raises(LedgerError, match=f"reason \\(why this {action}\\)"):
            promotion(action, reason=" ")


def test_actor_and_reason_lengths_are_capped() -> None:
    promotion(actor="a" * MAX_ACTOR_CHARS, reason="r" * MAX_REASON_CHARS)  # at the cap: fine
    assert (MAX_ACTOR_CHARS, MAX_REASON_CHARS) == (128, 2000)
    with pytest.raises(LedgerError, match="actor is 129 characters long, at most 128 are"):
        promotion(actor="a" * 129)
    with pytest.raises(LedgerError, match="reason is 2001 characters long, at most 2000 are"):
        promotion("refused", reason="r" * 2001)


# --- The hash chain -----------------------------------------------------------------------


def test_records_are_chained_with_contiguous_seq(storage: Storage) -> None:
    """seq 1, 2, 3...; prev_hash links each record to the one before (64 zeros for the first);
    hash is the sha256 of the canonical JSON of table, seq, prev_hash and every entry field.
    A refused append (duplicate report_id) leaves no gap."""
    entries = [promotion(), promotion("refused", reason=""), promotion(actor="bob")]
    with storage.open() as ledger:
        for entry in entries:
            ledger.add_promotion(entry)
        ledger.add_report(report("r1"))
        with pytest.raises(LedgerError, match="already in the ledger"):
            ledger.add_report(report("r1"))
        ledger.add_report(report("r2"))
    rows = storage.rows("promotions")
    assert [row["seq"] for row in rows] == [1, 2, 3]
    assert [row["seq"] for row in storage.rows("gate_reports")] == [1, 2]
    prev = GENESIS_HASH
    for row, entry in zip(rows, entries, strict=True):
        assert row["prev_hash"] == prev
        record = entry_record(entry)
        assert record["created_at"] == "2026-03-01T02:00:00.123456+00:00"
        assert {k: row[k] for k in record} == record  # storage holds exactly what is hashed
        text = json.dumps(
            {"table": "promotions", "seq": row["seq"], "prev_hash": prev, "record": record},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
        assert row["hash"] == hashlib.sha256(text.encode()).hexdigest()
        prev = row["hash"]


def test_an_untouched_ledger_verifies(storage: Storage) -> None:
    with storage.open() as ledger:
        empty = ledger.verify()
        assert empty == ChainStatus(
            records={"gate_reports": 0, "promotions": 0},
            heads={"gate_reports": GENESIS_HASH, "promotions": GENESIS_HASH},
        )
        ledger.add_report(report("r1"))
        ledger.add_report(report("r2", report={"nested": {"é": [1.5, None]}}))
        for n in range(3):
            ledger.add_promotion(promotion(to_version=str(n), details={"n": n}))
    with storage.open() as ledger:  # a fresh reader verifies what another one wrote
        status = ledger.verify()
    assert status.records == {"gate_reports": 2, "promotions": 3}
    assert status.heads == {t: storage.rows(t)[-1]["hash"] for t in ("gate_reports", "promotions")}
    assert "promotions: 3 records, head " + status.heads["promotions"] in status.describe()


def _three_promotions(storage: Storage) -> Ledger:
    ledger = storage.open()
    for n in range(3):
        ledger.add_promotion(promotion(to_version=str(n + 4), created_at=T0 + timedelta(n)))
    return ledger


def _tampered(ledger: Ledger, message: str) -> str:
    with pytest.raises(LedgerTampered, match=message) as caught:
        ledger.verify()
    text = str(caught.value)
    assert "Restore the ledger from a backup" in text
    assert "`python -m orchestration status --verify` passes" in text
    return text


@pytest.mark.parametrize(
    "changes",
    [
        {"to_version": "99"},
        {"actor": "mallory"},
        {"action": "rollback"},
        {"created_at": "2026-03-01T02:00:00.123457+00:00"},
        {"details": {"forged": True}},
        {"hash": "f" * 64},
    ],
    ids=["to_version", "actor", "action", "created_at", "details", "hash"],
)
def test_an_edited_promotion_is_detected(storage: Storage, changes: dict[str, Any]) -> None:
    ledger = _three_promotions(storage)
    ledger.verify()
    storage.update("promotions", 2, **changes)
    _tampered(ledger, "promotions record 2 was edited: its content no longer matches its hash")


def test_an_edited_report_is_detected(storage: Storage) -> None:
    ledger = storage.open()
    ledger.add_report(report("r1"))
    ledger.add_report(report("r2"))
    edited = copy.deepcopy(report("r1").report)
    edited["gates"]["common"]["pass"] = True
    storage.update("gate_reports", 1, report=edited)
    _tampered(ledger, "gate_reports record 1 was edited: its content no longer matches its hash")
    assert ledger.get_report("r1").report == edited  # reads do not verify: callers do


def test_a_deleted_middle_record_is_detected(storage: Storage) -> None:
    ledger = _three_promotions(storage)
    storage.delete("promotions", 2)
    _tampered(ledger, r"promotions record 2 is missing \(seq goes 1 -> 3\)")


def test_a_deleted_first_record_is_detected(storage: Storage) -> None:
    ledger = _three_promotions(storage)
    storage.delete("promotions", 1)
    _tampered(ledger, r"promotions record 1 is missing \(the chain starts at 2\)")


def test_swapped_records_are_detected(storage: Storage) -> None:
    """Records 2 and 3 trade places, each with its own content, prev_hash and hash: each still
    matches its own hash, but record 2 no longer follows record 1."""
    ledger = _three_promotions(storage)
    storage.swap("promotions", 2, 3)
    assert [row["to_version"] for row in storage.rows("promotions")] == ["4", "6", "5"]
    _tampered(
        ledger,
        r"promotions record 2 does not follow record 1 \(prev_hash differs\): records were "
        "reordered or removed",
    )


def test_truncation_passes_verify_but_moves_the_head(storage: Storage) -> None:
    """The limit a pure chain has: removing the newest records leaves a valid chain. Only the
    head hash, anchored elsewhere by the caller, shows it."""
    ledger = _three_promotions(storage)
    anchored = ledger.verify().heads["promotions"]
    storage.delete("promotions", 3)
    status = ledger.verify()
    assert status.records["promotions"] == 2
    assert status.heads["promotions"] != anchored


# --- Schema and layout of older ledgers ---------------------------------------------------


def test_sqlite_version_1_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "CREATE TABLE gate_reports (seq INTEGER PRIMARY KEY AUTOINCREMENT, report_id TEXT, "
            "releasable INTEGER, failing_gates TEXT, report TEXT)"
        )
        conn.execute("PRAGMA user_version=1")
    with pytest.raises(LedgerError, match="predates the hash chain") as caught:
        SqliteLedger(path)
    assert "WORLDFLUX_HOME" in str(caught.value)
    assert "`rm -rf .worldflux`" in str(caught.value)


def test_mongo_records_without_hash_are_refused() -> None:
    database: Any = mongomock.MongoClient()["worldflux_old"]
    database["promotions"].insert_one({"family": "dreamer", "action": "promote", "seq": 1})
    with pytest.raises(LedgerError, match="before the hash chain") as caught:
        MongoLedger(database)
    assert "WORLDFLUX_MONGODB_DATABASE" in str(caught.value)


def test_mongo_append_retries_when_another_writer_took_the_seq(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another writer appends between our read of the last record and our insert: the unique
    index on seq refuses ours, and the append retries on the new last record."""
    ledger = MongoLedger(mongomock.MongoClient()["worldflux_race"])
    ledger.add_promotion(promotion(actor="other"))
    read = ledger._last_link
    looks: list[str] = []

    def stale_first(table: str) -> tuple[int, str]:
        looks.append(table)
        return (0, GENESIS_HASH) if len(looks) == 1 else read(table)

    monkeypatch.setattr(ledger, "_last_link", stale_first)
    ledger.add_promotion(promotion(actor="me"))
    assert looks == ["promotions", "promotions"]
    assert [p.actor for p in ledger.promotions()] == ["me", "other"]
    assert ledger.verify().records["promotions"] == 2

    monkeypatch.setattr(ledger, "_last_link", lambda table: (0, GENESIS_HASH))
    with pytest.raises(LedgerError, match=f"{APPEND_ATTEMPTS} attempts in a row lost the race"):
        ledger.add_promotion(promotion(actor="never"))
    assert len(ledger.promotions()) == 2


# --- Leases -------------------------------------------------------------------------------


def test_a_held_lease_makes_others_wait_then_fail_busy(ledger: Ledger) -> None:
    with ledger.lease("dreamer", "alice (promote)"):
        started = time.monotonic()
        with (
            pytest.raises(
                LedgerBusy, match="family 'dreamer' is busy: 'alice \\(promote\\)'"
            ) as caught,
            ledger.lease("dreamer", "bob", wait_seconds=0.3),
        ):
            pass
        waited = time.monotonic() - started
        assert 0.3 <= waited < 3
        message = str(caught.value)
        assert f"pid {os.getpid()}" in message
        assert "holds its release lease since 20" in message
        assert "'bob' waited 0.3 s. Wait for that action to finish and retry" in message
    with ledger.lease("dreamer", "bob", wait_seconds=0):  # released on exit: free at once
        pass


def test_a_waiting_holder_gets_the_lease_when_it_is_released(ledger: Ledger) -> None:
    first = ExitStack()
    first.enter_context(ledger.lease("dreamer", "alice"))
    releaser = threading.Timer(0.4, first.close)
    releaser.start()
    started = time.monotonic()
    try:
        with ledger.lease("dreamer", "bob", wait_seconds=10):
            waited = time.monotonic() - started
    finally:
        releaser.join()
    assert 0.3 <= waited < 5


def test_an_expired_lease_is_taken_over_and_kept_by_its_new_holder(
    storage: Storage, ledger: Ledger
) -> None:
    first = ExitStack()
    first.enter_context(ledger.lease("dreamer", "alice", ttl_seconds=0.2))
    time.sleep(0.3)
    with ledger.lease("dreamer", "bob", wait_seconds=0):
        first.close()  # alice's late exit must not release bob's lease
        assert storage.lease_holders() == {"dreamer": "bob"}
        with (
            pytest.raises(LedgerBusy, match="'bob'"),
            ledger.lease("dreamer", "carol", wait_seconds=0),
        ):
            pass
    assert storage.lease_holders() == {}


def test_the_lease_of_a_killed_process_of_this_host_is_taken_over(
    storage: Storage, ledger: Ledger
) -> None:
    """A holder's process SIGKILLed: its unexpired lease goes at once, not after the ttl."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lease = {
        "family": "dreamer",
        "holder": "killed",
        "host": socket.gethostname(),
        "pid": child.pid,
        "token": "t-killed",
        "acquired_at": datetime.now(UTC),
        "expires_at": datetime.now(UTC) + timedelta(hours=1),
    }
    try:
        storage.put_lease(**lease)
        with (
            pytest.raises(LedgerBusy, match="'killed'"),
            ledger.lease("dreamer", "bob", wait_seconds=0),
        ):
            pass  # while it lives: busy
        kill_hard(child.pid)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()  # reaped: an unreaped zombie still counts as existing
    with ledger.lease("dreamer", "bob", wait_seconds=0):
        assert storage.lease_holders() == {"dreamer": "bob"}
    # The same dead pid on another host says nothing about that host's process: still busy.
    storage.put_lease(**{**lease, "host": "elsewhere.example"})
    with (
        pytest.raises(LedgerBusy, match=r"host elsewhere\.example"),
        ledger.lease("dreamer", "bob", wait_seconds=0),
    ):
        pass


def test_sqlite_lease_of_a_sigkilled_subprocess_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ready = tmp_path / "ready"
    SqliteLedger(path)
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=hold_lease, args=(path, "dreamer", "child", ready))
    child.start()
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.is_alive(), "the child died before it held the lease"
            assert time.monotonic() < deadline, "the child never held the lease"
            time.sleep(0.05)
        with SqliteLedger(path) as ledger:
            with (
                pytest.raises(LedgerBusy, match=f"'child' \\(host .*, pid {child.pid}\\)"),
                ledger.lease("dreamer", "parent", wait_seconds=0.2),
            ):
                pass
            assert child.pid is not None
            kill_hard(child.pid)
            child.join(30)  # reaps it
            assert child.exitcode == -signal.SIGKILL
            with ledger.lease("dreamer", "parent", wait_seconds=0):
                assert Storage("sqlite", path=path).lease_holders() == {"dreamer": "parent"}
            assert ledger.verify().records == {"gate_reports": 0, "promotions": 0}
    finally:
        if child.is_alive():
            child.kill()
            child.join(30)


def test_leases_of_different_families_are_independent(storage: Storage, ledger: Ledger) -> None:
    with ledger.lease("dreamer", "alice"), ledger.lease("tdmpc2", "bob", wait_seconds=0):
        assert storage.lease_holders() == {"dreamer": "alice", "tdmpc2": "bob"}
        # A lease is mutable state, not a record: the chain is untouched.
        assert ledger.verify().records == {"gate_reports": 0, "promotions": 0}
    assert storage.lease_holders() == {}


def test_lease_arguments_are_checked_before_waiting(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="family must be a non-empty string"):
        ledger.lease(" ", "alice")
    with pytest.raises(LedgerError, match="holder"):
        ledger.lease("dreamer", "")
    with pytest.raises(LedgerError, match="ttl_seconds must be a finite number"):
        ledger.lease("dreamer", "alice", ttl_seconds=0)
    with pytest.raises(LedgerError, match="wait_seconds must be a finite number"):
        ledger.lease("dreamer", "alice", wait_seconds=float("inf"))
