"""TD-MPC2's fast training path (fused latent rollout, two-hot helpers, functional MLP calls)
computes exactly what the plain-autograd definitions compute: values and gradients in float64."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
import torch
from torch import Tensor

from tests.worldflux.conftest import make_model
from worldflux.core.types import Batch
from worldflux.data import TrajectoryDataset
from worldflux.models.tdmpc2.heads import (
    run_mlp,
    simnorm_feature_major,
    two_hot_ce,
    two_hot_pairs,
)
from worldflux.models.tdmpc2.model import LOG_STD_MAX, LOG_STD_MIN, TDMPC2
from worldflux.models.tdmpc2.rollout import latent_rollout, latent_rollout_reference
from worldflux.nn import TwoHot, mlp, simnorm

TOL = {"rtol": 1e-10, "atol": 1e-12}


def _perturbed(model: torch.nn.Module, scale: float = 0.2) -> torch.nn.Module:
    """Random weights everywhere (the zero-initialized heads would hide gradient mistakes)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def test_fused_rollout_matches_autograd() -> None:
    torch.manual_seed(0)
    dynamics = _perturbed(mlp(33, 16, 32, 2).double())
    e = torch.randn(5, 32, dtype=torch.double, requires_grad=True)
    actions = torch.randn(7, 5, 1, dtype=torch.double)
    weight = torch.randn(8, 5, 32, dtype=torch.double)
    inputs = [e, *dynamics.parameters()]
    results = []
    for rollout in (latent_rollout, latent_rollout_reference):
        latents = rollout(e, actions, dynamics, 8)  # type: ignore[arg-type]
        results.append((latents, torch.autograd.grad((weight * latents).sum(), inputs)))
    (fast, fast_grads), (ref, ref_grads) = results
    assert fast.shape == ref.shape == (8, 5, 32)
    torch.testing.assert_close(fast, ref, **TOL)
    for got, want in zip(fast_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_two_hot_helpers_match_twohot() -> None:
    twohot = TwoHot(101, -10.0, 10.0).double()
    torch.manual_seed(0)
    # Values inside, at and beyond the bins' range.
    value = torch.cat([torch.randn(40) * 30, torch.tensor([0.0, 1e-3, -1e6, 1e6])]).double()
    logits = torch.randn(44, 101, dtype=torch.double, requires_grad=True)
    weight = torch.randn(44, dtype=torch.double)

    fast = two_hot_ce(logits, two_hot_pairs(value, twohot.bins))
    ref = twohot.loss(logits, value)
    torch.testing.assert_close(fast, ref, **TOL)
    (g_fast,) = torch.autograd.grad((weight * fast).sum(), logits)
    (g_ref,) = torch.autograd.grad((weight * ref).sum(), logits)
    torch.testing.assert_close(g_fast, g_ref, **TOL)


def test_feature_major_simnorm_and_functional_mlp() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4, 32, dtype=torch.double) * 5
    torch.testing.assert_close(simnorm_feature_major(x, 8), simnorm(x, 8), **TOL)

    net = _perturbed(mlp(32, 16, 7, 2).double())
    x.requires_grad_(True)
    torch.testing.assert_close(run_mlp(net, x), net(x), **TOL)
    out = run_mlp(net, x, frozen=True)
    (g_x,) = torch.autograd.grad(out.sum(), x)
    (g_ref,) = torch.autograd.grad(net(x).sum(), x)
    torch.testing.assert_close(g_x, g_ref, **TOL)
    assert all(p.grad is None for p in net.parameters())


