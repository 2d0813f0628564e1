from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from worldflux.nn import ema_update, embedding_spread, multistep_cosine_loss


def test_ema_update_moves_target_by_tau() -> None:
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = target.weight.clone()
    ema_update(target, online, 0.25)
    assert torch.allclose(target.weight, 0.75 * before + 0.25 * online.weight)


def test_embedding_spread_is_zero_when_collapsed() -> None:
    assert embedding_spread(torch.ones(10, 4)).abs().max() == 0
    z = F.normalize(torch.randn(4096, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert embedding_spread(z).mean() == pytest.approx(1.0, abs=0.05)


def test_multistep_cosine_loss_against_its_baseline() -> None:
    generator = torch.Generator().manual_seed(0)
    target = F.normalize(torch.randn(2, 6, 4, generator=generator), dim=-1)
    actions = torch.zeros(2, 6, 1)
    # Standing still scores exactly the no-change baseline.
    still, baseline = multistep_cosine_loss(target, target, actions, lambda p, a: p, 3, 0.5)
    assert still.item() == pytest.approx(baseline)
    assert baseline > 0

    # A predictor that knows the next target is perfect.
    def oracle(p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        length = p.shape[1]
        return target[:, target.shape[1] - length :]

    perfect, _ = multistep_cosine_loss(target, target, actions, oracle, 3, 0.5)
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)
