"""``released_weights``: a family's champion weights, promoted or rolled back by a person."""

from functools import partial
from typing import Literal

import dagster as dg

from assets.partitions import SEEDS, family_partitions
from assets.resources import LedgerResource, MlflowResource, ObjectStoreResource
from release.mlflow import model_name
from release.promotion import (
    PromotionRefused,
    actor_from_env,
    promote,
    rollback,
)


class ReleaseConfig(dg.Config):
    action: Literal["promote", "rollback"] = "promote"
    reason: str = ""  # required: it goes into the audit trail
    actor: str = ""  # empty: $WORLDFLUX_ACTOR, else the login name


@dg.asset(
    partitions_def=family_partitions,
    deps=["gate_report"],
    group_name="release",
    kinds={"mlflow", "safetensors"},
    description=(
        "The family's released (champion) weights. Promotion picks the best passing seed, "
        "registers an MLflow model version with provenance tags, moves the candidate/champion/"
        "previous-champion aliases, copies the weights to the release area with a model card "
        "and appends a ledger record. It REFUSES when the family's latest gate evaluation "
        "failed, is missing, or is older than its newest checkpoints, also when launched alone. "
        "Launched by a release manager (release job or CLI), never by the schedule."
    ),
)
def released_weights(
    context: dg.AssetExecutionContext,
    config: ReleaseConfig,
    object_store: ObjectStoreResource,
    ledger: LedgerResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    family = context.partition_key
    actor = actor_from_env(config.actor)
    store = object_store.open()
    action = partial(promote, seeds=SEEDS) if config.action == "promote" else rollback
    with ledger.open() as book:
        try:
            release = action(
                family,
                store=store,
                ledger=book,
                mlflow=mlflow.open(),
                actor=actor,
                reason=config.reason,
                dagster_run_id=context.run_id,
            )
        except PromotionRefused as refused:
            raise dg.Failure(
                description=f"{config.action} of {family} refused: {refused}",
                metadata={"family": family, "actor": actor, "refusal": str(refused)},
                allow_retries=False,
            ) from refused
    context.log.info(
        f"{release.action}: {model_name(family)} champion {release.previous} -> {release.version}"
    )
    return dg.MaterializeResult(
        metadata={
            "action": release.action,
            "model": model_name(family),
            "champion_version": release.version,
            "previous_champion": release.previous or "",
            "gate_report_id": release.report_id or "",
            "actor": actor,
            "reason": config.reason,
            "weights_uri": dg.MetadataValue.path(release.uri),
            **{k: v for k, v in release.details.items() if isinstance(v, str | int)},
        }
    )
