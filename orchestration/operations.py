"""The lineage's steps as in-process Dagster runs on a real instance (the CLI and the tests use
these; the daemon launches the same jobs from the schedules). Every run is recorded in the
instance, so the Dagster UI shows what the CLI did."""

from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets.gate_report import GATE_REPORT, family_checks
from assets.partitions import checkpoint_key


@dataclass(frozen=True)
class Outcome:
    job: str
    partition: str
    success: bool
    run_id: str
    message: str  # the failure's description, or "" on success
    result: dg.ExecuteInProcessResult

    def work_seconds(self) -> float:
        """Time the run's assets spent on the work itself (training, evaluation, expectation
        suite, gate arithmetic), as each asset records it in ``work_seconds``."""
        total = 0.0
        for event in self.result.get_asset_materialization_events():
            value = event.materialization.metadata.get("work_seconds")
            total += float(value.value) if value is not None else 0.0  # type: ignore[arg-type]
        return total

    def failed_checks(self) -> list[dg.AssetCheckEvaluation]:
        return [e for e in self.result.get_asset_check_evaluations() if not e.passed]


def run(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    job: str,
    partition: str,
    run_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    quiet: bool = False,
) -> Outcome:
    """``quiet``: mute the console echo (the CLI prints its own summary); the run's events
    still go to the instance."""
    run_config = dict(run_config or {})
    if quiet:
        run_config["loggers"] = {"console": {"config": {"log_level": "CRITICAL"}}}
    job_def = defs.resolve_job_def(job)
    if GATE_REPORT in job_def.asset_layer.executable_asset_keys:
        # The family's own gates only (as the sensor's run requests select them).
        job_def = job_def.get_subset(
            asset_selection=set(job_def.asset_layer.executable_asset_keys),
            asset_check_selection=family_checks(str(partition)),
        )
    result = job_def.execute_in_process(
        partition_key=partition,
        instance=instance,
        run_config=run_config,
        tags=tags,
        raise_on_error=False,
    )
    return Outcome(job, str(partition), result.success, result.run_id, _failure(result), result)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            user = event.step_failure_data.user_failure_data
            if user is not None and user.description:
                return user.description
            if error is not None:
                cause = error.cause.message if error.cause else ""
                return (cause or error.message).strip().splitlines()[0]
    return "" if result.success else "the run failed (see the Dagster UI for its events)"


def materialize_dataset(
    defs: dg.Definitions, instance: dg.DagsterInstance, name: str, quiet: bool = False
) -> Outcome:
    return run(defs, instance, "dataset_job", name, quiet=quiet)


def train(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    family: str,
    seed: int,
    steps: int | None = None,
    lr: float | None = None,
    quiet: bool = False,
) -> Outcome:
    config = {"steps": steps, "lr": lr}
    run_config = {"ops": {"checkpoint": {"config": {k: v for k, v in config.items() if v}}}}
    key = checkpoint_key(family, seed)
    return run(defs, instance, "checkpoint_job", key, run_config, quiet=quiet)


def repeat(
    defs: dg.Definitions, instance: dg.DagsterInstance, family: str, quiet: bool = False
) -> Outcome:
    return run(defs, instance, "repeatability_job", family, quiet=quiet)


def evaluate(
    defs: dg.Definitions, instance: dg.DagsterInstance, family: str, quiet: bool = False
) -> Outcome:
    return run(defs, instance, "gate_report_job", family, quiet=quiet)


def release(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    family: str,
    *,
    action: str,
    reason: str,
    actor: str = "",
    with_gates: bool = False,
    quiet: bool = False,
) -> Outcome:
    """``with_gates``: evaluate the gates in the same run, so failing blocking checks stop the
    release before it starts; otherwise the release refuses by reading the ledger."""
    config = {"action": action, "reason": reason, "actor": actor}
    job = "evaluate_and_release_job" if with_gates else "release_job"
    run_config = {"ops": {"released_weights": {"config": config}}}
    return run(defs, instance, job, family, run_config, quiet=quiet)
