"""The nightly schedules: every registered data set at 01:45 UTC; every family x seed checkpoint
and every family's same-seed re-runs at 02:00.

``build_schedule_from_partitioned_job`` rejects static x static partitions, so the schedule
yields one RunRequest per partition with a run key fixed by the night: a tick evaluated twice
(daemon restart) launches nothing twice. Gate reports follow from the sensor in sensors.py;
released weights never come from here.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from assets.partitions import FAMILIES, SEEDS, checkpoint_key
from assets.resources import ObjectStoreResource
from orchestration.datasets import PARTITIONS, ensure_bundled
from orchestration.jobs import checkpoint_job, dataset_job, repeatability_job

NIGHTLY_CRON = "0 2 * * *"
DATASETS_CRON = "45 1 * * *"  # 15 minutes ahead, so the nightly trains on re-checked data


def _nightly(
    night: str, what: str, partitions: Sequence[tuple[str, str | dg.MultiPartitionKey]]
) -> list[dg.RunRequest]:
    """One request per (label, partition key), its run key fixed by the night."""
    return [
        dg.RunRequest(
            run_key=f"nightly-{night}-{what}-{label}",
            partition_key=key,
            tags={"worldflux/night": night},
        )
        for label, key in partitions
    ]


def dataset_requests(night: str, names: Sequence[str]) -> list[dg.RunRequest]:
    return _nightly(night, "dataset", [(name, name) for name in names])


def checkpoint_requests(night: str) -> list[dg.RunRequest]:
    keys = [(f"{f}-{s}", checkpoint_key(f, s)) for f in FAMILIES for s in SEEDS]
    return _nightly(night, "checkpoint", keys)


def repeatability_requests(night: str) -> list[dg.RunRequest]:
    return _nightly(night, "repeatability", [(family, family) for family in FAMILIES])


@dg.schedule(
    name="nightly_datasets",
    cron_schedule=DATASETS_CRON,
    execution_timezone="UTC",
    job=dataset_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 01:45 UTC: check every registered data set (the bundled ones are "
    "registered here if they are not yet) and publish its passing versions.",
)
def nightly_datasets(
    context: dg.ScheduleEvaluationContext, object_store: ObjectStoreResource
) -> list[dg.RunRequest]:
    ensure_bundled(object_store.open(), context.instance)
    names = context.instance.get_dynamic_partitions(PARTITIONS)
    return dataset_requests(context.scheduled_execution_time.strftime("%Y-%m-%d"), names)


@dg.schedule(
    name="nightly_gates",
    cron_schedule=NIGHTLY_CRON,
    execution_timezone="UTC",
    job=checkpoint_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 02:00 UTC: retrain every family x seed (one run each, queued "
    "within dagster.yaml's run limits); each family's gate report follows once all its seeds "
    "have landed.",
)
def nightly_gates(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    return checkpoint_requests(context.scheduled_execution_time.strftime("%Y-%m-%d"))


@dg.schedule(
    name="nightly_repeats",
    cron_schedule=NIGHTLY_CRON,
    execution_timezone="UTC",
    job=repeatability_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 02:00 UTC: the two same-seed re-runs of every family (the "
    "repeatability gate's evidence); the gate report waits for them too.",
)
def nightly_repeats(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    return repeatability_requests(context.scheduled_execution_time.strftime("%Y-%m-%d"))
