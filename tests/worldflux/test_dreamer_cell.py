"""The fused RSSM step (one autograd node, hand-written backward) equals plain autograd."""

from __future__ import annotations

import pytest
import torch

from tests.worldflux.conftest import make_model
from worldflux.data import TrajectoryDataset
from worldflux.models.dreamerv3.cell import PosteriorStep, posterior_step_reference


def _inputs(model: torch.nn.Module, batch: int = 5) -> tuple[torch.Tensor, ...]:
    c = model.config
    torch.manual_seed(3)
    h = torch.randn(batch, c.deter, dtype=torch.double, requires_grad=True)
    z = torch.randn(batch, c.stoch * c.classes, dtype=torch.double, requires_grad=True)
    a = torch.randn(batch, c.hidden, dtype=torch.double, requires_grad=True)
    e = torch.randn(batch, c.hidden, dtype=torch.double, requires_grad=True)
    return h, z, a, e


def _weighted(weights: list[torch.Tensor], outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.stack([(w * t).sum() for w, t in zip(weights, outputs, strict=True)]).sum()


@pytest.mark.parametrize("training", [True, False])
def test_fused_step_matches_autograd_values_and_gradients(
    cartpole: TrajectoryDataset, training: bool
) -> None:
    model = make_model("dreamerv3", cartpole).double().train(training)
    params = model._cell_params()
    race = model._race(5)
    race = None if race is None else race.double()
    inputs = _inputs(model)
    fast = PosteriorStep.apply(*inputs, race, *params)
    slow = posterior_step_reference(*inputs, race, *params)
    for f, s in zip(fast, slow, strict=True):
        assert torch.allclose(f, s, atol=1e-10)
    weights = [torch.randn_like(t) for t in fast]
    tensors = [*inputs, *(p for p in params if isinstance(p, torch.Tensor))]
    g_fast = torch.autograd.grad(
        sum((w * t).sum() for w, t in zip(weights, fast, strict=True)), tensors
    )
    g_slow = torch.autograd.grad(
        sum((w * t).sum() for w, t in zip(weights, slow, strict=True)), tensors
    )
    for gf, gs in zip(g_fast, g_slow, strict=True):
        assert torch.allclose(gf, gs, atol=1e-9)
    assert all(g.abs().sum() > 0 for g in g_fast)


def test_sequence_filter_equals_encode_then_step_by_step_update(
    cartpole: TrajectoryDataset,
) -> None:
    """Training's filter and the step-by-step contract agree: a segment starts as ``encode``
    (no history, no action; segments may start mid-episode), then ``update`` per step."""
    model = make_model("dreamerv3", cartpole).eval()
    batch = cartpole.fixed_batches(1, 3, 6, seed=0)[0]
    assert batch.action[:, 0].abs().sum() > 0  # the recorded first action is ignored
    with torch.no_grad():
        hs, zs, _ = model.observe(batch)
        state = model.encode(batch.obs[:, 0])
        for t in range(6):
            if t:
                state = model.update(state, batch.action[:, t], batch.obs[:, t])
            assert torch.allclose(state["deter"], hs[t], atol=1e-6)
            assert torch.allclose(state["stoch"], zs[t], atol=1e-6)
