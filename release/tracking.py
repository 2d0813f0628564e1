"""What a seed run leaves in MLflow: parameters, the data set as an input with its digest,
per-step metrics, held-out metrics before and after, a loss-curve plot and the run record."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

from release.mlflow import Mlflow
from worldflux.training import Callback, History, Trainer


class LogProgress(Callback):
    """Reports training progress four times per run (a long run shows it is alive; every
    line is an event the Dagster instance stores)."""

    def __init__(self, log: Callable[[str], None], total_steps: int, label: str) -> None:
        self.log, self.label = log, label
        self.every = max(1, total_steps // 4)
        self.total = total_steps

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.step % self.every == 0 or trainer.step == self.total:
            loss = metrics.get("loss", float("nan"))
            self.log(f"{self.label}: step {trainer.step}/{self.total}, loss {loss:.4g}")


def loss_curve_figure(history: History, gate_metric: str | None) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for key in ("loss", gate_metric):
        values = history.metrics.get(key or "", [])
        if values:
            axis.plot(history.steps[: len(values)], values, label=key, linewidth=1)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_yscale("symlog")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def track_seed_run(
    mlflow: Mlflow,
    run_id: str,
    record: dict[str, Any],
    history: History,
    manifest: dict[str, Any],
) -> bytes | None:
    """Log a finished (or failed) seed run to its MLflow run and close it. Returns the
    loss-curve PNG (None when no step ran), for the object store and the Dagster UI."""
    import matplotlib.pyplot as plt

    mlflow.log_dataset(
        run_id,
        manifest["name"],
        manifest["digest"],
        manifest["uri"],
        {"rows": manifest["rows"], "episodes": manifest["episodes"], "sha256": manifest["sha256"]},
    )
    mlflow.log_series(run_id, {f"train/{k}": v for k, v in history.metrics.items()})
    for phase in ("before", "after"):
        values = record.get(phase) or {}
        mlflow.log_metrics(run_id, {f"held_out_{phase}/{k}": v for k, v in values.items()})
    summary = {
        "drop": record.get("drop"),
        "samples_per_second": record.get("samples_per_second"),
        **{k: v for k, v in (record.get("timings") or {}).items()},
    }
    mlflow.log_metrics(run_id, {k: v for k, v in summary.items() if _finite(v)})
    png = None
    if history.steps:
        figure = loss_curve_figure(history, record.get("gate_metric"))
        mlflow.log_figure(run_id, figure, "loss_curve.png")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plt.close(figure)
        png = buffer.getvalue()
    mlflow.log_dict(run_id, record, "seed_run.json")
    mlflow.end_run(run_id, ok=record["status"] == "ok")
    return png


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
