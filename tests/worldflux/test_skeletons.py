"""Skeleton families: build from their ci preset, satisfy the contract, train a step, save
and load exactly, and are listed as skeletons."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import worldflux
from quality.probes import contract_check
from worldflux.data import TrajectoryDataset
from worldflux.training import Trainer, TrainerConfig

SKELETONS = ["dit", "ssm", "renderer3d", "physics", "gan"]


def _model(family: str, data: TrajectoryDataset) -> worldflux.WorldModel:
    torch.manual_seed(0)
    return worldflux.create_world_model(
        f"{family}:ci", obs_shape=data.spec.obs_shape, action_dim=data.spec.action_dim
    )


@pytest.mark.parametrize("family", SKELETONS)
def test_skeleton_contract_step_and_round_trip(
    family: str, pendulum: TrajectoryDataset, tmp_path: Path
) -> None:
    assert {"family": family, "maturity": "skeleton"}.items() <= next(
        e for e in worldflux.list_models() if e["family"] == family
    ).items()
    model = _model(family, pendulum)
    batch = pendulum.fixed_batches(1, 4, 6, seed=0)[0]
    check = contract_check(model, batch)
    assert check["ok"], check["problems"]
    trainer = Trainer(
        model, pendulum, TrainerConfig(steps=1, batch_size=4, seq_len=6, device="cpu")
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit()
    assert trainer.step == 1
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.save_pretrained(tmp_path)
    again = worldflux.from_pretrained(tmp_path).eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.loss(batch).loss, again.loss(batch).loss)
        a = model.rollout(model.encode(batch.obs[:, 0]), batch.action[:, 1:].transpose(0, 1))
        b = again.rollout(again.encode(batch.obs[:, 0]), batch.action[:, 1:].transpose(0, 1))
    assert torch.equal(a.states["latent"], b.states["latent"])


def test_gan_generator_and_discriminator_have_separate_optimizers(
    pendulum: TrajectoryDataset,
) -> None:
    model = _model("gan", pendulum)
    trainer = Trainer(
        model, pendulum, TrainerConfig(steps=3, batch_size=4, seq_len=6, device="cpu")
    )
    in_trainer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    disc = list(model.discriminator.parameters())
    assert not any(id(p) in in_trainer for p in disc)
    assert all(id(p) in in_trainer for p in model.generator.parameters())
    before = [p.clone() for p in disc]
    trainer.fit()
    assert model.d_optimizer is not None
    assert {id(p) for g in model.d_optimizer.param_groups for p in g["params"]} == {
        id(p) for p in disc
    }
    assert any(not torch.equal(b, p) for b, p in zip(before, disc, strict=True))
    assert not any(p.requires_grad for p in disc)  # frozen again for the trainer


def test_ssm_recurrence_is_stable_for_any_parameters(pendulum: TrajectoryDataset) -> None:
    model = _model("ssm", pendulum)
    with torch.no_grad():
        model.log_rate.fill_(-50.0)  # softplus ~ 0: the slowest decay the model can express
        model.log_dt.fill_(5.0)
        z = torch.ones(1, model.config.latent)
        for _ in range(100):
            z = model._step(z, torch.zeros(1, 1))
    assert torch.isfinite(z).all()
    assert z.abs().max() <= 1.0
