"""A family's gate report follows once every one of its seeds has a checkpoint, and its
same-seed re-runs have landed, newer than the family's latest gate report (a nightly sweep
re-trains all of them; a single re-trained seed does not trigger an evaluation of a
half-updated family)."""

from __future__ import annotations

import dagster as dg

from assets.gate_report import GATE_REPORT, family_checks
from assets.partitions import FAMILIES, SEEDS, checkpoint_key
from orchestration.jobs import gate_report_job

CHECKPOINT = dg.AssetKey("checkpoint")
REPEATS = dg.AssetKey("repeatability_runs")


def _latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> int:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    return records[0].storage_id if records else -1


def gate_report_requests(instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    requests = []
    for family in FAMILIES:
        seeds = [_latest_storage_id(instance, CHECKPOINT, checkpoint_key(family, s)) for s in SEEDS]
        seeds.append(_latest_storage_id(instance, REPEATS, family))
        last_report = _latest_storage_id(instance, GATE_REPORT, family)
        if min(seeds) > last_report:  # every seed landed (-1: missing) after the last report
            requests.append(
                dg.RunRequest(
                    run_key=f"gate_report-{family}-{max(seeds)}",
                    job_name=gate_report_job.name,
                    partition_key=family,
                    asset_selection=[GATE_REPORT],
                    asset_check_keys=sorted(family_checks(family), key=str),
                )
            )
    return requests


@dg.sensor(
    name="gate_report_when_seeds_landed",
    job=gate_report_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests gate_report[family] once all seeds of the family have new checkpoints "
    "and its same-seed re-runs have landed.",
)
def gate_report_when_seeds_landed(context: dg.SensorEvaluationContext) -> list[dg.RunRequest]:
    return gate_report_requests(context.instance)
