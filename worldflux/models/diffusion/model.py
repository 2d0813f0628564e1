"""A denoising diffusion model (DDPM) of the next observation given the current one and the
action.

Everything is denoised in a data-independent normalized space: ``symlog`` of the flattened
observation, so no data statistics need to be fitted or saved. With ``predict_delta`` the clean
sample is the change ``x_0 = symlog(o_{t+1}) - symlog(o_t)`` (a near-identity transition then
starts from "nothing moves"); otherwise ``x_0 = symlog(o_{t+1})``. The condition is
``c = [symlog(o_t), a_{t+1}]`` (row convention: action t+1 is the one taken at observation t).

    forward    q(x_k | x_0) = N(sqrt(abar_k) x_0, (1 - abar_k) I), abar_k = prod_{j<=k} (1 - beta_j)
    schedule   cosine: abar_k = f(k+1) / f(0),  f(u) = cos^2((u/T + s) / (1 + s) * pi/2),  s = 0.008
               linear: beta_k from 1e-4 to 0.02, times 1000/T (Ho et al.'s range, rescaled to T)
    network    eps_theta(x_k, k, c): an MLP on [x_k, c, sinusoid(k)]
    loss       E_{k ~ U{0..T-1}, eps ~ N(0, I)} || eps - eps_theta(x_k, k, c) ||^2,
               x_k = sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps
    x_0 guess  x0_hat = (x_k - sqrt(1 - abar_k) eps_theta) / sqrt(abar_k), clamped to +-clip_x0
    DDPM step  x_{k-1} = m1_k x0_hat + m2_k x_k + sigma_k z,  z ~ N(0, I), no noise at k = 0
               m1_k = beta_k sqrt(abar_{k-1}) / (1 - abar_k)
               m2_k = sqrt(1 - beta_k) (1 - abar_{k-1}) / (1 - abar_k)
               sigma_k^2 = beta_k (1 - abar_{k-1}) / (1 - abar_k)
    DDIM step  x_{k'} = sqrt(abar_{k'}) x0_hat + sqrt(1 - abar_{k'}) eps_hat  (eta = 0)
    reward     r_{t+1} = symexp(R([symlog(o_t), a_{t+1}])), trained with MSE in symlog space

The gate metric ``world_model_loss`` is the epsilon MSE alone (non-negative). In eval mode it is
measured at ``eval_timesteps`` fixed timesteps with noise from a generator seeded with a
constant, so held-out comparisons are exact and no global RNG is consumed; the sampler used by
``transition`` draws its noise the same way in eval mode (every call sees the same noise: a
deterministic function of state and action), and from torch's global RNG in train mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from worldflux.core.model import Capability, Maturity, ModelSpec, WorldModel
from worldflux.core.registry import register_family
from worldflux.core.types import Batch, LossOutput, ModelOutput, State
from worldflux.models.diffusion.config import PRESETS, DiffusionConfig
from worldflux.nn import mlp, symexp, symlog

# Seed of the fixed noise used in eval mode (held-out loss, sampler, diagnostics).
EVAL_NOISE_SEED = 1234
COSINE_OFFSET = 0.008  # s in Nichol & Dhariwal's cosine schedule: keeps beta_0 from vanishing
MAX_BETA = 0.999  # the cosine schedule's last betas approach 1; clipping keeps them invertible
MAX_DIAGNOSTIC_STEPS = 8  # sampler states kept by diagnostics()


def make_betas(config: DiffusionConfig) -> Tensor:
    """The forward process's noise schedule, float64 for an accurate cumulative product."""
    steps = config.num_timesteps
    if config.schedule == "linear":
        scale = 1000.0 / steps  # Ho et al.'s range was set for T = 1000
        return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64).clamp(
            max=MAX_BETA
        )
    u = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=MAX_BETA)


