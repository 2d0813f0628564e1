"""Family-specific gates for families that do not exist yet (token, diffusion, JEPA, V-JEPA2,
skeletons), exercised with small stand-in models trained on real data, and the collapse gates
of the joint-embedding kinds on fixed evidence."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from quality.evaluate import evaluate_gates
from quality.gates.family import beats_no_change, embedding_spread, kind_of
from quality.gates.registry import expected_names
from quality.gates.result import GateResult
from quality.policy import Policy, load_policy
from quality.seed_run import SeedRunSpec, run_seed
from tests.quality.records import failed_record, seed_record
from worldflux import ModelSpec, WorldModel
from worldflux.core.types import Batch, LossOutput, ModelOutput, State
from worldflux.data import TrajectoryDataset


class _StandIn(WorldModel):
    """Predicts the change of the observation from (observation, action) with an MLP whose
    last layer starts at zero (so it starts as the no-change prediction and must learn to beat
    it); reports the joint-embedding metrics (``embedding_std``: spread of its predictions
    across the batch; ``no_change_baseline``: the loss of predicting no change) and exposes the
    diagnostics its family's gates look for. ``COLLAPSE``: every prediction is zero."""

    family = "standin"
    DIAGNOSTICS: ClassVar[tuple[str, ...]] = ()
    POISON: ClassVar[bool] = False
    COLLAPSE: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        obs, act = spec.obs_shape[0], spec.action_dim
        head = nn.Linear(32, obs)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        self.net = nn.Sequential(nn.Linear(obs + act, 32), nn.SiLU(), head)

    def _next(self, obs: Tensor, action: Tensor) -> Tensor:
        predicted = obs + self.net(torch.cat([obs, action], -1))
        return predicted * 0.0 if self.COLLAPSE else predicted

    def encode(self, obs: Tensor) -> State:
        return State({"obs": obs})

    def transition(self, state: State, action: Tensor) -> State:
        return State({"obs": self._next(state["obs"], action)})

    def update(self, state: State, action: Tensor, obs: Tensor) -> State:
        return State({"obs": obs})

    def decode(self, state: State) -> ModelOutput:
        return ModelOutput(observation=state["obs"])

    def loss(self, batch: Batch) -> LossOutput:
        pred = self._next(batch.obs[:, :-1], batch.action[:, 1:])
        target = batch.obs[:, 1:]
        mse = (pred - target).pow(2).mean()
        metrics = {
            "world_model_loss": mse.item(),
            "embedding_std": pred.detach().flatten(0, 1).std(0).mean().item(),
            "no_change_baseline": (batch.obs[:, :-1] - target).pow(2).mean().item(),
        }
        return LossOutput(mse, {"prediction": mse}, metrics)

    def diagnostics(self, batch: Batch) -> dict[str, Tensor]:
        value = self._next(batch.obs[:, :-1], batch.action[:, 1:])
        if self.POISON:
            value = value * float("nan")
        return {name: value for name in self.DIAGNOSTICS}


def _standin(
    family: str, diagnostics: tuple[str, ...], poison: bool = False, collapse: bool = False
) -> type[_StandIn]:
    return type(
        f"StandIn_{family}",
        (_StandIn,),
        {"family": family, "DIAGNOSTICS": diagnostics, "POISON": poison, "COLLAPSE": collapse},
    )


def _runs(model_cls: type[_StandIn], seeds: int = 2, steps: int = 60) -> list[dict[str, Any]]:
    policy = load_policy("tdmpc2")  # pendulum and the default thresholds

    def factory(spec: SeedRunSpec, data: TrajectoryDataset) -> WorldModel:
        return model_cls(ModelSpec(model_cls.family, "ci", data.spec.obs_shape,
                                   data.spec.action_dim, None))  # fmt: skip

    return [
        run_seed(SeedRunSpec.from_policy(policy, s, steps), policy, model_factory=factory)
        for s in range(seeds)
    ]


def _policy(family: str, kind: str | None) -> Policy:
    """The default thresholds (tdmpc2's, on pendulum) for a family of gate kind ``kind``."""
    return dataclasses.replace(load_policy("tdmpc2"), family=family, kind=kind, required_gates=())


