"""What a seed run leaves in MLflow: parameters, the data set as an input with its digest,
per-step metrics, held-out metrics before and after, a loss-curve plot and the run record."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from typing import Any

from release.mlflow import Mlflow
from worldflux.training import Callback, History, Trainer


class LogProgress(Callback):
    """Reports training progress at most every ``every_seconds`` and at the last step: a long
    run shows it is alive, a short one logs one line (every line is an event the Dagster
    instance stores, ~15 ms each)."""

    def __init__(
        self,
        log: Callable[[str], None],
        total_steps: int,
        label: str,
        every_seconds: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.label, self.total = log, label, total_steps
        self.every, self.clock = every_seconds, clock
        self.last = clock()

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        now = self.clock()
        if now - self.last >= self.every or trainer.step == self.total:
            self.last = now
            loss = metrics.get("loss", float("nan"))
            self.log(f"{self.label}: step {trainer.step}/{self.total}, loss {loss:.4g}")


def loss_curve_png(history: History, gate_metric: str | None) -> bytes:
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
    # Fixed margins for the fixed size: tight_layout would cost half the drawing time.
    figure.subplots_adjust(left=0.1, right=0.98, top=0.97, bottom=0.12)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def track_seed_run(
    mlflow: Mlflow,
    run_id: str,
    record: dict[str, Any],
    history: History,
    manifest: dict[str, Any],
) -> bytes | None:
    """Log a finished (or failed) seed run to its MLflow run and close it. Returns the
    loss-curve PNG (None when no step ran), for the object store and the Dagster UI. Every
    metric goes in one batch and the plot is drawn once: this runs once per checkpoint."""
    mlflow.log_dataset(
        run_id,
        manifest["name"],
        manifest["digest"],
        manifest["uri"],
        {"rows": manifest["rows"], "episodes": manifest["episodes"], "sha256": manifest["sha256"]},
    )
    series = {f"train/{k}": v for k, v in history.metrics.items()}
    for phase in ("before", "after"):
        values = record.get(phase) or {}
        series |= {f"held_out_{phase}/{k}": [v] for k, v in values.items() if v is not None}
    summary = {
        "drop": record.get("drop"),
        "samples_per_second": record.get("samples_per_second"),
        **{k: v for k, v in (record.get("timings") or {}).items()},
    }
    series |= {k: [v] for k, v in summary.items() if _finite(v)}
    mlflow.log_series(run_id, series)
    png = None
    if history.steps:
        png = loss_curve_png(history, record.get("gate_metric"))
        mlflow.log_bytes(run_id, png, "loss_curve.png")
    mlflow.log_dict(run_id, record, "seed_run.json")
    mlflow.end_run(run_id, ok=record["status"] == "ok")
    return png


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
