"""Jobs: one per partitioning (a Dagster job runs one partition of assets that share it)."""

from __future__ import annotations

import dagster as dg

# Every run carries its kind under this tag; dagster.yaml's run queue limits runs per kind (the
# daemon's QueuedRunCoordinator for scheduled runs, orchestration/runqueue.py for the CLI's).
KIND_TAG = "worldflux/kind"

dataset_job = dg.define_asset_job(
    "dataset_job",
    tags={KIND_TAG: "dataset"},
    selection=dg.AssetSelection.assets("dataset"),
    description="Publish a data set and run its expectation suite (blocking checks).",
)
checkpoint_job = dg.define_asset_job(
    "checkpoint_job",
    tags={KIND_TAG: "training"},
    selection=dg.AssetSelection.assets("checkpoint"),
    description="Train one family with one seed (nightly: every family x seed).",
)
repeatability_job = dg.define_asset_job(
    "repeatability_job",
    tags={KIND_TAG: "training"},
    selection=dg.AssetSelection.assets("repeatability_runs"),
    description="Train the two same-seed re-runs of a family (the repeatability gate's evidence).",
)
gate_report_job = dg.define_asset_job(
    "gate_report_job",
    tags={KIND_TAG: "report"},
    selection=dg.AssetSelection.assets("gate_report"),
    description="Evaluate every gate of a family over all its seeds (after its seeds land).",
)
release_job = dg.define_asset_job(
    "release_job",
    tags={KIND_TAG: "release"},
    selection=dg.AssetSelection.assets("released_weights"),
    description=(
        "Promote or roll back a family's released weights. Launched by a release manager "
        "(UI or `python -m orchestration promote/rollback`), never by a schedule; refuses "
        "when the latest gate evaluation failed, is missing or is stale."
    ),
)
evaluate_and_release_job = dg.define_asset_job(
    "evaluate_and_release_job",
    tags={KIND_TAG: "release"},
    selection=dg.AssetSelection.assets("gate_report", "released_weights"),
    description=(
        "Gate a family and promote it in one run: a failing gate's blocking check stops "
        "released_weights before it starts."
    ),
)

JOBS = [
    dataset_job,
    checkpoint_job,
    repeatability_job,
    gate_report_job,
    release_job,
    evaluate_and_release_job,
]
