"""Skeleton: a diagonal linear state-space model (S4D-style discretization).

z_{t+1} = exp(dt * lambda) * z_t + B a_{t+1}
lambda = -softplus(w) < 0 and dt = exp(log_dt) > 0, so the recurrence is stable for any
parameters; x_t is read out linearly from z_t; z_0 is a linear encoding of x_0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.core.model import Maturity, ModelSpec
from worldflux.core.registry import register_family
from worldflux.models._skeleton import SKELETON_PRESETS, SkeletonModel


@register_family(
    "ssm",
    presets=SKELETON_PRESETS,
    maturity=Maturity.SKELETON,
    description="Skeleton: diagonal linear state-space model with a stable discretization",
)
class SSM(SkeletonModel):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        latent = spec.config.latent
        self.encoder = nn.Linear(self.obs_dim, latent)
        self.log_rate = nn.Parameter(torch.zeros(latent))  # lambda = -softplus(log_rate)
        self.log_dt = nn.Parameter(torch.full((latent,), -1.0))
        self.input = nn.Linear(spec.action_dim, latent, bias=False)  # B: no drift term
        self.readout = nn.Linear(latent, self.obs_dim)

    def _encode(self, obs: Tensor) -> Tensor:
        return self.encoder(obs)

    def _step(self, z: Tensor, action: Tensor) -> Tensor:
        decay = torch.exp(self.log_dt.exp() * -F.softplus(self.log_rate))
        return decay * z + self.input(action)

    def _decode(self, z: Tensor) -> Tensor:
        return self.readout(z)
