"""``gate_report``: every release gate of a family over all its seeds, one blocking check each."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from assets.metadata import number, table
from assets.partitions import FAMILIES, SEEDS, dataset_of, family_partitions
from assets.resources import (
    LedgerResource,
    MlflowResource,
    ObjectStoreResource,
    TorchResource,
)
from quality.evaluate import build_report, evaluate_gates, gate_names, verdict
from quality.gates.result import GateResult
from quality.policy import Policy, load_policy
from quality.report import render_markdown
from quality.seed_run import measure_stored
from release.datasets import read_dataset
from release.lineage import (
    LineageError,
    download_weights,
    read_checkpoint_records,
    read_repeats,
    read_rollout_pictures,
    scratch_dir,
)
from release.object_store import ObjectStore, ObjectStoreError
from release.reports import record_report
from worldflux.data import TrajectoryDataset


def check_name(gate: str) -> str:
    """Dagster check names allow [A-Za-z0-9_]: ``prediction.psnr_1`` -> ``prediction__psnr_1``."""
    return gate.replace(".", "__")


# Checks are declared per asset, not per partition: the union of every family's gates, from the
# gate registry (quality/gates/registry.py) through each family's policy. A family's runs
# select its own gates' checks (``family_checks``): every check is three events in the
# instance (planned, output, evaluation), the largest part of a gate report's bookkeeping. When
# a run selects a check that is not one of the family's gates (materialized from the UI with
# everything), it passes as not_applicable.
ALL_GATES = list(dict.fromkeys(g for family in FAMILIES for g in gate_names(family)))
GATE_REPORT = dg.AssetKey("gate_report")


def family_checks(family: str) -> set[dg.AssetCheckKey]:
    return {dg.AssetCheckKey(GATE_REPORT, check_name(g)) for g in gate_names(family)}


def judge_stored_weights(
    store: ObjectStore, runs: list[dict[str, Any]], policy: Policy, data: TrajectoryDataset
) -> list[dict[str, Any]]:
    """Each finished seed's weights as the object store holds them: downloaded (every file
    verified against the checkpoint's manifest), loaded and re-measured into
    ``record["stored"]``, which ``reproducibility.stored_weights`` compares with what the
    training step reported. A download that fails verification is recorded as the error, so
    the gate fails closed, naming it (a store that cannot be read, likewise)."""
    judged = []
    for record in runs:
        checkpoint = record.get("checkpoint")
        if record["status"] != "ok" or not checkpoint:
            judged.append(record)
            continue
        with scratch_dir("stored") as tmp:
            try:
                path = download_weights(store, checkpoint, Path(tmp) / "weights")
            except (LineageError, ObjectStoreError) as err:
                stored: dict[str, Any] = {"error": str(err)}
            else:
                stored = measure_stored(path, record, policy, data)
        judged.append({**record, "stored": stored})
    return judged


def _check_result(gate: GateResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=check_name(gate.name),
        passed=not gate.blocks,
        severity=dg.AssetCheckSeverity.ERROR,
        description=gate.reason,
        metadata={
            "gate": gate.name,
            "status": gate.status,
            "value": gate.value,
            "threshold": gate.threshold,
            "comparison": gate.comparison,
            "reason": gate.reason,
            "evidence": dg.MetadataValue.json(json.loads(json.dumps(gate.evidence, default=str))),
        },
    )


def _not_a_gate_of(family: str, gate: str) -> dg.AssetCheckResult:
    reason = f"{gate} is not one of the {family} family's gates"
    return dg.AssetCheckResult(
        check_name=check_name(gate),
        passed=True,
        metadata={"gate": gate, "status": "not_applicable", "reason": reason},
        description=reason,
    )


@dg.multi_asset(
    # A multi-asset of one: only multi-assets let a run select some of their checks.
    specs=[
        dg.AssetSpec(
            GATE_REPORT,
            deps=[
                dg.AssetDep(
                    "checkpoint",
                    partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
                        partition_dimension_name="family"
                    ),
                ),
                dg.AssetDep("repeatability_runs"),
            ],
            group_name="release_gates",
            kinds={"python", "mlflow"},
            description=(
                "Every release gate of quality/ evaluated over all seeds of a family: each "
                "seed's stored weights are downloaded (every file verified by sha256), reloaded "
                "and re-measured; the two same-seed re-runs (repeatability_runs) are compared. "
                "The JSON report goes to the object store, the report ledger and MLflow; each "
                "gate is a blocking ERROR check, so a failing gate stops released_weights in "
                "the same run."
            ),
        )
    ],
    name="gate_report",
    partitions_def=family_partitions,
    check_specs=[
        dg.AssetCheckSpec(check_name(g), asset=GATE_REPORT, blocking=True, description=g)
        for g in ALL_GATES
    ],
    can_subset=True,
)
def gate_report(
    context: dg.AssetExecutionContext,
    object_store: ObjectStoreResource,
    ledger: LedgerResource,
    mlflow: MlflowResource,
    compute: TorchResource,  # sets the run's torch threads before the asset starts
) -> Iterator[dg.MaterializeResult]:
    family = context.partition_key
    policy = load_policy(family)
    store = object_store.open()
    runs = read_checkpoint_records(store, family, SEEDS)
    data, _ = read_dataset(store, dataset_of(family))
    context.log.info(f"{family}: {len(runs)} seeds read; re-measuring their stored weights")
    started = time.perf_counter()
    runs = judge_stored_weights(store, runs, policy, data)
    repeats = read_repeats(store, family)
    gates = evaluate_gates(runs, policy, repeats=repeats, obs_shape=data.spec.obs_shape)
    report = build_report(runs, policy, gates, repeats=repeats)
    work_seconds = time.perf_counter() - started
    pictures = read_rollout_pictures(store, family, SEEDS)
    with ledger.open() as book:
        entry = record_report(report, store, book, mlflow.open(), context.run.run_id, pictures)
    selected = {key.name for key in context.selected_asset_check_keys}
    evaluated = {g.name for g in gates}
    checks = [_check_result(g) for g in gates if check_name(g.name) in selected]
    checks += [
        _not_a_gate_of(family, g)
        for g in ALL_GATES
        if g not in evaluated and check_name(g) in selected
    ]
    decided = verdict(entry.report["gates"]["results"])
    if not decided.release_pass:
        context.log.warning(f"{family} is BLOCKED by {', '.join(decided.failed_gates)}")
    yield dg.MaterializeResult(  # yielded: a multi-asset reads a returned tuple as its outputs
        asset_key=GATE_REPORT,
        metadata={
            "report_id": entry.report_id,
            "report_sha256": entry.report_sha256,
            "releasable": decided.release_pass,
            "failing_gates": dg.MetadataValue.json(list(decided.failed_gates)),
            "success_rate": report["success_rate"],
            "uri": dg.MetadataValue.path(entry.uri),
            "report": dg.MetadataValue.md(render_markdown(report, pictures)),
            "gates": table(
                [
                    {
                        "gate": g.name,
                        "status": g.status,
                        "value": number(g.value),
                        "threshold": f"{g.comparison} {number(g.threshold)}".strip(),
                        "reason": g.reason,
                    }
                    for g in gates
                ]
            ),
            "work_seconds": work_seconds,
        },
        check_results=checks,
    )
