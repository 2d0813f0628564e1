"""The ``jepa`` family: contract shapes, learning on real data without collapse, the EMA target,
exact save/load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import worldflux
from tests.worldflux.conftest import assert_most_seeds_learn, make_model, train_seeds
from worldflux.core.model import Capability
from worldflux.data import TrajectoryDataset
from worldflux.models.jepa import JEPA
from worldflux.training import Trainer, TrainerConfig

SEEDS = range(5)
STEPS = 80  # measured: held-out drop 0.83-0.88 at 80 steps on CartPole, seeds 0-4


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(data: TrajectoryDataset, size: int = 4, length: int = 8) -> worldflux.Batch:
    return data.fixed_batches(1, size, length, seed=1)[0]


def test_contract_shapes(cartpole: TrajectoryDataset) -> None:
    model = make_model("jepa", cartpole)
    batch = _batch(cartpole)
    embed = model.config.embed
    state = model.encode(batch.obs[:, 0])
    assert state["embedding"].shape == (4, embed)
    # Embeddings are unit vectors, before and after a predictor step.
    torch.testing.assert_close(state["embedding"].norm(dim=-1), torch.ones(4))
    nxt = model.transition(state, batch.action[:, 1])
    torch.testing.assert_close(nxt["embedding"].norm(dim=-1), torch.ones(4))
    assert model.update(state, batch.action[:, 1], batch.obs[:, 1])["embedding"].shape == (4, embed)
    out = model.decode(state)
    assert out.reward is not None
    assert out.reward.shape == (4,)
    assert out.observation is None
    trajectory = model.rollout(state, batch.action[:, 1:6].transpose(0, 1))
    assert trajectory.states["embedding"].shape == (6, 4, embed)
    assert trajectory.rewards is not None
    assert trajectory.rewards.shape == (5, 4)
    assert model.capabilities == frozenset({Capability.REWARD_PREDICTION})
    loss = model.loss(batch)
    assert set(loss.components) == {"prediction", "variance", "reward"}
    assert loss.metrics["world_model_loss"] >= 0
    diagnostics = model.diagnostics(batch)
    assert set(diagnostics) == {"context_projection", "target_projection"}
    assert diagnostics["target_projection"].shape == (4, 8, embed)


def test_listed_as_experimental() -> None:
    entry = next(m for m in worldflux.list_models() if m["family"] == "jepa")
    assert entry["maturity"] == "experimental"
    assert {"ci", "small"} <= set(entry["presets"])


def test_evaluation_is_deterministic_and_consumes_no_rng(cartpole: TrajectoryDataset) -> None:
    model = make_model("jepa", cartpole).eval()
    batch = _batch(cartpole)
    torch.manual_seed(123)
    first = model.loss(batch).metrics
    after_first = torch.rand(1)
    torch.manual_seed(123)
    assert model.loss(batch).metrics == first
    assert torch.equal(torch.rand(1), after_first)


def test_target_is_an_ema_of_the_context_encoder_and_gets_no_gradient(
    cartpole: TrajectoryDataset,
) -> None:
    model = make_model("jepa", cartpole)
    assert isinstance(model, JEPA)
    train, _ = cartpole.split(0.2, seed=0)
    trainer = Trainer(model, train, TrainerConfig(steps=3, seq_len=8, device="cpu"))
    trainer.fit()  # the encoders now differ
    old_target = [p.clone() for p in model.target_encoder.parameters()]
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
    assert not any(p is q for p in model.target_encoder.parameters() for q in trainer.params)
    trainer.train_step()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    tau = model.config.tau
    online = list(model.encoder.parameters())
    for new, old, live in zip(model.target_encoder.parameters(), old_target, online, strict=True):
        torch.testing.assert_close(new, (1 - tau) * old + tau * live)
    # The target is persistent: it is saved with the weights.
    assert any(k.startswith("target_encoder.") for k in model.state_dict())


def test_horizon_uses_the_actions_it_should(cartpole: TrajectoryDataset) -> None:
    """The k-step prediction of row s + k depends on actions s+1..s+k only: changing the action
    of the last row changes the loss, changing the first row's action (which led INTO the
    segment) does not."""
    model = make_model("jepa", cartpole)
    train, _ = cartpole.split(0.2, seed=0)
    Trainer(model, train, TrainerConfig(steps=5, seq_len=8, device="cpu")).fit()
    model.eval()
    batch = _batch(cartpole)
    base = model.loss(batch).components["prediction"]
    for row, changes in ((0, False), (-1, True)):
        action = batch.action.clone()
        action[:, row] = 1 - action[:, row]
        changed = model.loss(dataclasses.replace(batch, action=action))
        assert bool(changed.components["prediction"] != base) is changes


@pytest.mark.slow
def test_held_out_loss_drops_without_collapse(cartpole: TrajectoryDataset) -> None:
    config = TrainerConfig(steps=STEPS, batch_size=16, seq_len=16, device="cpu")
    results = train_seeds(lambda: make_model("jepa", cartpole), cartpole, config, SEEDS)
    for _, after in results:
        # Not by collapse: the embeddings stay spread and beat "nothing changes" by far.
        assert after["embedding_std"] > 0.5, after
        assert after["world_model_loss"] < 0.5 * after["no_change_baseline"], after
    assert_most_seeds_learn(results)


def test_save_load_round_trip_is_exact(cartpole: TrajectoryDataset, tmp_path: Path) -> None:
    model = make_model("jepa", cartpole)
    train, _ = cartpole.split(0.2, seed=0)
    Trainer(model, train, TrainerConfig(steps=5, seq_len=8, device="cpu")).fit()
    model.eval()
    reloaded = worldflux.from_pretrained(model.save_pretrained(tmp_path / "jepa")).eval()
    batch = _batch(cartpole)
    assert reloaded.loss(batch).metrics == model.loss(batch).metrics
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    state = reloaded.encode(batch.obs[:, 0])
    assert torch.equal(state["embedding"], model.encode(batch.obs[:, 0])["embedding"])