def timestep_embedding(k: Tensor, dim: int, num_timesteps: int) -> Tensor:
    """Transformer-style sinusoids of the timestep, rescaled to the 0..1000 range the
    frequencies were chosen for, so small T still spans several frequencies."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=k.device, dtype=torch.float32) / half
    )
    angle = (k.float() * (1000.0 / num_timesteps)).unsqueeze(-1) * freqs
    return torch.cat([angle.sin(), angle.cos()], -1)


@register_family(
    "diffusion",
    presets=PRESETS,
    maturity=Maturity.EXPERIMENTAL,
    description="DDPM of the next observation given observation and action (epsilon-prediction "
    "MLP, cosine/linear schedule, DDPM/DDIM sampler) with an MLP reward head",
)
class DiffusionWorldModel(WorldModel):
    capabilities = frozenset({Capability.OBSERVATION_DECODER, Capability.REWARD_PREDICTION})

    betas: Tensor
    alphas_cumprod: Tensor

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        c: DiffusionConfig = spec.config
        self.obs_dim = math.prod(spec.obs_shape)
        cond_dim = self.obs_dim + spec.action_dim
        self.eps_net = mlp(self.obs_dim + cond_dim + c.time_dim, c.hidden, self.obs_dim, c.layers)
        self.reward_head = mlp(cond_dim, c.reward_hidden, 1, 2)
        betas = make_betas(c)
        # Persistent: the schedule is part of the model, and a checkpoint must carry it.
        self.register_buffer("betas", betas.float())
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float())

    # --- pieces -----------------------------------------------------------------------------
    def _flat(self, obs: Tensor) -> Tensor:
        return obs.flatten(-len(self.spec.obs_shape))

    def _cond(self, obs: Tensor, action: Tensor) -> Tensor:
        return torch.cat([symlog(self._flat(obs)), action], -1)

    def _eps(self, x: Tensor, k: Tensor, cond: Tensor) -> Tensor:
        temb = timestep_embedding(k, self.config.time_dim, self.config.num_timesteps)
        return self.eps_net(torch.cat([x, cond, temb], -1))

    def _eps_at(self, x: Tensor, k: int, temb: Tensor, cond: Tensor) -> Tensor:
        """The sampler's network call at timestep ``k`` with its embedding precomputed."""
        return self.eps_net(torch.cat([x, cond, temb], -1))

    def _generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(EVAL_NOISE_SEED)

    def _noise(self, shape: tuple[int, ...], like: Tensor, gen: torch.Generator | None) -> Tensor:
        return torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype)

    def _timesteps(self) -> list[int]:
        """The timesteps the sampler visits, from T-1 down to 0."""
        c: DiffusionConfig = self.config
        n = c.sample_steps or c.num_timesteps
        steps = torch.linspace(c.num_timesteps - 1, 0, n).round().long().unique_consecutive()
        return [int(k) for k in steps]

    def sample(
        self, cond: Tensor, gen: torch.Generator | None = None, keep: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Draw x_0 given the condition [N, cond_dim]; with ``keep`` also every x_k visited."""
        c: DiffusionConfig = self.config
        n = cond.shape[0]
        x = self._noise((n, self.obs_dim), cond, gen)
        path = [x] if keep else []
        timesteps = self._timesteps()
        # Python floats and one embedding call: a rollout runs this loop T times per step, and
        # per-step tensor indexing would cost more than the network itself.
        abar = self.alphas_cumprod.tolist()
        betas = self.betas.tolist()
        k_all = torch.tensor(timesteps, device=cond.device)
        temb = timestep_embedding(k_all, c.time_dim, c.num_timesteps)
        for i, k in enumerate(timesteps):
            eps = self._eps_at(x, k, temb[i].expand(n, -1), cond)
            x0 = (x - math.sqrt(1 - abar[k]) * eps) / math.sqrt(abar[k])
            if c.clip_x0 > 0:
                x0 = x0.clamp(-c.clip_x0, c.clip_x0)
            prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            if prev < 0:
                x = x0
            elif c.sampler == "ddim":
                # eps consistent with the clamped x0, so the step stays on the DDIM path.
                eps = (x - math.sqrt(abar[k]) * x0) / math.sqrt(1 - abar[k])
                x = math.sqrt(abar[prev]) * x0 + math.sqrt(1 - abar[prev]) * eps
            else:  # DDPM visits every timestep: prev == k - 1
                beta = betas[k]
                m1 = beta * math.sqrt(abar[prev]) / (1 - abar[k])
                m2 = math.sqrt(1 - beta) * (1 - abar[prev]) / (1 - abar[k])
                std = math.sqrt(beta * (1 - abar[prev]) / (1 - abar[k]))
                x = m1 * x0 + m2 * x + std * self._noise((n, self.obs_dim), x, gen)
            if keep:
                path.append(x)
        return x, path

    def _next_obs(self, obs: Tensor, x0: Tensor) -> Tensor:
        base = symlog(self._flat(obs)) if self.config.predict_delta else 0.0
        return symexp(base + x0).reshape(obs.shape)

    def _reward(self, cond: Tensor) -> Tensor:
        return symexp(self.reward_head(cond).squeeze(-1))

    # --- contract ---------------------------------------------------------------------------
    def encode(self, obs: Tensor) -> State:
        # The state is the observation itself; no reward has been received yet.
        return State({"obs": obs, "reward": obs.new_zeros(obs.shape[0])})

    def transition(self, state: State, action: Tensor) -> State:
        obs = state["obs"]
        cond = self._cond(obs, action)
        gen = None if self.training else self._generator(obs.device)
        x0, _ = self.sample(cond, gen)
        return State({"obs": self._next_obs(obs, x0), "reward": self._reward(cond)})

    def update(self, state: State, action: Tensor, obs: Tensor) -> State:
        # The observation is the whole state; the reward is the one predicted for the step.
        return State({"obs": obs, "reward": self._reward(self._cond(state["obs"], action))})

    def decode(self, state: State) -> ModelOutput:
        return ModelOutput(observation=state["obs"], reward=state["reward"])

    def loss(self, batch: Batch) -> LossOutput:
        c: DiffusionConfig = self.config
        cur, nxt = batch.obs[:, :-1], batch.obs[:, 1:]
        cond = self._cond(cur, batch.action[:, 1:]).flatten(0, 1)
        target = symlog(self._flat(nxt)).flatten(0, 1)
        x0 = target - symlog(self._flat(cur)).flatten(0, 1) if c.predict_delta else target
        n = x0.shape[0]
        if self.training:
            k = torch.randint(0, c.num_timesteps, (n,), device=x0.device)
            eps = torch.randn_like(x0)
        else:
            # Every pair at each of a fixed set of timesteps, with fixed noise: exact and
            # RNG-free, so before/after comparisons on the same batches are exact.
            levels = torch.linspace(0, c.num_timesteps - 1, c.eval_timesteps, device=x0.device)
            levels = levels.round().long().unique()
            k = levels.repeat_interleave(n)
            eps = self._noise((k.shape[0], self.obs_dim), x0, self._generator(x0.device))
            x0, cond = x0.repeat(len(levels), 1), cond.repeat(len(levels), 1)
        abar = self.alphas_cumprod[k].unsqueeze(-1)
        x_k = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        denoise = F.mse_loss(self._eps(x_k, k, cond), eps)
        reward_pred = self.reward_head(cond[:n]).squeeze(-1)
        reward = F.mse_loss(reward_pred, symlog(batch.reward[:, 1:].flatten()))
        return LossOutput(
            loss=denoise + c.reward_coef * reward,
            components={"denoise": denoise, "reward": reward},
            metrics={"world_model_loss": denoise.item(), "reward_loss": reward.item()},
        )

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> dict[str, Tensor]:
        """The schedule and the sampler's states for the batch's first transitions (fixed
        noise: diagnostics consume no RNG)."""
        cond = self._cond(batch.obs[:, 0], batch.action[:, 1])
        x0, path = self.sample(cond, self._generator(cond.device), keep=True)
        pick = torch.linspace(0, len(path) - 1, min(len(path), MAX_DIAGNOSTIC_STEPS))
        return {
            "scheduler.betas": self.betas,
            "scheduler.alphas_cumprod": self.alphas_cumprod,
            "scheduler.sampled_x": torch.stack([path[int(i)] for i in pick.round().long()]),
            "scheduler.x0": x0,
        }
