"""Diffusion world-model hyper-parameters and presets (Ho, Jain and Abbeel 2020, "Denoising
Diffusion Probabilistic Models"; cosine schedule from Nichol and Dhariwal 2021, "Improved
Denoising Diffusion Probabilistic Models"; DDIM sampling from Song et al. 2021).

The paper denoises images with a U-Net, so it gives no sizes for an MLP over vector
observations; the ``ddpm_t1000`` preset keeps the paper's noise schedule (T = 1000, betas linear
from 1e-4 to 0.02) with the ``small`` network.
"""

from __future__ import annotations

from dataclasses import dataclass

from worldflux.core.errors import ConfigError

SCHEDULES = ("cosine", "linear")
SAMPLERS = ("ddpm", "ddim")


@dataclass(frozen=True)
class DiffusionConfig:
    hidden: int = 64  # width of the epsilon-prediction MLP
    layers: int = 2  # hidden blocks of the epsilon-prediction MLP
    time_dim: int = 16  # sinusoidal timestep-embedding size (even)
    num_timesteps: int = 10  # T: diffusion steps of the forward process
    schedule: str = "cosine"  # "cosine" (Nichol & Dhariwal) or "linear" (Ho et al., rescaled)
    sampler: str = "ddpm"  # "ddpm" (ancestral) or "ddim" (deterministic, eta = 0)
    sample_steps: int = 0  # steps the sampler takes (0: all T; ddim may stride over fewer)
    predict_delta: bool = True  # denoise symlog(o') - symlog(o) instead of symlog(o')
    # Clamp on the sampler's x_0 estimate (0: none). In delta space 1.0 bounds one step's change
    # of symlog(o) to +-1, which keeps chained samples from running away.
    clip_x0: float = 1.0
    eval_timesteps: int = 10  # fixed timesteps of the deterministic held-out denoising error
    reward_hidden: int = 64  # width of the reward MLP on (observation, action)
    reward_coef: float = 1.0  # weight of the reward regression in the training loss

    def validate(self) -> None:
        for name in ("hidden", "layers", "time_dim", "num_timesteps", "eval_timesteps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"diffusion: {name} must be >= 1, got {getattr(self, name)}")
        if self.time_dim % 2:
            raise ConfigError(f"diffusion: time_dim must be even, got {self.time_dim}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"diffusion: schedule must be one of {SCHEDULES}, got {self.schedule!r}"
            )
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"diffusion: sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if not 0 <= self.sample_steps <= self.num_timesteps:
            raise ConfigError(
                f"diffusion: sample_steps must be in [0, num_timesteps={self.num_timesteps}], "
                f"got {self.sample_steps}"
            )
        if self.sampler == "ddpm" and self.sample_steps not in (0, self.num_timesteps):
            raise ConfigError(
                "diffusion: ancestral DDPM sampling visits every timestep; use sampler='ddim' "
                "to sample with fewer steps"
            )
        if self.clip_x0 < 0 or self.reward_coef < 0:
            raise ConfigError("diffusion: clip_x0 and reward_coef must be >= 0")


PRESETS = {
    "ci": DiffusionConfig(),
    "small": DiffusionConfig(
        hidden=256, layers=3, time_dim=32, num_timesteps=50, reward_hidden=256
    ),
    # The paper's forward process (T = 1000, linear betas 1e-4..0.02), sampled with 50 DDIM steps.
    "ddpm_t1000": DiffusionConfig(
        hidden=256,
        layers=3,
        time_dim=64,
        num_timesteps=1000,
        schedule="linear",
        sampler="ddim",
        sample_steps=50,
        reward_hidden=256,
    ),
}
