"""Dagster resources that open the report ledger; settings pick the backend from the environment."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from orchestration.resources.ledger import Ledger
from orchestration.resources.ledger_mongo import MongoLedger
from orchestration.resources.ledger_sqlite import SqliteLedger


class LedgerResource(dg.ConfigurableResource):
    """Assets depend on this base, so the backend can change without touching them."""

    def open(self) -> Ledger:
        raise NotImplementedError("use SqliteLedgerResource or MongoLedgerResource")


class SqliteLedgerResource(LedgerResource):
    """The embedded default: one SQLite file."""

    path: str

    def open(self) -> Ledger:
        return SqliteLedger(Path(self.path))


class MongoLedgerResource(LedgerResource):
    """Production: MongoDB; opening pings the server and fails fast if it cannot be reached."""

    uri: str
    database: str = "worldflux"

    def open(self) -> Ledger:
        return MongoLedger.from_uri(self.uri, self.database)
