"""Family-specific gates for families that do not exist yet (token, diffusion, JEPA, V-JEPA2,
skeletons), exercised with small stand-in models trained on real data."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from quality.gates.family import family_gates, kind_of
from quality.policy import load_policy
from quality.seed_run import SeedRunSpec, run_seed
from worldflux import ModelSpec, WorldModel
from worldflux.core.types import Batch, LossOutput, ModelOutput, State
from worldflux.data import TrajectoryDataset


class _StandIn(WorldModel):
    """Predicts the next observation from (observation, action) with an MLP; exposes the
    diagnostics its family's gates look for."""

    family = "standin"
    DIAGNOSTICS: ClassVar[tuple[str, ...]] = ()
    POISON: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        obs, act = spec.obs_shape[0], spec.action_dim
        self.net = nn.Sequential(nn.Linear(obs + act, 32), nn.SiLU(), nn.Linear(32, obs))

    def encode(self, obs: Tensor) -> State:
        return State({"obs": obs})

    def transition(self, state: State, action: Tensor) -> State:
        return State({"obs": self.net(torch.cat([state["obs"], action], -1))})

    def update(self, state: State, action: Tensor, obs: Tensor) -> State:
        return State({"obs": obs})

    def decode(self, state: State) -> ModelOutput:
        return ModelOutput(observation=state["obs"])

    def loss(self, batch: Batch) -> LossOutput:
        pred = self.net(torch.cat([batch.obs[:, :-1], batch.action[:, 1:]], -1))
        mse = (pred - batch.obs[:, 1:]).pow(2).mean()
        return LossOutput(mse, {"prediction": mse}, {"world_model_loss": mse.item()})

    def diagnostics(self, batch: Batch) -> dict[str, Tensor]:
        value = self.net(torch.cat([batch.obs[:, :-1], batch.action[:, 1:]], -1))
        if self.POISON:
            value = value * float("nan")
        return {name: value for name in self.DIAGNOSTICS}


def _standin(family: str, diagnostics: tuple[str, ...], poison: bool = False) -> type[_StandIn]:
    return type(
        f"StandIn_{family}",
        (_StandIn,),
        {"family": family, "DIAGNOSTICS": diagnostics, "POISON": poison},
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


CASES = [
    ("token", ("logits",), {"family.token.cross_entropy_trend", "family.token.finite_logits"}),
    (
        "diffusion",
        ("scheduler.alphas_cumprod",),
        {"family.diffusion.denoise_error_trend", "family.diffusion.finite_scheduler_states"},
    ),
    (
        "jepa",
        ("context_projection", "target_projection"),
        {"family.jepa.representation_loss_trend", "family.jepa.finite_projections"},
    ),
    (
        "vjepa2",
        ("context_projection", "target_projection", "mask"),
        {"family.vjepa2.representation_loss_trend", "family.vjepa2.finite_projections_and_masks"},
    ),
]


@pytest.mark.parametrize(("family", "diagnostics", "names"), CASES)
def test_stand_in_families_pass_their_gates_and_broken_ones_fail(
    family: str, diagnostics: tuple[str, ...], names: set[str]
) -> None:
    policy = load_policy("tdmpc2")
    healthy = family_gates(family, "experimental", _runs(_standin(family, diagnostics)), policy)
    assert {g.name for g in healthy} == names
    assert all(g.passed for g in healthy), [g.reason for g in healthy if not g.passed]

    poisoned = family_gates(
        family, "experimental", _runs(_standin(family, diagnostics, poison=True)), policy
    )
    finite = next(g for g in poisoned if "finite" in g.name)
    assert finite.status == "fail"
    assert "non-finite" in finite.reason
    assert "diagnostics." in finite.reason

    hidden = family_gates(family, "experimental", _runs(_standin(family, ())), policy)
    missing = next(g for g in hidden if "finite" in g.name)
    assert missing.status == "fail"
    assert "the family exposes no '" in missing.reason


def test_skeleton_gates_validate_the_contract_and_a_trainer_step() -> None:
    policy = load_policy("tdmpc2")
    runs = _runs(_standin("some_skeleton", ()), seeds=1, steps=1)
    gates = {g.name: g for g in family_gates("some_skeleton", "skeleton", runs, policy)}
    assert set(gates) == {
        "family.skeleton.contract_validation",
        "family.skeleton.trainer_one_step_smoke",
    }
    assert all(g.passed for g in gates.values())

    class Broken(_standin("broken_skeleton", ())):  # type: ignore[misc]
        def transition(self, state: State, action: Tensor) -> State:
            return State({"other": state["obs"]})  # changes the state's keys

    broken = {
        g.name: g for g in family_gates("broken_skeleton", "skeleton", _runs(Broken, 1, 1), policy)
    }
    assert broken["family.skeleton.contract_validation"].status == "fail"
    assert "transition keeps state keys" in broken["family.skeleton.contract_validation"].reason


def test_aliases_get_their_family_gates_and_unknown_families_are_refused() -> None:
    import worldflux

    assert kind_of(worldflux.canonical_family("dreamer"), "reference") == "reference"
    gates = family_gates("mystery", "experimental", [], load_policy("tdmpc2"))
    assert gates[0].status == "fail"
    assert "no family-specific gate set" in gates[0].reason


def test_a_probe_that_measures_nan_is_an_error_and_the_record_stays_valid_json() -> None:
    import json

    from worldflux import Capability

    class NaNDecoder(_standin("nan_decoder", ())):  # type: ignore[misc]
        capabilities = frozenset({Capability.OBSERVATION_DECODER})

        def decode(self, state: State) -> ModelOutput:
            return ModelOutput(observation=state["obs"] * float("nan"))

    (record,) = _runs(NaNDecoder, seeds=1, steps=5)
    assert record["status"] == "ok"  # the loss never decodes, so training is fine
    assert "non-finite" in record["probes"]["open_loop"]["error"]
    assert "non-finite" in record["probes"]["plausibility"]["error"] or (
        record["probes"]["plausibility"]["violation_fraction"] == 1.0  # NaN counts as outside
    )
    assert record["probes"]["outputs"]["finite"] is False
    json.dumps(record, allow_nan=False)  # a seed-runs file can always be written
