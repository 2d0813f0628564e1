"""Skeleton: a physics-prior world model (semi-implicit Euler in a learned phase space).

    z = (q, p): generalized positions and velocities, each latent/2 wide
    p_{t+1} = p_t + dt * f(q_t, p_t, a_{t+1})      learned acceleration
    q_{t+1} = q_t + dt * p_{t+1}                  exact kinematics
Observations are encoded to and decoded from (q, p) by small MLPs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from worldflux.core.model import Maturity, ModelSpec
from worldflux.core.registry import register_family
from worldflux.models._skeleton import SKELETON_PRESETS, SkeletonModel
from worldflux.nn import mlp

DT = 0.1


@register_family(
    "physics",
    presets=SKELETON_PRESETS,
    maturity=Maturity.SKELETON,
    description="Skeleton: learned accelerations integrated by semi-implicit Euler",
)
class Physics(SkeletonModel):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        c = spec.config
        self.width = c.latent // 2
        self.encoder = mlp(self.obs_dim, c.hidden, 2 * self.width, 1)
        self.acceleration = mlp(2 * self.width + spec.action_dim, c.hidden, self.width, 1)
        self.decoder = mlp(2 * self.width, c.hidden, self.obs_dim, 1)

    def _encode(self, obs: Tensor) -> Tensor:
        return self.encoder(obs)

    def _step(self, z: Tensor, action: Tensor) -> Tensor:
        q, p = z.split(self.width, -1)
        p = p + DT * self.acceleration(torch.cat([q, p, action], -1))
        q = q + DT * p
        return torch.cat([q, p], -1)

    def _decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)
