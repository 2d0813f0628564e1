"""Skeleton: a conditional GAN of the next observation, with SEPARATE optimizers.

    generator      x_{t+1} = x_t + G(x_t, a_{t+1}, noise)      (noise = 0 outside training)
    discriminator  D(x_t, a_{t+1}, x_{t+1}) -> real/fake logit
    G loss         |G(noise=0) - x_{t+1}|^2 + w * softplus(-D(fake))   (through the trainer)
    D loss         softplus(-D(real)) + softplus(D(fake))            (its own AdamW)

The discriminator's parameters have ``requires_grad=False`` except during its own step, so the
trainer's optimizer (built from parameters that require gradients) only ever updates the
generator; the discriminator steps in ``after_optimizer_step`` on the batch the generator just
saw. Its optimizer state lives in the model object and is not part of training checkpoints
(a resumed run restarts the discriminator's moments). The gate metric is the supervised
prediction error, which is non-negative and comparable before and after training.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from worldflux.core.model import Maturity, ModelSpec
from worldflux.core.registry import register_family
from worldflux.core.types import Batch, LossOutput
from worldflux.models._skeleton import SKELETON_PRESETS, SkeletonModel
from worldflux.nn import mlp

NOISE = 4
ADVERSARIAL_WEIGHT = 0.1
D_LR = 1e-3


@register_family(
    "gan",
    presets=SKELETON_PRESETS,
    maturity=Maturity.SKELETON,
    description="Skeleton: conditional GAN; generator and discriminator have separate optimizers",
)
class GAN(SkeletonModel):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        c = spec.config
        self.generator = mlp(self.obs_dim + spec.action_dim + NOISE, c.hidden, self.obs_dim, 2)
        self.discriminator = mlp(2 * self.obs_dim + spec.action_dim, c.hidden, 1, 2)
        self.discriminator.requires_grad_(False)
        self.d_optimizer: torch.optim.Optimizer | None = None
        self._pending: tuple[Tensor, ...] | None = None

    def _encode(self, obs: Tensor) -> Tensor:
        return obs

    def _decode(self, z: Tensor) -> Tensor:
        return z

    def _generate(self, z: Tensor, action: Tensor, noisy: bool) -> Tensor:
        shape = (*z.shape[:-1], NOISE)
        noise = (
            torch.randn(shape, device=z.device) if noisy else torch.zeros(shape, device=z.device)
        )
        return z + self.generator(torch.cat([z, action, noise], -1))

    def _step(self, z: Tensor, action: Tensor) -> Tensor:
        return self._generate(z, action, noisy=self.training)

    def _critic(self, x: Tensor, a: Tensor, nxt: Tensor) -> Tensor:
        return self.discriminator(torch.cat([x, a, nxt], -1))

    def loss(self, batch: Batch) -> LossOutput:
        obs = self._flat(batch.obs)
        x, a, y = obs[:, :-1], batch.action[:, 1:], obs[:, 1:]
        prediction = (self._generate(x, a, noisy=False) - y).pow(2).mean()
        fake = self._generate(x, a, noisy=self.training)
        adversarial = F.softplus(-self._critic(x, a, fake)).mean()
        if self.training:
            self._pending = (x.detach(), a.detach(), y.detach(), fake.detach())
        total = prediction + ADVERSARIAL_WEIGHT * adversarial
        return LossOutput(
            total,
            {"prediction": prediction, "adversarial": adversarial},
            {"world_model_loss": prediction.item()},
        )

    def after_optimizer_step(self) -> None:
        """The discriminator's own step, with its own optimizer."""
        if self._pending is None:
            return
        x, a, real, fake = self._pending
        self._pending = None
        params: list[Any] = list(self.discriminator.parameters())
        if self.d_optimizer is None:
            self.d_optimizer = torch.optim.AdamW(params, lr=D_LR)
        self.discriminator.requires_grad_(True)
        try:
            d_loss = (
                F.softplus(-self._critic(x, a, real)).mean()
                + F.softplus(self._critic(x, a, fake)).mean()
            )
            self.d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_optimizer.step()
        finally:
            self.discriminator.requires_grad_(False)
