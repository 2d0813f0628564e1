"""Skeleton: a neural renderer with an explicit camera pose.

z = (scene code s, pose c): the scene is static, actions move the camera
c_{t+1} = c_t + g(c_t, a_{t+1}),   s_{t+1} = s_t
x_t = render(s, c_t): an MLP queried at the pose, the field-style decoder of 3D renderers
"""

from __future__ import annotations

import torch
from torch import Tensor

from worldflux.core.model import Maturity, ModelSpec
from worldflux.core.registry import register_family
from worldflux.models._skeleton import SKELETON_PRESETS, SkeletonModel
from worldflux.nn import mlp

POSE = 6  # a 6-DoF camera pose: translation and rotation (axis-angle)


@register_family(
    "renderer3d",
    presets=SKELETON_PRESETS,
    maturity=Maturity.SKELETON,
    description="Skeleton: static scene code rendered at an action-driven camera pose",
)
class Renderer3D(SkeletonModel):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        c = spec.config
        self.scene_dim = c.latent
        self.encoder = mlp(self.obs_dim, c.hidden, c.latent + POSE, 1)
        self.camera = mlp(POSE + spec.action_dim, c.hidden, POSE, 1)
        self.render = mlp(c.latent + POSE, c.hidden, self.obs_dim, 2)

    def _encode(self, obs: Tensor) -> Tensor:
        return self.encoder(obs)

    def _step(self, z: Tensor, action: Tensor) -> Tensor:
        scene, pose = z.split([self.scene_dim, POSE], -1)
        return torch.cat([scene, pose + self.camera(torch.cat([pose, action], -1))], -1)

    def _decode(self, z: Tensor) -> Tensor:
        return self.render(z)
