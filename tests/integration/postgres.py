"""A real PostgreSQL 16 server from the ``pgserver`` package (its binaries ship in the wheel),
started in a temporary folder and reached through its Unix socket; tests isolate themselves by
database."""

from __future__ import annotations

import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True)
class Postgres:
    server: Any  # pgserver.PostgresServer
    socket_dir: str

    def create_database(self, prefix: str) -> str:
        """A new empty database; returns its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.server.psql(f"CREATE DATABASE {name};")
        return name

    def url(self, database: str, driver: str = "postgresql") -> str:
        """``postgresql://`` (dagster-postgres) or ``postgresql+psycopg2://`` (SQLAlchemy)."""
        return f"{driver}://postgres:@/{database}?host={quote(self.socket_dir, safe='/')}"

    def query(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        """The rows ``sql`` returns in ``database``."""
        import psycopg2  # type: ignore[import-untyped]

        connect = psycopg2.connect(dbname=database, host=self.socket_dir, user="postgres")
        with closing(connect) as conn, conn.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())


def start_postgres(folder: Path) -> Postgres:
    import pgserver

    server = pgserver.get_server(str(folder), cleanup_mode="stop")
    return Postgres(server, str(folder))


def stop(postgres: Postgres) -> None:
    postgres.server.cleanup()
