"""The embedded instance's SQLite storage with connections kept open
(orchestration/sqlite_storage.py): selected by the written dagster.yaml, shared by processes,
watched live, bounded in open files, new run databases identical to Dagster's."""

import multiprocessing
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from orchestration.settings import Settings
from orchestration.sqlite_storage import (
    OPEN_SHARDS,
    PooledSqliteEventLogStorage,
    PooledSqliteRunStorage,
)


def _instance_home(tmp_path: Path, **env: str) -> Path:
    settings = Settings.from_env({"WORLDFLUX_HOME": str(tmp_path / "home"), **env})
    settings.write_instance_yaml()
    return settings.dagster_home


def _entry(run_id: str, message: str) -> EventLogEntry:
    return EventLogEntry(
        error_info=None,
        level="info",
        user_message=message,
        run_id=run_id,
        timestamp=time.time(),
        dagster_event=None,
    )


def test_the_embedded_instance_keeps_dagsters_files_under_its_home(tmp_path: Path) -> None:
    home = _instance_home(tmp_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PooledSqliteRunStorage)
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        instance.event_log_storage.store_event(_entry("r1", "hello"))
        assert [e.user_message for e in instance.all_logs("r1")] == ["hello"]
    # Dagster's default layout, so `dagster` tools and an older home read the same files.
    assert (home / "history" / "runs.db").exists()
    assert (home / "history" / "runs" / "r1.db").exists()


def test_postgresql_settings_write_no_sqlite_storage(tmp_path: Path) -> None:
    home = _instance_home(tmp_path, DAGSTER_PG_URL="postgresql://u:p@localhost:5432/dagster")
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}
    assert "run_storage" not in config
    assert "event_log_storage" not in config


def _write_then_wait(home: str, run_id: str, count: int, done: Any) -> None:
    with dg.DagsterInstance.from_config(home) as instance:
        for i in range(count):
            instance.event_log_storage.store_event(_entry(run_id, f"event {i}"))
        # The connection stays open (no closing checkpoint) until the reader has seen them all.
        done.wait(300)


def test_a_watcher_sees_another_processs_events_while_it_runs(tmp_path: Path) -> None:
    """The UI's live run log: events arrive while the writing process still holds its
    connection, i.e. from the -wal file, not only at the checkpoint when it closes."""
    home = _instance_home(tmp_path)
    seen: list[str] = []
    arrived = threading.Event()
    count = 5

    def on_event(entry: EventLogEntry, cursor: str) -> None:
        # The watch may also replay what was there before; count only the writer's events.
        if entry.user_message.startswith("event "):
            seen.append(entry.user_message)
        if len(seen) == count:
            arrived.set()

    context = multiprocessing.get_context("spawn")
    done = context.Event()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.store_event(_entry("live", "before"))
        instance.event_log_storage.watch("live", None, on_event)
        writer = context.Process(target=_write_then_wait, args=(str(home), "live", count, done))
        writer.start()
        try:
            # Generous: a spawned writer imports Dagster first, slow on a loaded machine.
            assert arrived.wait(240), f"the watcher saw {seen} while the writer was running"
            assert writer.is_alive()
        finally:
            done.set()
            writer.join(120)
    assert writer.exitcode == 0
    assert seen == [f"event {i}" for i in range(count)]


def _open_databases(directory: Path) -> int:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return sum(1 for t in targets if t.startswith(f"{directory}/") and t.endswith(".db"))


def test_open_files_stay_bounded_and_every_run_reads_back(tmp_path: Path) -> None:
    home = _instance_home(tmp_path)
    runs = [f"run{i}" for i in range(OPEN_SHARDS + 8)]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run_id in runs:
            instance.event_log_storage.store_event(_entry(run_id, run_id))
        assert _open_databases(home / "history" / "runs") <= OPEN_SHARDS
        for run_id in runs:
            assert [e.user_message for e in instance.all_logs(run_id)] == [run_id]
    assert _open_databases(home / "history" / "runs") == 0


def _schema_and_stamp(path: Path) -> tuple[list[tuple[str, str]], list[tuple[str]]]:
    with sqlite3.connect(path) as db:
        schema = db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        stamp = db.execute("SELECT version_num FROM alembic_version").fetchall()
        journal = db.execute("PRAGMA journal_mode").fetchone()
    assert journal == ("wal",)
    return schema, stamp


def test_a_new_runs_database_is_the_one_dagster_would_create(tmp_path: Path) -> None:
    dagster = SqliteEventLogStorage(str(tmp_path / "dagster"))
    ours = PooledSqliteEventLogStorage(str(tmp_path / "ours"))
    for storage in (dagster, ours):
        for run_id in ("a", "b"):  # the first builds the template, the second copies it
            storage.store_event(_entry(run_id, run_id))
        storage.dispose()
    expected = _schema_and_stamp(tmp_path / "dagster" / "b.db")
    assert expected[1], "Dagster stamps its migration revision"
    assert _schema_and_stamp(tmp_path / "ours" / "a.db") == expected
    assert _schema_and_stamp(tmp_path / "ours" / "b.db") == expected
    assert sorted(p.name for p in (tmp_path / "ours").iterdir() if ".new" in p.name) == []


def test_an_existing_database_is_used_not_replaced(tmp_path: Path) -> None:
    first = SqliteEventLogStorage(str(tmp_path))
    second = PooledSqliteEventLogStorage(str(tmp_path))
    first.store_event(_entry("shared", "from the first"))
    second.store_event(_entry("shared", "from the second"))
    assert [e.user_message for e in first.get_logs_for_run("shared")] == [
        "from the first",
        "from the second",
    ]
    first.dispose()
    second.dispose()


def test_without_hard_links_dagsters_own_initialisation_takes_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(source: str, target: str) -> None:
        raise PermissionError(f"no hard links on this file system: {target}")

    monkeypatch.setattr(os, "link", refuse)
    storage = PooledSqliteEventLogStorage(str(tmp_path))
    storage.store_event(_entry("r", "kept"))
    assert [e.user_message for e in storage.get_logs_for_run("r")] == ["kept"]
    assert _schema_and_stamp(tmp_path / "r.db")[1]  # stamped by Dagster's migrations
    assert not [p.name for p in tmp_path.iterdir() if ".new" in p.name]
    storage.dispose()