def _family_gates(
    family: str, kind: str | None, maturity: str, runs: list[dict[str, Any]]
) -> list[GateResult]:
    """The family group of a full evaluation, after checking the evaluation reports exactly
    the registry's gate list for the kind."""
    policy = _policy(family, kind)
    gates = evaluate_gates(runs, policy, maturity=maturity, obs_shape=(3,))
    assert [g.name for g in gates] == expected_names(policy, kind_of(policy, maturity))
    return [g for g in gates if g.group == "family"]


CASES = [
    ("token", ("logits",), {"family.token.finite_logits"}),
    ("diffusion", ("scheduler.alphas_cumprod",), {"family.diffusion.finite_scheduler_states"}),
    (
        "jepa",
        ("context_projection", "target_projection"),
        {
            "family.jepa.finite_projections",
            "family.jepa.embedding_spread",
            "family.jepa.beats_no_change",
        },
    ),
    (
        "vjepa2",
        ("context_projection", "target_projection", "mask"),
        {
            "family.vjepa2.finite_projections_and_masks",
            "family.vjepa2.embedding_spread",
            "family.vjepa2.beats_no_change",
        },
    ),
]


@pytest.mark.parametrize(("family", "diagnostics", "names"), CASES)
def test_stand_in_families_pass_their_gates_and_broken_ones_fail(
    family: str, diagnostics: tuple[str, ...], names: set[str]
) -> None:
    healthy = _family_gates(family, family, "experimental", _runs(_standin(family, diagnostics)))
    assert {g.name for g in healthy} == names
    assert all(g.passed for g in healthy), [g.reason for g in healthy if not g.passed]

    poisoned = _family_gates(
        family, family, "experimental", _runs(_standin(family, diagnostics, poison=True))
    )
    finite = next(g for g in poisoned if "finite" in g.name)
    assert finite.status == "fail"
    assert "non-finite" in finite.reason
    assert "diagnostics." in finite.reason

    hidden = _family_gates(family, family, "experimental", _runs(_standin(family, ())))
    missing = next(g for g in hidden if "finite" in g.name)
    assert missing.status == "fail"
    assert "the family exposes no '" in missing.reason


def test_a_collapsed_joint_embedding_stand_in_fails_both_collapse_gates() -> None:
    diagnostics = ("context_projection", "target_projection")
    runs = _runs(_standin("jepa", diagnostics, collapse=True))
    assert all(r["status"] == "ok" for r in runs)  # it trains (finitely) to nothing
    gates = {g.name: g for g in _family_gates("jepa", "jepa", "experimental", runs)}
    assert gates["family.jepa.finite_projections"].passed
    spread = gates["family.jepa.embedding_spread"]
    assert spread.status == "fail"
    assert spread.value == 0.0
    no_change = gates["family.jepa.beats_no_change"]
    assert no_change.status == "fail"
    assert no_change.value is not None
    assert no_change.value > 1.0


def test_skeleton_gates_validate_the_contract_and_a_trainer_step() -> None:
    runs = _runs(_standin("some_skeleton", ()), seeds=1, steps=1)
    # A skeleton is judged as one whatever its policy's kind says.
    gates = {g.name: g for g in _family_gates("some_skeleton", "reference", "skeleton", runs)}
    assert set(gates) == {
        "family.skeleton.contract_validation",
        "family.skeleton.trainer_one_step_smoke",
    }
    assert all(g.passed for g in gates.values())

    class Broken(_standin("broken_skeleton", ())):  # type: ignore[misc]
        def transition(self, state: State, action: Tensor) -> State:
            return State({"other": state["obs"]})  # changes the state's keys

    broken = {
        g.name: g for g in _family_gates("broken_skeleton", None, "skeleton", _runs(Broken, 1, 1))
    }
    assert broken["family.skeleton.contract_validation"].status == "fail"
    assert "transition keeps state keys" in broken["family.skeleton.contract_validation"].reason
    assert broken["family.skeleton.trainer_one_step_smoke"].passed  # it did train a step

    failed = _family_gates("some_skeleton", None, "skeleton", [failed_record(0)])
    assert {g.name: g.status for g in failed} == {
        "family.skeleton.contract_validation": "fail",
        "family.skeleton.trainer_one_step_smoke": "fail",
    }


