"""The fused RSSM filter (one autograd node for the whole sequence, hand-written backward)
equals plain autograd."""

from __future__ import annotations

import pytest
import torch

from tests.worldflux.conftest import make_model
from worldflux.core.types import State
from worldflux.data import TrajectoryDataset
from worldflux.models.dreamerv3.cell import posterior_sequence, posterior_step_reference


@pytest.mark.parametrize("restarts", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_fused_sequence_matches_a_loop_of_the_reference_values_and_gradients(
    cartpole: TrajectoryDataset, training: bool, restarts: bool
) -> None:
    model = make_model("dreamerv3", cartpole).double().train(training)
    c = model.config
    params = model._cell_params()
    steps, batch = 6, 5
    torch.manual_seed(3)
    h0 = torch.randn(batch, c.deter, dtype=torch.double, requires_grad=True)
    z0 = torch.randn(batch, c.stoch * c.classes, dtype=torch.double, requires_grad=True)
    a = torch.randn(steps, batch, c.hidden, dtype=torch.double, requires_grad=True)
    e = torch.randn(steps, batch, c.hidden, dtype=torch.double, requires_grad=True)
    race = model._race(steps, batch)
    race = None if race is None else race.double()
    keep = None
    if restarts:  # episodes start mid-sequence (and one at the first step)
        keep = torch.ones(steps, batch, 1, dtype=torch.double)
        keep[0, 1] = keep[2, 0] = keep[2, 3] = keep[5, 4] = 0.0

    fast = posterior_sequence(h0, z0, a, e, race, keep, *params)
    h, z, slow_steps = h0, z0, []
    for t in range(steps):
        if keep is not None:
            h, z = h * keep[t], z * keep[t]
        h, z, logits = posterior_step_reference(
            h, z, a[t], e[t], None if race is None else race[t], *params
        )
        slow_steps.append((h, z, logits))
    slow = [torch.stack(outputs) for outputs in zip(*slow_steps, strict=True)]
    for f, s in zip(fast, slow, strict=True):
        assert torch.allclose(f, s, atol=1e-10)

    weights = [torch.randn_like(t) for t in fast]
    tensors = [h0, z0, a, e, *(p for p in params if isinstance(p, torch.Tensor))]
    g_fast = torch.autograd.grad(
        sum((w * t).sum() for w, t in zip(weights, fast, strict=True)), tensors
    )
    g_slow = torch.autograd.grad(
        sum((w * t).sum() for w, t in zip(weights, slow, strict=True)), tensors
    )
    for gf, gs in zip(g_fast, g_slow, strict=True):
        assert torch.allclose(gf, gs, atol=1e-9)
    assert all(g.abs().sum() > 0 for g in g_fast)


@pytest.mark.parametrize("restart_at", [None, 3])
def test_sequence_filter_equals_encode_then_step_by_step_update(
    cartpole: TrajectoryDataset, restart_at: int | None
) -> None:
    """Training's filter and the step-by-step contract agree: a segment starts as ``encode``
    (no history, no action; segments may start mid-episode), then ``update`` per step; an
    episode start inside the segment resets the state entering that step."""
    model = make_model("dreamerv3", cartpole).eval()
    batch = cartpole.fixed_batches(1, 3, 6, seed=0)[0]
    assert batch.action[:, 0].abs().sum() > 0  # the recorded first action is ignored
    if restart_at is not None:
        batch.is_first[1, restart_at] = 1.0
    with torch.no_grad():
        hs, zs, _ = model.observe(batch)
        state = model.encode(batch.obs[:, 0])
        for t in range(1, 6):
            assert torch.allclose(state["deter"], hs[t - 1], atol=1e-6)
            assert torch.allclose(state["stoch"], zs[t - 1], atol=1e-6)
            keep = (1.0 - batch.is_first[:, t]).unsqueeze(-1)
            state = State({"deter": state["deter"] * keep, "stoch": state["stoch"] * keep})
            state = model.update(state, batch.action[:, t], batch.obs[:, t])
        assert torch.allclose(state["deter"], hs[-1], atol=1e-6)
        assert torch.allclose(state["stoch"], zs[-1], atol=1e-6)
