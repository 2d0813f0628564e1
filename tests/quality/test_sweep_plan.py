"""What a gate sweep plans to run (quality.sweep.planned_runs)."""

from __future__ import annotations

from quality.policy import load_policy
from quality.sweep import SweepConfig, planned_runs


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
