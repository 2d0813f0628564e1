"""What a gate sweep plans to run (quality.sweep.planned_runs) and how a policy's training
recipe reaches the trainer."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from quality.policy import POLICY_DIR, load_policy
from quality.seed_run import SeedRunSpec, run_seed
from quality.sweep import SweepConfig, planned_runs
from worldflux.training import Callback, Trainer


def test_without_steps_each_family_trains_its_policys_nightly_steps() -> None:
    families = ("tdmpc2", "token")
    policies = {f: load_policy(f) for f in families}
    assert policies["tdmpc2"].training["steps"] != policies["token"].training["steps"]
    plan = planned_runs(SweepConfig(families, (0, 1), None), policies)
    for family in families:
        seeds = [s for s in plan if s.family == family and s.kind == "seed"]
        assert [s.seed for s in seeds] == [0, 1]
        assert {s.steps for s in seeds} == {int(policies[family].training["steps"])}
        repeats = [s for s in plan if s.family == family and s.kind == "repeat"]
        assert [s.steps for s in repeats] == [int(policies[family].training["repeat_steps"])] * 2


def test_explicit_steps_apply_to_every_family() -> None:
    families = ("tdmpc2", "token")
    plan = planned_runs(SweepConfig(families, (0,), 40), {f: load_policy(f) for f in families})
    assert {s.steps for s in plan if s.kind == "seed"} == {40}


class _Rates(Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.rates.append(trainer.optimizer.param_groups[0]["lr"])


def test_the_policys_learning_rate_schedule_reaches_the_trainer(tmp_path: Path) -> None:
    (tmp_path / "default.json").write_text((POLICY_DIR / "default.json").read_text())
    (tmp_path / "tdmpc2.json").write_text(
        json.dumps({"training": {"lr": 2e-3, "lr_schedule": "cosine", "lr_floor": 0.25}})
    )
    policy = load_policy("tdmpc2", tmp_path)
    spec = SeedRunSpec.from_policy(policy, seed=0, steps=5)
    rates = _Rates()
    record = run_seed(spec, policy, with_probes=False, callbacks=[rates])
    assert record["status"] == "ok"
    assert (record["lr_schedule"], record["lr_floor"]) == ("cosine", 0.25)
    assert rates.rates[0] == pytest.approx(2e-3)
    assert rates.rates[-1] == pytest.approx(5e-4)
    assert all(a > b for a, b in itertools.pairwise(rates.rates))