def test_aliases_get_their_family_gates_and_unknown_families_are_refused() -> None:
    import worldflux

    dreamer = load_policy(worldflux.canonical_family("dreamer"))
    assert dreamer.family == "dreamerv3"
    assert kind_of(dreamer, "reference") == "reference"
    assert kind_of(dreamer, "skeleton") == "skeleton"
    runs = [seed_record(s, "mystery") for s in range(3)]
    for kind in (None, "nonsense"):  # no kind in the policy, or one no gate set exists for
        gates = _family_gates("mystery", kind, "experimental", runs)
        assert [g.name for g in gates] == ["family.unknown"]
        assert gates[0].status == "fail"
        assert "no family gate set for 'mystery'" in gates[0].reason
        assert 'set "kind" in quality/policies/mystery.json' in gates[0].reason


def _jepa_runs(**after: float) -> list[dict[str, Any]]:
    runs = [seed_record(s, "jepa", kind="jepa") for s in range(3)]
    runs[1]["after"] |= after  # one seed of three differs
    return runs


def test_embedding_spread_fails_below_the_floor_in_any_seed() -> None:
    policy = load_policy("jepa")
    floor = policy["min_embedding_std"]
    name = "family.jepa.embedding_spread"
    assert embedding_spread(name, _jepa_runs(), policy).passed
    at_floor = embedding_spread(name, _jepa_runs(embedding_std=floor), policy)
    assert at_floor.passed
    assert at_floor.value == floor
    collapsed = embedding_spread(name, _jepa_runs(embedding_std=0.5 * floor), policy)
    assert collapsed.status == "fail"
    assert collapsed.value == 0.5 * floor
    assert collapsed.threshold == floor
    assert collapsed.evidence["per_seed"][1] == {"seed": 1, "embedding_std": 0.5 * floor}
    failed = [failed_record(0, "jepa"), failed_record(1, "jepa")]
    assert embedding_spread(name, failed, policy).status == "skipped"  # blocks, too


def test_beats_no_change_fails_when_the_loss_reaches_the_no_change_baseline() -> None:
    name = "family.jepa.beats_no_change"
    assert beats_no_change(name, _jepa_runs()).passed  # loss = half the baseline
    tie = beats_no_change(name, _jepa_runs(world_model_loss=0.4, no_change_baseline=0.4))
    assert tie.status == "fail"  # no better than predicting no change is not learning
    assert tie.value == 1.0
    worse = beats_no_change(name, _jepa_runs(world_model_loss=0.6, no_change_baseline=0.4))
    assert worse.status == "fail"
    assert worse.value == pytest.approx(1.5)
    assert worse.evidence["per_seed"][1] == {"seed": 1, "loss": 0.6, "no_change_baseline": 0.4}


def test_the_collapse_gates_are_part_of_the_joint_embedding_evaluations() -> None:
    collapsed = [seed_record(s, "vjepa2", kind="vjepa2") for s in range(3)]
    for r in collapsed:
        r["after"] |= {"embedding_std": 0.01, "world_model_loss": 0.5, "no_change_baseline": 0.5}
    gates = {
        g.name: g for g in evaluate_gates(collapsed, load_policy("vjepa2"), obs_shape=(1, 32, 32))
    }
    assert gates["family.vjepa2.embedding_spread"].status == "fail"
    assert gates["family.vjepa2.beats_no_change"].status == "fail"
    assert gates["family.vjepa2.finite_projections_and_masks"].passed


def test_a_probe_that_measures_nan_is_an_error_and_the_record_stays_valid_json() -> None:
    import json

    from worldflux import Capability

    class NaNDecoder(_standin("nan_decoder", ())):  # type: ignore[misc]
        capabilities = frozenset({Capability.OBSERVATION_DECODER})

        def decode(self, state: State) -> ModelOutput:
            return ModelOutput(observation=state["obs"] * float("nan"))

    (record,) = _runs(NaNDecoder, seeds=1, steps=5)
    assert record["status"] == "ok"  # the loss never decodes, so training is fine
    assert "non-finite" in record["probes"]["skill"]["error"]
    assert "non-finite" in record["probes"]["plausibility"]["error"] or (
        record["probes"]["plausibility"]["violation_fraction"] == 1.0  # NaN counts as outside
    )
    assert record["probes"]["outputs"]["finite"] is False
    json.dumps(record, allow_nan=False)  # a seed-runs file can always be written
