"""Building blocks shared by several families: MLPs, symlog, observation standardization,
two-hot regression, SimNorm, EMA targets and JEPA-style multi-step latent prediction."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mlp(
    in_dim: int, hidden: int, out_dim: int, layers: int, *, out_norm: bool = False
) -> nn.Sequential:
    """``layers`` hidden blocks of Linear -> LayerNorm -> SiLU, then a linear head."""
    blocks: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        blocks += [nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        dim = hidden
    blocks.append(nn.Linear(dim, out_dim))
    if out_norm:
        blocks.append(nn.LayerNorm(out_dim))
    return nn.Sequential(*blocks)


def symlog(x: Tensor) -> Tensor:
    """sign(x) * log(1 + |x|): compresses large magnitudes, keeps small ones (DreamerV3)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


class ObservationScaler(nn.Module):
    """Per-dimension standardization of vector observations, (x - loc) / scale, with the
    statistics fitted on training data and saved with the weights.

    symlog alone leaves small-range dimensions small: on CartPole the pole angle (std 0.05)
    weighs ~60x less than the cart position in a summed squared error and a model can drop it
    (docs/worldflux.md, DreamerV3 diagnosis). ``rows`` counts the observations the statistics
    came from; 0 means not fitted yet, and the scaler is then the identity.
    """

    loc: Tensor
    scale: Tensor
    rows: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("rows", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def fit(self, observations: Tensor, min_scale: float = 1e-3) -> None:
        """Statistics of ``observations`` [N, dim]; dimensions that barely vary keep a scale
        of ``min_scale`` so they are not blown up into noise."""
        flat = observations.reshape(observations.shape[0], -1).double()
        self.loc.copy_(flat.mean(0))
        self.scale.copy_(flat.std(0, unbiased=False).clamp_min(min_scale))
        self.rows.fill_(flat.shape[0])

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.loc) / self.scale

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.scale + self.loc


class TwoHot(nn.Module):
    """Discrete regression over bins spaced evenly in symlog space (DreamerV3, TD-MPC2).

    A scalar target is spread over its two nearest bins; the loss is the cross-entropy between
    the predicted logits and that two-hot target, so it is non-negative.
    """

    bins: Tensor

    def __init__(self, num_bins: int, low: float, high: float) -> None:
        super().__init__()
        self.register_buffer("bins", torch.linspace(low, high, num_bins), persistent=False)

    def target(self, value: Tensor) -> Tensor:
        x = symlog(value).clamp(self.bins[0], self.bins[-1]).contiguous()
        idx = torch.bucketize(x, self.bins).clamp(1, len(self.bins) - 1)
        low, high = self.bins[idx - 1], self.bins[idx]
        w_high = (x - low) / (high - low)
        out = torch.zeros(*x.shape, len(self.bins), device=x.device, dtype=x.dtype)
        out.scatter_(-1, (idx - 1).unsqueeze(-1), (1 - w_high).unsqueeze(-1))
        out.scatter_add_(-1, idx.unsqueeze(-1), w_high.unsqueeze(-1))
        return out

    def loss(self, logits: Tensor, value: Tensor) -> Tensor:
        """Cross-entropy per element (shape of ``value``)."""
        return -(self.target(value) * F.log_softmax(logits, dim=-1)).sum(-1)

    def mean(self, logits: Tensor) -> Tensor:
        # One matrix-vector product rather than a product and a sum: fewer ops and graph nodes.
        return symexp(torch.matmul(F.softmax(logits, dim=-1), self.bins))


def simnorm(x: Tensor, group: int) -> Tensor:
    """Simplicial normalization (TD-MPC2): softmax over groups of ``group`` latent dims, which
    bounds the latent and keeps it from collapsing or exploding."""
    shape = x.shape
    return F.softmax(x.reshape(*shape[:-1], -1, group), dim=-1).reshape(shape)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * online, parameter by parameter (EMA targets)."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o, tau)


def embedding_spread(z: Tensor) -> Tensor:
    """sqrt(D) * per-dimension std over every row of z [..., D]: [D]. About 1 for isotropic unit
    vectors, 0 when the embeddings collapse to a point."""
    flat = z.reshape(-1, z.shape[-1])
    return flat.std(0, unbiased=False) * math.sqrt(z.shape[-1])


def multistep_cosine_loss(
    z: Tensor,
    target: Tensor,
    actions: Tensor,
    step: Callable[[Tensor, Tensor], Tensor],
    horizon: int,
    rho: float,
) -> tuple[Tensor, float]:
    """Latent prediction k = 1..horizon steps ahead from every start of a segment (JEPA-style).

    ``z`` and ``target`` are unit-norm embeddings [B, L, D]; ``step(p, a)`` predicts the next
    unit-norm embedding. Returns the rho^(k-1)-weighted mean of 1 - cos(prediction, target) and
    the same distance for "nothing changes" (p = z), which a useful predictor must beat. Row
    convention: action t led to observation t, so the action taken at row s is action s + 1.
    """
    length = z.shape[1]
    weights = rho ** torch.arange(horizon, dtype=z.dtype, device=z.device)
    weights = weights / weights.sum()
    p = z  # p holds, for every start s, the prediction k steps ahead of s (rows s + k)
    loss = z.new_zeros(())
    baseline = 0.0
    for k in range(1, horizon + 1):
        p = step(p[:, : length - k], actions[:, k:])
        loss = loss + weights[k - 1] * (1 - (p * target[:, k:]).sum(-1)).mean()
        still = 1 - (z[:, : length - k].detach() * target[:, k:]).sum(-1)
        baseline += float(weights[k - 1]) * still.mean().item()
    return loss, baseline
