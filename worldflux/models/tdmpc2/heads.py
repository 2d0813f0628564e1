"""Cheaper forms of the pieces of TD-MPC2's loss (the same math as ``worldflux.nn``).

With batch x sequence rows and tiny MLPs, a training step is bound by per-op dispatch and
autograd bookkeeping more than by arithmetic. These helpers compute what calling an
``nn.Sequential``, ``TwoHot.loss`` and ``simnorm`` compute, with fewer ops and graph nodes:

- ``run_mlp`` calls the layers' functions directly (no module-call overhead), optionally with
  detached parameters (gradients then reach the input only).
- ``two_hot_ce`` is the two-hot cross-entropy without the dense target: a target spread over
  bins i and i + 1 reads two log-probabilities, and the gradient, softmax(logits) - target, is
  written by hand (one graph node instead of six).
- ``simnorm_feature_major`` runs the group softmax on a feature-major copy: for groups of 8
  the softmax kernel is several times faster over a strided dimension than over the last one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.nn import symlog


def run_mlp(net: nn.Module, x: Tensor, *, frozen: bool = False) -> Tensor:
    """``net(x)`` for a ``worldflux.nn.mlp`` (Linear, LayerNorm and SiLU layers). ``frozen``:
    the parameters are detached, so no gradient reaches them (one still reaches ``x``)."""
    for layer in net.children():
        if isinstance(layer, nn.Linear):
            w: Tensor = layer.weight
            b: Tensor = layer.bias
            x = F.linear(x, w.detach(), b.detach()) if frozen else F.linear(x, w, b)
        elif isinstance(layer, nn.LayerNorm):
            w, b = layer.weight, layer.bias
            if frozen:
                w, b = w.detach(), b.detach()
            x = torch.layer_norm(x, layer.normalized_shape, w, b, layer.eps)
        elif isinstance(layer, nn.SiLU):
            x = torch._C._nn.silu(x)
        else:
            x = layer(x)
    return x


def simnorm_feature_major(x: Tensor, group: int) -> Tensor:
    """``worldflux.nn.simnorm`` (softmax over groups of ``group`` latent dims) computed on a
    feature-major copy. The result has the shape of ``x`` and feature-major strides (it is not
    contiguous)."""
    latent = x.shape[-1]
    rows = x.numel() // latent
    t = x.reshape(rows, latent).t().contiguous().view(latent // group, group, rows)
    return torch.softmax(t, 1).view(latent, rows).t().view(x.shape)


def two_hot_pairs(value: Tensor, bins: Tensor) -> tuple[Tensor, Tensor]:
    """``TwoHot.target(value)`` as bin pairs: the indices of bins i and i + 1 [..., 2] and the
    negated target weights there [..., 2] (the target puts 1 - w on bin i and w on i + 1)."""
    x = symlog(value).clamp(bins[0], bins[-1]).contiguous()
    idx = torch.bucketize(x, bins).clamp_(1, len(bins) - 1)
    below = idx - 1
    low, high = bins.take(below), bins.take(idx)
    w_high = (x - low) / (high - low)
    return torch.stack([below, idx], -1), torch.stack([w_high - 1, -w_high], -1)


class TwoHotCrossEntropy(torch.autograd.Function):
    """-(target . log_softmax(logits)) per row, for a two-hot target given as bin pairs."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, index: Tensor, neg_weight: Tensor) -> Tensor:
        log_p = F.log_softmax(logits, -1)
        ctx.save_for_backward(log_p, index, neg_weight)
        return (log_p.gather(-1, index) * neg_weight).sum(-1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        log_p, index, neg_weight = ctx.saved_tensors
        g = grad.unsqueeze(-1)
        # (softmax - target) * grad: the target's weights sum to 1.
        out = log_p.exp().mul_(g)
        return out.scatter_add_(-1, index, neg_weight * g), None, None


def two_hot_ce(logits: Tensor, pairs: tuple[Tensor, Tensor]) -> Tensor:
    """``TwoHot.loss(logits, value)`` given ``pairs = two_hot_pairs(value, bins)``."""
    out: Tensor = TwoHotCrossEntropy.apply(logits, *pairs)
    return out
