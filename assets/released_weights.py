"""``released_weights``: a family's champion weights, promoted, rolled back or reconciled by a
release manager."""

import time
from typing import Literal

import dagster as dg

from assets.partitions import SEEDS, family_partitions
from assets.resources import (
    LedgerResource,
    MlflowResource,
    ObjectStoreResource,
    ReleaseManagersResource,
)
from release.decision import PromotionRefused
from release.mlflow import model_name
from release.promotion import ReleaseFault, ReleaseRequest, Services, run_release


class ReleaseConfig(dg.Config):
    action: Literal["promote", "rollback", "reconcile"] = "promote"
    reason: str = ""  # required: it goes into the audit trail
    # Who acts, required and on the release managers' list. Dagster OSS does not authenticate UI
    # users, so this is a declaration there (docs/orchestration.md); the CLI sets the login user.
    actor: str = ""


@dg.asset(
    partitions_def=family_partitions,
    deps=["gate_report"],
    group_name="release",
    kinds={"mlflow", "safetensors"},
    description=(
        "The family's released (champion) weights. Promotion re-derives the decision from the "
        "latest gate report (gate results, the report's hash in ledger, object store and "
        "MLflow, fresh checkpoints, data set and policy), copies the best passing seed's "
        "weights to the release area and reads them back, registers an MLflow version with "
        "provenance tags and moves the champion/previous-champion aliases; every step is "
        "recorded in the hash-chained ledger under the family's lease. It REFUSES (and records "
        "why) otherwise, also when launched alone. Launched by a release manager (release job "
        "or CLI), never by the schedule."
    ),
)
def released_weights(
    context: dg.AssetExecutionContext,
    config: ReleaseConfig,
    object_store: ObjectStoreResource,
    ledger: LedgerResource,
    mlflow: MlflowResource,
    release_managers: ReleaseManagersResource,
) -> dg.MaterializeResult:
    family = context.partition_key
    request = ReleaseRequest(
        family=family,
        action=config.action,
        actor=config.actor.strip(),
        reason=config.reason,
        dagster_run_id=context.run.run_id,
    )
    started = time.perf_counter()
    with ledger.open() as book:
        services = Services(object_store.open(), book, mlflow.open())
        try:
            release = run_release(
                request,
                services,
                seeds=SEEDS,
                managers=frozenset(release_managers.managers),
                observer=lambda step: context.log.info(f"{config.action} {family}: {step}"),
            )
        except (PromotionRefused, ReleaseFault) as error:
            outcome = "refused" if isinstance(error, PromotionRefused) else "failed"
            raise dg.Failure(
                description=f"{config.action} of {family} {outcome}: {error}",
                metadata={"family": family, "actor": request.actor, "outcome": outcome},
                allow_retries=False,
            ) from error
    # The release's own work: deriving the decision, verifying and copying the weights,
    # moving the registry (a refusal, raised above, counts as orchestration time).
    work_seconds = time.perf_counter() - started
    context.log.info(
        f"{release.action}: {model_name(family)} champion {release.previous} -> {release.version}"
    )
    return dg.MaterializeResult(
        metadata={
            "action": release.action,
            "model": model_name(family),
            "champion_version": release.version or "",
            "previous_champion": release.previous or "",
            "gate_report_id": release.report_id or "",
            "actor": request.actor,
            "reason": config.reason,
            "weights_uri": dg.MetadataValue.path(release.uri),
            **{k: v for k, v in release.details.items() if isinstance(v, str | int)},
            "work_seconds": work_seconds,
        }
    )
