"""Checkpoint training on Celery workers: Dagster's Celery executor with a Redis broker.

With ``WORLDFLUX_CELERY_BROKER`` set (``redis://host:6379/0``), the code location gains
``checkpoint_celery_job``: the same selection as ``checkpoint_job``, but its run only
orchestrates and each training step goes through the broker to whichever worker is free. The
broker URL is also the result backend. Start one worker per training slot, on any machine that
sees the same environment as the code location (``WORLDFLUX_CELERY_BROKER``, ``DAGSTER_HOME``
with PostgreSQL storage via ``DAGSTER_PG_URL`` across machines, ``MLFLOW_TRACKING_URI``, the
object store, the ledger)::

    celery -A dagster_celery.app -b "$WORLDFLUX_CELERY_BROKER" \
        --result-backend "$WORLDFLUX_CELERY_BROKER" worker -Q dagster \
        -I orchestration.definitions -P solo -c 1 \
        --prefetch-multiplier 1 --disable-prefetch -n train1@%h

- ``-b``/``--result-backend``: the stock ``dagster_celery.app`` otherwise looks for RabbitMQ on
  localhost; the executor and its workers must name the same broker.
- ``-I orchestration.definitions``: load the code location when the worker starts, so a broken
  environment fails there and the first step does not pay for the imports.
- ``-P solo -c 1``: one training per process, in the worker's own process (no forked pool
  around torch); run more workers for more slots, each with its own ``-n`` name.
- ``--disable-prefetch``: a busy worker does not reserve the next step while an idle one waits.

Launch runs from the UI, or one per partition from a shell::

    dagster job execute -m orchestration.distributed -a define_checkpoint_celery_job \
        --tags '{"dagster/partition": "tdmpc2|0", "dagster/partition/family": "tdmpc2",
                 "dagster/partition/seed": "0"}'

Runs launched from the UI go through the run queue, whose ``max_concurrent_runs`` (dagster.yaml)
also bounds how many workers can be busy at once; the nightly schedule still uses
``checkpoint_job``. A worker rebuilds the job with ``define_checkpoint_celery_job`` from its own
environment. Without a worker listening, a run's steps wait in the broker's ``dagster`` queue.
"""

from __future__ import annotations

import dagster as dg

from orchestration.jobs import KIND_TAG, checkpoint_job
from orchestration.settings import CELERY_BROKER_VARIABLE, Settings, SettingsError

CELERY_JOB = "checkpoint_celery_job"


def checkpoint_celery_job() -> dg.UnresolvedAssetJobDefinition:
    """``checkpoint_job``'s selection on the Celery executor."""
    from dagster_celery import celery_executor

    # The URL is read from the environment when a run starts rather than written into the
    # job's config: the UI shows an executor's config, and a Redis URL may carry a password.
    broker = {"env": CELERY_BROKER_VARIABLE}
    return dg.define_asset_job(
        CELERY_JOB,
        selection=checkpoint_job.selection,
        description=(
            "Train one family with one seed on a Celery worker (WORLDFLUX_CELERY_BROKER; "
            "workers: see orchestration/distributed.py)."
        ),
        tags={KIND_TAG: "training"},  # the run queue's limits count it as training
        executor_def=celery_executor.configured({"broker": broker, "backend": broker}),
    )


def define_checkpoint_celery_job() -> dg.JobDefinition:
    """The resolved job, for ``dg.reconstructable``: the launching process and every worker
    call this, so each builds the code location from its own environment."""
    # Imported here: the code location imports this module to add the job.
    from orchestration.definitions import build_definitions

    settings = Settings.from_env()
    if not settings.celery_broker:
        raise SettingsError(
            f"{CELERY_JOB} needs {CELERY_BROKER_VARIABLE} (e.g. redis://127.0.0.1:6379/0) in "
            "the environment of the launching process and of every worker"
        )
    return build_definitions(settings).resolve_job_def(CELERY_JOB)
