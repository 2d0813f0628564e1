from __future__ import annotations

import pytest
import torch

from tests.worldflux.conftest import make_model
from worldflux import ActionPayload, Capability, CapabilityError, ConditionPayload, ContractError
from worldflux.data import TrajectoryDataset

FAMILIES = ["dreamerv3", "tdmpc2"]


@pytest.mark.parametrize("family", FAMILIES)
def test_state_api_shapes(family: str, pendulum: TrajectoryDataset) -> None:
    model = make_model(family, pendulum).eval()
    batch = pendulum.fixed_batches(1, 5, 8, seed=0)[0]
    state = model.encode(batch.obs[:, 0])
    assert state.batch_size == 5
    nxt = model.transition(state, batch.action[:, 1])
    post = model.update(state, batch.action[:, 1], batch.obs[:, 1])
    assert nxt.tensors.keys() == state.tensors.keys() == post.tensors.keys()
    for key, value in nxt.tensors.items():
        assert value.shape == state[key].shape
    trajectory = model.rollout(state, batch.action[:, 1:4].transpose(0, 1))
    assert trajectory.horizon == 3
    assert next(iter(trajectory.states.tensors.values())).shape[0] == 4  # T + 1 states
    assert trajectory.rewards is not None
    assert trajectory.rewards.shape == (3, 5)
    out = model.loss(batch)
    assert out.loss.ndim == 0
    assert torch.isfinite(out.loss)
    assert model.gate_metric in out.metrics
    assert out.metrics[model.gate_metric] >= 0


def test_dreamer_decodes_observation_reward_and_continue(cartpole: TrajectoryDataset) -> None:
    model = make_model("dreamerv3", cartpole).eval()
    obs = cartpole.fixed_batches(1, 3, 2, seed=0)[0].obs[:, 0]
    out = model.decode(model.encode(obs))
    assert out.observation is not None
    assert out.observation.shape == obs.shape
    assert out.reward is not None
    assert out.reward.shape == (3,)
    assert out.continue_prob is not None
    assert ((out.continue_prob >= 0) & (out.continue_prob <= 1)).all()
    assert set(model.loss(cartpole.fixed_batches(1, 2, 4, seed=0)[0]).components) >= {
        "reconstruction",
        "kl_dynamics",
        "kl_representation",
        "reward",
        "continue",
    }


def test_tdmpc2_keeps_the_policy_term_apart(pendulum: TrajectoryDataset) -> None:
    model = make_model("tdmpc2", pendulum)
    out = model.loss(pendulum.fixed_batches(1, 4, 6, seed=0)[0])
    assert set(out.components) == {"consistency", "reward", "value", "policy"}
    c = model.config
    expected = (
        c.consistency_coef * out.components["consistency"]
        + c.reward_coef * out.components["reward"]
        + c.value_coef * out.components["value"]
    )
    assert out.metrics["world_model_loss"] == pytest.approx(expected.item(), rel=1e-6)
    assert out.loss.item() == pytest.approx(
        expected.item() + out.components["policy"].item(), rel=1e-5
    )


def test_missing_capability_is_a_clear_error(pendulum: TrajectoryDataset) -> None:
    model = make_model("tdmpc2", pendulum)
    assert Capability.OBSERVATION_DECODER not in model.capabilities
    with pytest.raises(CapabilityError, match="observation_decoder"):
        model.require(Capability.OBSERVATION_DECODER)


def test_tdmpc2_target_network_is_an_ema(pendulum: TrajectoryDataset) -> None:
    model = make_model("tdmpc2", pendulum)
    online = next(model.qs.parameters())
    target = next(model.target_qs.parameters())
    assert not target.requires_grad
    with torch.no_grad():
        online.add_(1.0)
    before = target.clone()
    model.after_optimizer_step()
    assert torch.allclose(target, before + model.config.tau * (online - before))


def test_payload_extras_must_be_namespaced() -> None:
    ok = ActionPayload("continuous", torch.zeros(3, 2), extras={"wf.planner.horizon": 3})
    assert ok.extras["wf.planner.horizon"] == 3
    with pytest.raises(ContractError, match=r"wf\.<domain>\.<name>"):
        ActionPayload("continuous", torch.zeros(3, 2), extras={"horizon": 3})
    with pytest.raises(ContractError, match="kind"):
        ActionPayload("teleport", torch.zeros(1, 1))  # type: ignore[arg-type]
    with pytest.raises(ContractError):
        ConditionPayload(extras={"wf.Goal": 1})
    assert ConditionPayload(goal=torch.ones(2), extras={"wf.goal.source": "x"}).goal is not None


def test_dreamer_latent_samples_follow_the_categorical(cartpole: TrajectoryDataset) -> None:
    model = make_model("dreamerv3", cartpole, unimix=0.0)
    logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])).repeat(4)  # 4 latents x 4 classes
    torch.manual_seed(0)
    race = model._race(20000)
    assert race is not None
    samples = model._sample(logits.expand(20000, 16), race).detach().reshape(20000, 4, 4)
    assert torch.equal(samples.sum(-1), torch.ones(20000, 4))  # one-hot per latent
    freq = samples.mean(0)
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]).expand(4, 4), atol=0.015)
    model.eval()
    mode = model._sample(logits.expand(3, 16), model._race(3)).detach().reshape(3, 4, 4)
    assert mode.argmax(-1).eq(3).all()  # evaluation uses the mode


def test_straight_through_gradient_matches_the_autograd_formula(
    cartpole: TrajectoryDataset,
) -> None:
    """The hand-written backward equals autograd on one_hot + (p - sg(p))."""
    model = make_model("dreamerv3", cartpole)
    logits = torch.randn(8, 16, requires_grad=True)
    race = model._race(8)
    weights = torch.randn(8, 16)
    fast = model._sample(logits, race)
    (fast * weights).sum().backward()
    assert logits.grad is not None
    fast_grad = logits.grad.clone()
    logits.grad = None
    probs = model._probs(logits)
    reference = fast.detach().reshape(8, 4, 4) + (probs - probs.detach())
    (reference.flatten(-2) * weights).sum().backward()
    assert torch.allclose(fast_grad, logits.grad, atol=1e-6)
    assert fast_grad.abs().sum() > 0
