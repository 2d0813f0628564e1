"""The code location: the lineage assets, their jobs, the nightly schedules, the sensor
that gates a family once its seeds land, and resources chosen by the environment (with
``WORLDFLUX_CELERY_BROKER`` set, also a checkpoint job whose steps run on Celery workers)."""

import dagster as dg

from assets.checkpoint import checkpoint
from assets.dataset import dataset
from assets.gate_report import gate_report
from assets.released_weights import released_weights
from assets.repeatability_runs import repeatability_runs
from orchestration.distributed import checkpoint_celery_job
from orchestration.jobs import JOBS
from orchestration.schedules import nightly_datasets, nightly_gates, nightly_repeats
from orchestration.sensors import gate_report_when_seeds_landed
from orchestration.settings import Settings, build_resources


def build_definitions(settings: Settings) -> dg.Definitions:
    jobs = [*JOBS, checkpoint_celery_job()] if settings.celery_broker else JOBS
    return dg.Definitions(
        assets=[dataset, checkpoint, repeatability_runs, gate_report, released_weights],
        jobs=jobs,
        schedules=[nightly_datasets, nightly_gates, nightly_repeats],
        sensors=[gate_report_when_seeds_landed],
        resources=build_resources(settings),
        # A run materializes one partition of one or two assets: running its steps in the
        # run's own process saves a torch import per step; the run queue bounds parallelism.
        executor=dg.in_process_executor,
    )


defs = build_definitions(Settings.from_env())
