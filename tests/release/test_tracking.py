"""Training progress in the Dagster log: a line at most every ``every_seconds`` and at the last
step, whatever the number of steps (each line is an event the instance stores)."""

from types import SimpleNamespace
from typing import Any

from release.tracking import LogProgress


def _progress(every: float, steps: int, tick: float) -> list[str]:
    now = [0.0]
    lines: list[str] = []
    progress = LogProgress(lines.append, steps, "tdmpc2 seed 0", every, clock=lambda: now[0])
    trainer: Any = SimpleNamespace(step=0)
    for step in range(1, steps + 1):
        now[0] += tick
        trainer.step = step
        progress.on_step_end(trainer, {"loss": 1.0 / step})
    return lines


def test_a_short_run_logs_its_last_step_only() -> None:
    assert _progress(every=15.0, steps=100, tick=0.01) == ["tdmpc2 seed 0: step 100/100, loss 0.01"]


def test_a_long_run_logs_every_interval_and_the_last_step() -> None:
    lines = _progress(every=15.0, steps=1000, tick=0.125)  # 125 s of training
    steps = [int(line.split("step ")[1].split("/")[0]) for line in lines]
    assert steps == [120, 240, 360, 480, 600, 720, 840, 960, 1000]
