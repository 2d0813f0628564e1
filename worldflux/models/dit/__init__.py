"""Skeleton: a diffusion transformer (DiT, Peebles & Xie 2023) over the next observation.

Each observation dimension is a token. One transformer block with adaLN-Zero conditioning on
(current observation, action, diffusion step) predicts the noise added to the next observation:

    x_s = sqrt(abar_s) x_0 + sqrt(1 - abar_s) eps,    loss = |eps - eps_theta(x_s, s, cond)|^2
    transition: deterministic DDIM from x_S = 0 down to x_0 over the schedule's steps

The evaluation loss uses fixed steps and fixed noise, so it is deterministic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.core.model import Maturity, ModelSpec
from worldflux.core.registry import register_family
from worldflux.core.types import Batch, LossOutput
from worldflux.models._skeleton import SKELETON_PRESETS, SkeletonModel
from worldflux.nn import mlp

STEPS = 8
EVAL_NOISE_SEED = 1234


@register_family(
    "dit",
    presets=SKELETON_PRESETS,
    maturity=Maturity.SKELETON,
    description="Skeleton: one adaLN-Zero transformer block denoising the next observation",
)
class DiT(SkeletonModel):
    alphas_cumprod: Tensor

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        d = spec.config.hidden
        self.token_in = nn.Linear(1, d)
        self.position = nn.Parameter(torch.zeros(self.obs_dim, d))
        self.condition = mlp(self.obs_dim + spec.action_dim + 1, d, 6 * d, 1)
        self.attention = nn.MultiheadAttention(d, num_heads=2, batch_first=True)
        self.feedforward = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.out = nn.Linear(d, 1)
        last = self.condition[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(last.bias)
        betas = torch.linspace(1e-3, 0.3, STEPS)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0))

    def _eps(self, noisy: Tensor, step: Tensor, cond: Tensor) -> Tensor:
        lead = noisy.shape[:-1]  # attention takes [N, tokens, d]: fold batch and time
        noisy, step, cond = noisy.flatten(0, -2), step.flatten(), cond.flatten(0, -2)
        h = self.token_in(noisy.unsqueeze(-1)) + self.position
        mod = self.condition(torch.cat([cond, step.unsqueeze(-1) / STEPS], -1))
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.unsqueeze(-2).chunk(6, -1)
        y = self.norm(h) * (1 + scale1) + shift1
        h = h + gate1 * self.attention(y, y, y, need_weights=False)[0]
        y = self.norm(h) * (1 + scale2) + shift2
        h = h + gate2 * self.feedforward(y)
        return self.out(h).squeeze(-1).reshape(*lead, -1)

    def _encode(self, obs: Tensor) -> Tensor:
        return obs

    def _decode(self, z: Tensor) -> Tensor:
        return z

    def _step(self, z: Tensor, action: Tensor) -> Tensor:
        cond = torch.cat([z, action], -1)
        x = torch.zeros_like(z)
        for s in reversed(range(STEPS)):
            abar = self.alphas_cumprod[s]
            step = torch.full(z.shape[:-1], float(s), device=z.device)
            eps = self._eps(x, step, cond)
            x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
            prev = self.alphas_cumprod[s - 1] if s > 0 else torch.ones_like(abar)
            x = prev.sqrt() * x0 + (1 - prev).sqrt() * eps
        return x

    def loss(self, batch: Batch) -> LossOutput:
        obs = self._flat(batch.obs)
        x0, cond = obs[:, 1:], torch.cat([obs[:, :-1], batch.action[:, 1:]], -1)
        if self.training:
            step = torch.randint(0, STEPS, x0.shape[:-1], device=x0.device)
            noise = torch.randn_like(x0)
        else:
            generator = torch.Generator(device=x0.device).manual_seed(EVAL_NOISE_SEED)
            step = torch.arange(x0[..., 0].numel(), device=x0.device).reshape(x0.shape[:-1]) % STEPS
            noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        abar = self.alphas_cumprod[step].unsqueeze(-1)
        noisy = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        denoise = F.mse_loss(self._eps(noisy, step.float(), cond), noise)
        return LossOutput(denoise, {"denoise": denoise}, {"world_model_loss": denoise.item()})
