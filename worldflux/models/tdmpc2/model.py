"""TD-MPC2: an implicit (decoder-free) world model learned with TD targets.

    encoder      z_t = SimNorm(h(x_t))
    dynamics     z_{t+1} = SimNorm(d(z_t, a_{t+1}))
    reward       r(z_t, a_{t+1})                     two-hot over symlog space
    Q ensemble   Q_i(z_t, a_{t+1}) -> r_{t+1} + gamma (1 - done) min_j Qtarget_j(z'_{t+1}, pi(z'))
    policy prior pi(a | z)                           maximizes Q + entropy (its own term)

The world-model loss (consistency + reward + value) is non-negative and is what the gates
compare; the policy term is kept separate because it contains -Q and can be negative.
Row convention: action t is the action that led to observation t, so the action taken at
state t is action t+1 and its reward is reward t+1.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.core.model import Capability, Maturity, ModelSpec, WorldModel
from worldflux.core.registry import register_family
from worldflux.core.types import Batch, LossOutput, ModelOutput, State, Trajectory
from worldflux.models.tdmpc2.config import PRESETS, TDMPC2Config
from worldflux.models.tdmpc2.heads import (
    run_mlp,
    simnorm_feature_major,
    two_hot_ce,
    two_hot_pairs,
)
from worldflux.models.tdmpc2.rollout import latent_rollout
from worldflux.nn import TwoHot, mlp, simnorm

LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0


@register_family(
    "tdmpc2",
    presets=PRESETS,
    maturity=Maturity.REFERENCE,
    description="TD-MPC2: SimNorm latent dynamics, two-hot reward and Q ensemble, policy prior",
)
class TDMPC2(WorldModel):
    capabilities = frozenset(
        {Capability.REWARD_PREDICTION, Capability.VALUE_ESTIMATE, Capability.POLICY_PRIOR}
    )

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        c: TDMPC2Config = spec.config
        obs_dim, act = math.prod(spec.obs_shape), spec.action_dim
        self.encoder = mlp(obs_dim, c.enc_hidden, c.latent, c.enc_layers)
        self.dynamics = mlp(c.latent + act, c.hidden, c.latent, 2)
        self.reward_head = mlp(c.latent + act, c.hidden, c.num_bins, 2)
        self.qs = nn.ModuleList(
            [mlp(c.latent + act, c.hidden, c.num_bins, 2) for _ in range(c.num_q)]
        )
        self.policy = mlp(c.latent, c.hidden, act if c.discrete_actions else 2 * act, 2)
        self.twohot = TwoHot(c.num_bins, c.vmin, c.vmax)
        # Reward and Q start predicting 0 (TD-MPC2 zero-initializes their last layers).
        for head in (self.reward_head, *self.qs):
            last = head[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.target_qs = copy.deepcopy(self.qs).requires_grad_(False)

    # --- pieces -----------------------------------------------------------------------------
    def _encode(self, obs: Tensor) -> Tensor:
        return simnorm(
            self.encoder(obs.flatten(-len(self.spec.obs_shape))), self.config.simnorm_dim
        )

    def _next(self, z: Tensor, a: Tensor) -> Tensor:
        return simnorm(self.dynamics(torch.cat([z, a], -1)), self.config.simnorm_dim)

    def _q(self, qs: nn.ModuleList, z: Tensor, a: Tensor, *, frozen: bool = False) -> Tensor:
        """Q values of every network in ``qs``: [num_q, ...]. ``frozen``: no gradient reaches
        the networks' parameters."""
        za = torch.cat([z, a], -1)
        return torch.stack([self._q_value(q, za, frozen=frozen) for q in qs])

    def _q_value(self, q: nn.Module, za: Tensor, *, frozen: bool = False) -> Tensor:
        return self.twohot.mean(run_mlp(q, za, frozen=frozen))

    def _policy_sample(self, z: Tensor, *, log_prob: bool = True) -> tuple[Tensor, Tensor | None]:
        """The continuous policy prior's action at z (stochastic while training, the mean
        otherwise) and, if asked, its log-probability."""
        mean, raw_log_std = run_mlp(self.policy, z).chunk(2, -1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw_log_std) + 1)
        eps = torch.randn_like(mean) if self.training else torch.zeros_like(mean)
        action = torch.tanh(mean + eps * log_std.exp())
        if not log_prob:
            return action, None
        logp = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - torch.log(1 - action.pow(2) + 1e-6).sum(-1)  # tanh correction
        return action, logp

    def _policy_value(
        self, qs: nn.ModuleList, z: Tensor, *, frozen: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Q of the policy prior's action at z, per network ([num_q, ...]), and the policy's
        entropy ([...]). Stochastic while training, the mean action otherwise. ``frozen``: no
        gradient reaches the Q networks' parameters."""
        c: TDMPC2Config = self.config
        if c.discrete_actions:
            probs = F.softmax(run_mlp(self.policy, z), -1)
            n = self.spec.action_dim
            eye = torch.eye(n, device=z.device).expand(*z.shape[:-1], n, n)
            zs = z.unsqueeze(-2).expand(*z.shape[:-1], n, z.shape[-1])
            q = self._q(qs, zs, eye, frozen=frozen)
            entropy = -(probs * probs.clamp_min(1e-8).log()).sum(-1)
            return (q * probs).sum(-1), entropy
        action, logp = self._policy_sample(z)
        assert logp is not None
        return self._q(qs, z, action, frozen=frozen), -logp

    def act(self, obs: Tensor) -> Tensor:
        """The policy prior's action for observations [B, *obs_shape] (mean / argmax)."""
        z = self._encode(obs)
        out = self.policy(z)
        if self.config.discrete_actions:
            return F.one_hot(out.argmax(-1), self.spec.action_dim).float()
        return torch.tanh(out.chunk(2, -1)[0])

    # --- contract ---------------------------------------------------------------------------
    def encode(self, obs: Tensor) -> State:
        return State({"latent": self._encode(obs)})

    def transition(self, state: State, action: Tensor) -> State:
        return State({"latent": self._next(state["latent"], action)})

    def update(self, state: State, action: Tensor, obs: Tensor) -> State:
        # TD-MPC2 has no filtering posterior: given the observation, the state is its encoding.
        return self.encode(obs)

    def decode(self, state: State) -> ModelOutput:
        # Decoder-free, and its reward depends on the action: nothing decodes from a state.
        return ModelOutput()

    def rollout(self, state: State, actions: Tensor) -> Trajectory:
        z = state["latent"]
        zs, rewards = [z], []
        for a in actions:
            rewards.append(self.twohot.mean(self.reward_head(torch.cat([z, a], -1))))
            z = self._next(z, a)
            zs.append(z)
        value = self._policy_value(self.qs, z)[0].mean(0)
        return Trajectory(
            states=State({"latent": torch.stack(zs)}),
            actions=actions,
            rewards=torch.stack(rewards),
            values=value,
        )

    def loss(self, batch: Batch) -> LossOutput:
        c: TDMPC2Config = self.config
        obs = batch.obs.transpose(0, 1).flatten(2)
        action = batch.action.transpose(0, 1)[1:]
        reward = batch.reward.transpose(0, 1)[1:]
        done = batch.terminated.transpose(0, 1)[1:]
        horizon = action.shape[0]
        weight = c.rho ** torch.arange(horizon, dtype=obs.dtype, device=obs.device)
        weight = weight / weight.sum()
        bins = self.twohot.bins

        with torch.no_grad():
            next_z = simnorm_feature_major(run_mlp(self.encoder, obs[1:]), c.simnorm_dim)
            target_q = self._target_q(next_z)
            td_target = reward + c.discount * (1 - done) * target_q

        # z_0 from the first frame, then the dynamics through the whole segment (one graph
        # node with a hand-written backward, rollout.py).
        first = run_mlp(self.encoder, obs[0])
        latents = latent_rollout(first, action, self.dynamics, c.simnorm_dim)
        z_seq = latents[:-1]
        consistency = (weight * (latents[1:] - next_z).pow(2).mean((1, 2))).sum()
        za = torch.cat([z_seq, action], -1)
        reward_ce = two_hot_ce(run_mlp(self.reward_head, za), two_hot_pairs(reward, bins))
        reward_loss = (weight * reward_ce.mean(1)).sum()
        td_pairs = two_hot_pairs(td_target, bins)
        value_ce = torch.stack([two_hot_ce(run_mlp(q, za), td_pairs) for q in self.qs])
        value_loss = (weight * value_ce.mean((0, 2))).sum()

        # The policy learns through Q without training Q (detached parameters) or the encoder.
        q_pi, entropy = self._policy_value(self.qs, z_seq.detach(), frozen=True)
        policy_objective = q_pi.mean(0) + c.entropy_coef * entropy
        policy_loss = -(weight * policy_objective.mean(1)).sum()

        world_model = (
            c.consistency_coef * consistency
            + c.reward_coef * reward_loss
            + c.value_coef * value_loss
        )
        return LossOutput(
            loss=world_model + policy_loss,
            components={
                "consistency": consistency,
                "reward": reward_loss,
                "value": value_loss,
                "policy": policy_loss,
            },
            metrics={"world_model_loss": world_model.item(), "entropy": entropy.mean().item()},
        )

    def _target_q(self, next_z: Tensor) -> Tensor:
        """The min of two target Qs at (z', pi(z')), which curbs over-estimation; the two are
        drawn at random while training."""
        c: TDMPC2Config = self.config
        if c.discrete_actions:
            all_q = self._policy_value(self.target_qs, next_z)[0]
            pick = torch.randperm(c.num_q)[:2] if self.training else torch.arange(2)
            return all_q[pick].min(0).values
        # Only the two picked networks are evaluated; the policy's noise is drawn before the
        # pick, in the same order as when every network was evaluated.
        action, _ = self._policy_sample(next_z, log_prob=False)
        picked = torch.randperm(c.num_q)[:2].tolist() if self.training else [0, 1]
        za = torch.cat([next_z, action], -1)
        first, second = (self._q_value(self.target_qs[i], za) for i in picked)
        return torch.minimum(first, second)

    def after_optimizer_step(self) -> None:
        """Polyak-average the target Q networks toward the online ones (one fused op)."""
        with torch.no_grad():
            torch._foreach_lerp_(
                list(self.target_qs.parameters()), list(self.qs.parameters()), self.config.tau
            )
