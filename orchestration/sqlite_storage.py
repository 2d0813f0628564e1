"""Dagster's SQLite run and event storage, keeping connections open.

Dagster's own SQLite storages build an engine with no pool for every statement: each event
opens the file, writes, and closes it again, and in WAL mode the last connection to close
checkpoints the log into the database (an fsync). Measured here that is ~4.4 ms per event
against ~0.9 ms with the connection kept; a gate report writes ~70 events, so at demo scale
this alone was several points of orchestration overhead (docs/orchestration.md#measured).

These subclasses change only where connections come from: one pooled engine per database
file, created on first use and disposed when the instance closes; a new run's database is
copied from an empty one Dagster built; and a stored event touches its run's file, so Dagster's
live-log watcher still wakes (``store_event``). Tables, files, locking and the WAL journal are
Dagster's, so an instance written by either storage reads with the other, and several
processes still share the files through SQLite's own locks. The embedded
dagster.yaml selects them (``Settings.instance_yaml``); PostgreSQL deployments do not use them.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sqlite import create_db_conn_string
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

# Each run has its own event database; a long-lived process (the webserver, a run-queue worker)
# keeps this many open and closes the least recently used.
OPEN_SHARDS = 16


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` with one pooled engine per shard (run or index database)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._empty_shard: bytes | None = None
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = create_engine(
            self.conn_string_for_shard(shard),
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            pool_size=1,  # one connection kept per file; a rare second one closes after use
        )
        if shard not in self._initialized_dbs:
            if not self._create_from_template(shard):
                self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        while len(self._engines) > OPEN_SHARDS:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    def _create_from_template(self, shard: str) -> bool:
        """Create a new shard (every run has one) as a copy of an empty database that Dagster's
        own ``_initdb`` built once in this process: the same tables, WAL journal and migration
        stamp, without loading Dagster's ~90 migration scripts again for every run (~0.1 s).
        False when the file exists, appeared meanwhile (another process created it), or the
        file system has no hard links: Dagster's own initialisation then takes over."""
        path = self.path_for_shard(shard)
        if os.path.exists(path):
            return False
        if self._empty_shard is None:
            with tempfile.TemporaryDirectory() as scratch:
                engine = create_engine(create_db_conn_string(scratch, "empty"), poolclass=NullPool)
                self._initdb(engine)
                engine.dispose()
                self._empty_shard = (Path(scratch) / "empty.db").read_bytes()
        partial = f"{path}.{os.getpid()}.new"  # not *.db: never taken for a run's database
        Path(partial).write_bytes(self._empty_shard)
        try:
            os.link(partial, path)  # atomic, and fails rather than replace another's file
        except OSError:  # it exists (another process made it), or no hard links here
            return False
        finally:
            os.unlink(partial)
        return True

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # The base class's lock: the event-log watcher thread shares this object.
        with self._db_lock, self._engine(shard).connect() as conn, conn.begin():
            yield conn

    def store_event(self, event: EventLogEntry) -> None:
        super().store_event(event)
        # Dagster's live-log watcher (the UI's run view) wakes when the run's .db file changes,
        # which with the connection kept open happens only at a checkpoint: commits go to the
        # -wal file, and SQLite publishes them in its -shm index (shared memory, no file event)
        # just after writing them there. Touching the file now, after the commit, wakes the
        # watcher when the event can be read.
        path = self.path_for_shard(event.run_id)
        if os.path.exists(path):
            os.utime(path)

    def dispose(self) -> None:
        super().dispose()
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()


class PooledSqliteRunStorage(SqliteRunStorage):
    """``SqliteRunStorage`` with one pooled engine for its database."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(conn_string, inst_data)
        self._pooled = create_engine(conn_string, pool_size=1)  # connects on first use

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledSqliteRunStorage:
        return cls.from_local(inst_data=inst_data, **config_value)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._pooled.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._pooled.dispose()
