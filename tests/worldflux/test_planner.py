from __future__ import annotations

import dataclasses

import pytest
import torch

import worldflux
from tests.worldflux.conftest import make_model
from worldflux import ActionPayload, Capability, CapabilityError, Maturity, WorldModel
from worldflux.core.types import ModelOutput, State
from worldflux.data import TrajectoryDataset
from worldflux.planners import CEMPlanner


@pytest.mark.parametrize("family", ["dreamerv3", "tdmpc2"])
def test_planner_contract_holds_for_both_families(
    family: str, pendulum: TrajectoryDataset, cartpole: TrajectoryDataset
) -> None:
    # The same planner code plans with either dynamics family, continuous or discrete.
    for data, discrete in ((pendulum, False), (cartpole, True)):
        model = make_model(family, data)
        state = model.encode(data.fixed_batches(1, 1, 2, seed=0)[0].obs[:, 0])
        planner = CEMPlanner(
            horizon=4,
            action_dim=data.spec.action_dim,
            discrete=discrete,
            num_samples=64,
            num_elites=8,
            iterations=2,
            seed=0,
        )
        payload = planner.plan(model, state)
        assert isinstance(payload, ActionPayload)
        assert payload.extras["wf.planner.horizon"] == 4
        assert payload.tensor.shape == (4, data.spec.action_dim)
        assert payload.kind == ("discrete" if discrete else "continuous")
        if discrete:
            assert torch.equal(payload.tensor.sum(-1), torch.ones(4))
        else:
            assert payload.tensor.abs().max() <= 1.0


@dataclasses.dataclass(frozen=True)
class _Config:
    target: float = 0.5


class _KnownReward(WorldModel):
    """Reward -(a - target)^2 per step, or +1 for discrete action 2: the optimum is known."""

    capabilities = frozenset({Capability.REWARD_PREDICTION})

    def __init__(self, spec: worldflux.ModelSpec) -> None:
        super().__init__(spec)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode(self, obs: torch.Tensor) -> State:
        return State({"obs": obs, "last_action": torch.zeros(obs.shape[0], self.spec.action_dim)})

    def transition(self, state: State, action: torch.Tensor) -> State:
        return State({"obs": state["obs"], "last_action": action})

    def decode(self, state: State) -> ModelOutput:
        a = state["last_action"]
        if self.spec.action_dim == 3:
            return ModelOutput(reward=a[:, 2])
        return ModelOutput(reward=-(a - self.config.target).pow(2).sum(-1))


worldflux.register_family(
    "test_known_reward",
    presets={"ci": _Config(), "small": _Config(-0.25)},
    maturity=Maturity.EXPERIMENTAL,
    description="test",
)(_KnownReward)


@pytest.mark.parametrize("preset", ["ci", "small"])
def test_cem_finds_the_best_continuous_actions(preset: str) -> None:
    model = worldflux.create_world_model(
        f"test_known_reward:{preset}", obs_shape=(1,), action_dim=2
    )
    payload = CEMPlanner(3, 2, iterations=6, seed=0).plan(model, model.encode(torch.zeros(1, 1)))
    assert torch.allclose(payload.tensor, torch.full((3, 2), model.config.target), atol=0.05)


def test_cem_finds_the_best_discrete_action() -> None:
    model = worldflux.create_world_model("test_known_reward:ci", obs_shape=(1,), action_dim=3)
    payload = CEMPlanner(5, 3, discrete=True, seed=0).plan(model, model.encode(torch.zeros(1, 1)))
    assert payload.tensor.argmax(-1).tolist() == [2] * 5
    assert payload.extras["wf.planner.expected_return"] == pytest.approx(
        sum(0.99**t for t in range(5))
    )


def test_planner_refuses_a_model_without_reward_prediction() -> None:
    from tests.worldflux.test_registry import LinearModel

    worldflux.register_family(
        "test_linear",
        presets={"ci": _Config(), "small": _Config()},
        maturity="experimental",
        description="test",
    )(LinearModel)
    model = worldflux.create_world_model("test_linear:ci", obs_shape=(2,), action_dim=1)
    with pytest.raises(CapabilityError, match="reward_prediction"):
        CEMPlanner(2, 1).plan(model, model.encode(torch.zeros(1, 2)))
