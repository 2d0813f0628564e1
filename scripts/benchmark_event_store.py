"""Dagster's SQLite event log against the one the embedded instance uses
(orchestration/sqlite_storage.py), side by side: milliseconds per stored event, for plain run
events and for asset-check events (which Dagster also mirrors into its index database), and
for a new run's first event (which creates the run's database).

    python scripts/benchmark_event_store.py [--events 300]

Figures are recorded with this command in docs/orchestration.md#measured.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402
from dagster._core.events import (  # noqa: E402
    AssetCheckEvaluation,
    DagsterEvent,
    DagsterEventType,
)
from dagster._core.events.log import EventLogEntry  # noqa: E402
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (  # noqa: E402
    SqliteEventLogStorage,
)

from orchestration.sqlite_storage import PooledSqliteEventLogStorage  # noqa: E402


def run_event(run_id: str) -> EventLogEntry:
    return EventLogEntry(
        error_info=None,
        level="info",
        user_message="step",
        run_id=run_id,
        timestamp=time.time(),
        dagster_event=None,
    )


def check_event(run_id: str) -> EventLogEntry:
    evaluation = AssetCheckEvaluation(
        asset_key=dg.AssetKey("gate_report"), check_name="prediction_nmse", passed=True
    )
    return EventLogEntry(
        error_info=None,
        level="info",
        user_message="",
        run_id=run_id,
        timestamp=time.time(),
        dagster_event=DagsterEvent(
            DagsterEventType.ASSET_CHECK_EVALUATION.value,
            "gate_report_job",
            event_specific_data=evaluation,
        ),
    )


def per_event_ms(
    storage: SqliteEventLogStorage, make: Callable[[str], EventLogEntry], count: int
) -> float:
    storage.store_event(make("warm"))  # creates the run's database
    start = time.perf_counter()
    for _ in range(count):
        storage.store_event(make("warm"))
    return (time.perf_counter() - start) / count * 1000


def first_event_ms(storage: SqliteEventLogStorage, count: int) -> float:
    storage.store_event(run_event("first"))  # one-off set-up is not what a run pays
    start = time.perf_counter()
    for i in range(count):
        storage.store_event(run_event(f"new{i}"))
    return (time.perf_counter() - start) / count * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300, help="events per measurement")
    args = parser.parse_args()
    rows: dict[str, list[str]] = {
        "run event, ms": [],
        "asset-check event, ms": [],
        "new run's first event, ms": [],
    }
    names = []
    for cls in (SqliteEventLogStorage, PooledSqliteEventLogStorage):
        names.append(cls.__name__)
        with tempfile.TemporaryDirectory() as base:
            storage = cls(str(Path(base) / "runs"))
            rows["run event, ms"].append(f"{per_event_ms(storage, run_event, args.events):.2f}")
            rows["asset-check event, ms"].append(
                f"{per_event_ms(storage, check_event, args.events):.2f}"
            )
            rows["new run's first event, ms"].append(
                f"{first_event_ms(storage, max(args.events // 10, 1)):.2f}"
            )
            storage.dispose()
    width = max(len(n) for n in names) + 2
    print(f"{'':<28}" + "".join(f"{n:>{width}}" for n in names))
    for label, values in rows.items():
        print(f"{label:<28}" + "".join(f"{v:>{width}}" for v in values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
