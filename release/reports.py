"""A gate report, kept in three places: the object store (JSON + Markdown), the report ledger
(the record promotion decisions read) and MLflow (a run per evaluation, for browsing)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from quality.report import render_markdown, validate_report
from quality.visuals import Picture
from release.decision import report_key
from release.ledger import Ledger, ReportEntry, canonical_sha256
from release.mlflow import REPORT_EXPERIMENT, Mlflow
from release.object_store import ObjectStore


def record_report(
    report: dict[str, Any],
    store: ObjectStore,
    ledger: Ledger,
    mlflow: Mlflow,
    dagster_run_id: str,
    pictures: Mapping[int, Picture] | None = None,
) -> ReportEntry:
    """Validate the report against its schema, then store it everywhere. The ledger entry is
    written last: a report the ledger holds is complete in the object store. ``pictures``: each
    seed's real-versus-imagined PNG, shown in the Markdown report and logged to its MLflow run."""
    validate_report(report)
    report = json.loads(json.dumps(report))  # plain JSON (tuples -> lists), as stored everywhere
    family, report_id = report["family"], report["report_id"]
    key = report_key(family, report_id)
    uri = store.put_json(key, report)
    store.put_bytes(key.removesuffix(".json") + ".md", render_markdown(report, pictures).encode())

    # Its content hash goes wherever the report is kept, so a release can check they agree.
    tags = {
        "family": family,
        "report_id": report_id,
        "report_sha256": canonical_sha256(report),
        "dagster_run_id": dagster_run_id,
    }
    run_id = mlflow.start_run(report_id, tags, experiment=REPORT_EXPERIMENT)
    passed = sum(g["status"] == "pass" for g in report["gates"]["results"])
    mlflow.log_metrics(
        run_id,
        {
            "success_rate": report["success_rate"],
            "gates_passed": passed,
            "gates_blocking": len(report["failed_gates"]),
        },
    )
    mlflow.log_dict(run_id, report, "gate_report.json")
    for seed, picture in sorted((pictures or {}).items()):
        mlflow.log_bytes(run_id, picture.png, f"rollout-seed{seed}.png")
    mlflow.end_run(run_id, ok=True)

    entry = ReportEntry(
        report_id=report_id,
        family=family,
        created_at=dt.datetime.now(dt.UTC),
        uri=uri,
        dagster_run_id=dagster_run_id,
        report=report,
    )
    ledger.add_report(entry)
    return entry