def _reference_loss(model: TDMPC2, batch: Batch) -> dict[str, Tensor]:
    """TD-MPC2's loss as docs/worldflux.md writes it, in plain autograd with module calls."""
    c = model.config
    group = c.simnorm_dim

    def encode(x: Tensor) -> Tensor:
        return simnorm(model.encoder(x.flatten(-len(model.spec.obs_shape))), group)

    def q_values(qs: torch.nn.ModuleList, z: Tensor, a: Tensor) -> Tensor:
        za = torch.cat([z, a], -1)
        return torch.stack([model.twohot.mean(q(za)) for q in qs])

    def policy_value(qs: torch.nn.ModuleList, z: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw_log_std = model.policy(z).chunk(2, -1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw_log_std) + 1)
        eps = torch.randn_like(mean) if model.training else torch.zeros_like(mean)
        action = torch.tanh(mean + eps * log_std.exp())
        log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - torch.log(1 - action.pow(2) + 1e-6).sum(-1)
        return q_values(qs, z, action), -log_prob

    obs = batch.obs.transpose(0, 1)
    action = batch.action.transpose(0, 1)[1:]
    reward = batch.reward.transpose(0, 1)[1:]
    done = batch.terminated.transpose(0, 1)[1:]
    horizon = action.shape[0]
    weight = c.rho ** torch.arange(horizon, dtype=obs.dtype)
    weight = weight / weight.sum()
    with torch.no_grad():
        next_z = encode(obs[1:])
        target_q = policy_value(model.target_qs, next_z)[0]
        pick = torch.randperm(c.num_q)[:2] if model.training else torch.arange(2)
        td_target = reward + c.discount * (1 - done) * target_q[pick].min(0).values
    z = encode(obs[0])
    zs, preds = [], []
    for t in range(horizon):
        zs.append(z)
        z = simnorm(model.dynamics(torch.cat([z, action[t]], -1)), group)
        preds.append(z)
    z_seq = torch.stack(zs)
    consistency = (weight * (torch.stack(preds) - next_z).pow(2).mean((1, 2))).sum()
    za = torch.cat([z_seq, action], -1)
    reward_loss = (weight * model.twohot.loss(model.reward_head(za), reward).mean(1)).sum()
    value_ce = torch.stack([model.twohot.loss(q(za), td_target) for q in model.qs])
    value_loss = (weight * value_ce.mean((0, 2))).sum()
    model.qs.requires_grad_(False)
    q_pi, entropy = policy_value(model.qs, z_seq.detach())
    model.qs.requires_grad_(True)
    policy_loss = -(weight * (q_pi.mean(0) + c.entropy_coef * entropy).mean(1)).sum()
    return {
        "consistency": consistency,
        "reward": reward_loss,
        "value": value_loss,
        "policy": policy_loss,
    }


@pytest.mark.parametrize("training", [True, False])
def test_loss_and_gradients_match_the_reference(
    pendulum: TrajectoryDataset, training: bool
) -> None:
    model = make_model("tdmpc2", pendulum, num_q=3)
    assert isinstance(model, TDMPC2)
    _perturbed(model.double())
    with torch.no_grad():  # target networks that differ from the online ones and each other
        for target in model.target_qs.parameters():
            target.add_(torch.randn_like(target))
    model.train(training)
    raw = pendulum.fixed_batches(1, 6, 9, seed=0)[0]
    columns = {f.name: getattr(raw, f.name) for f in fields(raw)}
    batch = Batch(**{k: t.double() if t.is_floating_point() else t for k, t in columns.items()})
    params = [p for p in model.parameters() if p.requires_grad]
    c = model.config

    for seed in range(3):  # different target networks picked, different policy noise
        torch.manual_seed(seed)
        out = model.loss(batch)
        fast_grads = torch.autograd.grad(out.loss, params, allow_unused=True)
        after_fast = torch.rand(1)
        torch.manual_seed(seed)
        ref = _reference_loss(model, batch)
        ref_total = (
            c.consistency_coef * ref["consistency"]
            + c.reward_coef * ref["reward"]
            + c.value_coef * ref["value"]
            + ref["policy"]
        )
        ref_grads = torch.autograd.grad(ref_total, params, allow_unused=True)
        # The same random numbers were drawn, in the same order.
        assert torch.equal(after_fast, torch.rand(1))

        for name, value in ref.items():
            torch.testing.assert_close(out.components[name], value, **TOL)
        torch.testing.assert_close(out.loss, ref_total, **TOL)
        for got, want in zip(fast_grads, ref_grads, strict=True):
            assert (got is None) == (want is None)
            if want is not None:
                torch.testing.assert_close(got, want, **TOL)
