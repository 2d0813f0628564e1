"""JEPA: an action-conditioned joint-embedding predictive world model for vector observations.

    context encoder   z_t  = n(f(symlog x_t))               n(v) = v / |v|  (unit norm)
    target encoder    zb_t = n(fb(symlog x_t))              fb = EMA of f, no gradient:
                                                            fb <- (1 - tau) fb + tau f
    predictor         p_{t+1} = n(p_t + g(p_t, a_{t+1}))    p_t = z_t, rolled open loop
    reward head       r_t = symexp(h(z_t))                  reward received on arriving at t

Losses over a segment of L rows, every start s and k = 1..H predictor steps (w_k ∝ rho^(k-1)):

    prediction  = sum_k w_k mean_s [1 - <p^(k)_{s+k}, zb_{s+k}>]     in [0, 2]
    variance    = mean_d relu(var_floor - sqrt(D) std_batch(z_d))  VICReg-style hinge
    reward      = mean_t (h(z_t) - symlog r_t)^2

``world_model_loss`` (the gate metric) is the prediction term alone: a cosine distance between
unit vectors, so it is non-negative and keeps its scale while the target moves. Collapse would
also make it small, which is what the variance hinge (trained) and ``embedding_std`` (reported:
sqrt(D) times the mean per-dimension std of z, 1 for isotropic unit vectors, 0 when collapsed)
guard against; ``no_change_baseline`` is the prediction loss of p^(k) = z_s (the embedding
does not move), which a useful predictor must beat. No random numbers are used anywhere, so
evaluation is deterministic.
Row convention: action t led to observation t, so the action taken at state t is action t+1.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.core.model import Capability, Maturity, ModelSpec, WorldModel
from worldflux.core.registry import register_family
from worldflux.core.types import Batch, LossOutput, ModelOutput, State
from worldflux.models.jepa.config import PRESETS, JEPAConfig
from worldflux.nn import ema_update, embedding_spread, mlp, multistep_cosine_loss, symexp, symlog


@register_family(
    "jepa",
    presets=PRESETS,
    maturity=Maturity.EXPERIMENTAL,
    description="JEPA: EMA target encoder, action-conditioned latent predictor, cosine loss",
)
class JEPA(WorldModel):
    capabilities = frozenset({Capability.REWARD_PREDICTION})

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        c: JEPAConfig = spec.config
        obs_dim = math.prod(spec.obs_shape)
        self.encoder = mlp(obs_dim, c.hidden, c.embed, c.enc_layers)
        self.predictor = mlp(c.embed + spec.action_dim, c.hidden, c.embed, c.pred_layers)
        self.reward_head = mlp(c.embed, c.hidden, 1, 1)
        # The predictor starts as "nothing changes" (p_{t+1} = p_t): the held-out loss before
        # training is then the no-change baseline, not the cost of a random residual, so the
        # measured drop is what the predictor learned beyond it.
        last = self.predictor[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        # Parameters (not buffers) so they are saved, but frozen: the trainer only optimizes
        # parameters that require a gradient, and the EMA is their only update.
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)

    # --- pieces -----------------------------------------------------------------------------
    def _flat(self, obs: Tensor) -> Tensor:
        # symlog keeps large velocities from dominating the first layer.
        return symlog(obs.flatten(-len(self.spec.obs_shape)))

    def _raw(self, obs: Tensor) -> Tensor:
        return self.encoder(self._flat(obs))

    def _target(self, obs: Tensor) -> Tensor:
        with torch.no_grad():
            return F.normalize(self.target_encoder(self._flat(obs)), dim=-1)

    def _predict(self, z: Tensor, action: Tensor) -> Tensor:
        # Residual: predicting a change of embedding is easier than predicting it afresh.
        return F.normalize(z + self.predictor(torch.cat([z, action], -1)), dim=-1)

    # --- contract ---------------------------------------------------------------------------
    def encode(self, obs: Tensor) -> State:
        return State({"embedding": F.normalize(self._raw(obs), dim=-1)})

    def transition(self, state: State, action: Tensor) -> State:
        return State({"embedding": self._predict(state["embedding"], action)})

    def update(self, state: State, action: Tensor, obs: Tensor) -> State:
        # The embedding of a (Markov) observation is the whole state: no filtering needed.
        return self.encode(obs)

    def decode(self, state: State) -> ModelOutput:
        return ModelOutput(reward=symexp(self.reward_head(state["embedding"]).squeeze(-1)))

    def loss(self, batch: Batch) -> LossOutput:
        c: JEPAConfig = self.config
        z = F.normalize(self._raw(batch.obs), dim=-1)  # [B, L, D]
        target = self._target(batch.obs)
        horizon = min(c.horizon, z.shape[1] - 1)
        prediction, baseline = multistep_cosine_loss(
            z, target, batch.action, self._predict, horizon, c.rho
        )
        std = embedding_spread(z)
        variance = F.relu(c.var_floor - std).mean()
        reward_pred = self.reward_head(z).squeeze(-1)
        reward = (reward_pred - symlog(batch.reward)).pow(2).mean()
        total = prediction + c.var_coef * variance + c.reward_coef * reward
        return LossOutput(
            loss=total,
            components={"prediction": prediction, "variance": variance, "reward": reward},
            metrics={
                "world_model_loss": prediction.item(),
                "embedding_std": std.mean().item(),
                "no_change_baseline": baseline,
            },
        )

    def diagnostics(self, batch: Batch) -> dict[str, Tensor]:
        return {
            "context_projection": F.normalize(self._raw(batch.obs), dim=-1),
            "target_projection": self._target(batch.obs),
        }

    def after_optimizer_step(self) -> None:
        """Move the target encoder a step ``tau`` toward the context encoder (EMA)."""
        ema_update(self.target_encoder, self.encoder, self.config.tau)
