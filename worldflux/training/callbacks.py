"""Trainer callbacks: the hooks through which logging (MLflow, progress bars) plugs in without
the library importing any of it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from worldflux.training.trainer import Trainer, TrainResult


class Callback:
    """Override what you need; every hook is a no-op by default."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...

    def on_evaluate(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None: ...

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None: ...


class History(Callback):
    """Keeps every step's metrics (for loss curves and the loss-trend gate)."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.metrics: dict[str, list[float]] = {}
        self.evaluations: list[tuple[int, dict[str, float]]] = []

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.steps.append(trainer.step)
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append(value)

    def on_evaluate(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.evaluations.append((trainer.step, dict(metrics)))


class ProgressPrinter(Callback):
    """Prints a line every ``every`` steps: step, loss, throughput."""

    def __init__(self, every: int = 100, stream: TextIO = sys.stderr, label: str = "") -> None:
        self.every = every
        self.stream = stream
        self.label = label
        self._started = 0.0

    def on_train_start(self, trainer: Trainer) -> None:
        self._started = time.perf_counter()

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.step % self.every and trainer.step != trainer.config.steps:
            return
        elapsed = time.perf_counter() - self._started
        # The gate metric is shown beside the total: a total with a policy term (-Q) can rise
        # while the world model improves.
        gate = trainer.model.gate_metric
        shown = f" {gate} {metrics[gate]:.4f}" if gate in metrics and gate != "loss" else ""
        print(
            f"{self.label}step {trainer.step}/{trainer.config.steps} "
            f"loss {metrics['loss']:.4f}{shown} ({elapsed:.1f}s)",
            file=self.stream,
            flush=True,
        )
