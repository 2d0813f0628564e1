"""The CLI's run queue for real: worker processes spawned, runs on the instance, the limits of
the project's dagster.yaml, the sensor's order, a fault that stops new runs, a dead worker."""

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from assets.partitions import SEEDS
from orchestration import cli
from orchestration.jobs import KIND_TAG
from orchestration.runqueue import Limits, RunQueue, RunQueueError, Task
from tests.orchestration.conftest import Platform, make_platform

FAMILY = "tdmpc2"


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One family swept through the CLI with two workers (short runs: this is about order and
    placement, not learning)."""
    for platform in make_platform(tmp_path_factory.mktemp("runqueue")):
        argv = ["sweep", "--families", FAMILY, "--steps", "20", "--workers", "2"]
        assert cli.main(argv) == 0
        yield platform


def _runs(platform: Platform) -> list[dg.DagsterRun]:
    return list(platform.instance.get_runs())


def _span(platform: Platform, run: dg.DagsterRun) -> tuple[float, float]:
    record = platform.instance.get_run_record_by_id(run.run_id)
    assert record is not None
    assert record.start_time is not None
    assert record.end_time is not None
    return record.start_time, record.end_time


def test_the_run_queue_limits_come_from_the_projects_dagster_yaml(swept: Platform) -> None:
    limits = Limits.of(swept.instance)
    assert limits == Limits(2, {"release": 1})
    assert limits.allows("training", ["training"])
    assert not limits.allows("training", ["training", "report"])
    assert not limits.allows("release", ["release"])


def test_two_workers_ran_the_sweep_in_parallel_within_the_limit(swept: Platform) -> None:
    runs = _runs(swept)
    kinds = sorted(r.tags[KIND_TAG] for r in runs)
    assert kinds == sorted(["dataset", *["training"] * (len(SEEDS) + 1), "report"])
    spans = [_span(swept, r) for r in runs]
    # Runs in flight at each start: never more than the queue allows, and at times two.
    overlaps = [sum(s <= start < e for s, e in spans) for start, _ in spans]
    assert max(overlaps) == 2
    workers = set()
    for seed in SEEDS:
        key = dg.MultiPartitionKey({"family": FAMILY, "seed": str(seed)})
        records = swept.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("checkpoint"), asset_partitions=[key]),
            limit=1,
        ).records
        event = records[0].event_log_entry.asset_materialization
        assert event is not None
        workers.add(str(event.metadata["worker"].value).rsplit(":", 1)[1])
    assert len(workers) == 2  # both workers trained seeds
    assert str(os.getpid()) not in workers  # and not this process


def test_the_gate_report_started_after_every_seed_and_re_run_ended(swept: Platform) -> None:
    runs = _runs(swept)
    report = next(r for r in runs if r.tags[KIND_TAG] == "report")
    training = [r for r in runs if r.tags[KIND_TAG] == "training"]
    assert len(training) == len(SEEDS) + 1
    report_start, _ = _span(swept, report)
    assert all(_span(swept, r)[1] <= report_start for r in training)


def test_a_fault_stops_new_runs_and_a_dead_worker_is_named(tmp_path: Path) -> None:
    for platform in make_platform(tmp_path):
        limits = Limits.of(platform.instance)
        kinds = {"train": "training", "repeat": "training"}
        tasks = [
            Task("bad seed", "train", {"family": FAMILY, "seed": 99, "steps": 5}),
            Task("after it", "repeat", {"family": FAMILY}, after=("bad seed",)),
        ]
        with RunQueue(1) as run_queue:
            finished = run_queue.run(tasks, limits, kinds, _any, on_done=_answered)
            # A worker that dies (killed, out of memory) is named, not waited for forever.
            os.kill(run_queue.pids[0], signal.SIGKILL)
            with pytest.raises(RunQueueError, match=r"exited with code -9"):
                run_queue.run([Task("next", "repeat", {"family": FAMILY})], limits, kinds, _any)
        assert [d.label for d in finished] == ["bad seed"]  # "after it" never started
        (bad,) = finished
        assert not bad.success
        assert not bad.answered
        assert "99" in bad.message
        assert not list(platform.instance.get_runs())


def _any(task: Task) -> str:
    return ""


def _answered(done: object) -> bool:
    return bool(getattr(done, "answered", False))
