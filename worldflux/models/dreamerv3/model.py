"""DreamerV3 world model: a recurrent state-space model (RSSM) for vector observations and,
as ``dreamerv3_pixels``, for frames (CNN encoder and decoder, vision.py).

State = (h, z): h is a GRU state (deterministic), z is 'stoch' one-hot categoricals (sampled in
training; their expectation, the class probabilities, in evaluation).
    prior:      h_t = GRU(h_{t-1}, [z_{t-1}, a_t]),   z_t ~ p(z | h_t)
    posterior:  z_t ~ q(z | h_t, embed(x_t))
Heads read feat = [h_t, z_t]: decoder -> symlog(x_t) (frames: x_t itself), reward (two-hot),
continue (Bernoulli).
Loss = recon_scale * recon + reward + continue + beta_dyn * max(free, KL[sg(q) || p])
                                + beta_rep * max(free, KL[q || sg(p)])
Every term is non-negative, so the total is the world-model loss the gates compare. Frames may be
shifted at random in training (``shift_pixels``, one offset per sequence; vision.random_shift).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.core.model import Capability, Maturity, ModelSpec, WorldModel
from worldflux.core.registry import register_family
from worldflux.core.types import Batch, LossOutput, ModelOutput, State
from worldflux.models.dreamerv3.cell import (
    StraightThroughCategorical,
    posterior_sequence,
    softmax,
)
from worldflux.models.dreamerv3.config import PIXEL_PRESETS, PRESETS, DreamerV3Config
from worldflux.models.dreamerv3.vision import ConvDecoder, ConvEncoder, pixel_error, random_shift
from worldflux.nn import ObservationScaler, TwoHot, mlp, symexp, symlog


@register_family(
    "dreamerv3",
    presets=PRESETS,
    maturity=Maturity.REFERENCE,
    description="DreamerV3 RSSM: GRU + categorical latents, symlog decoder, two-hot reward",
    aliases=("dreamer",),
)
class DreamerV3(WorldModel):
    capabilities = frozenset(
        {
            Capability.OBSERVATION_DECODER,
            Capability.REWARD_PREDICTION,
            Capability.CONTINUE_PREDICTION,
        }
    )

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        c: DreamerV3Config = spec.config
        self.obs_dim = math.prod(spec.obs_shape)
        self.stoch_dim = c.stoch * c.classes
        feat = c.deter + self.stoch_dim
        # Frames: the paper's CNN encoder and transposed-CNN decoder (vision.py); vectors:
        # MLPs on the observation standardized per dimension with training statistics, symlog'd.
        self.images = c.cnn_depth > 0
        self.encoder: nn.Module
        self.decoder: nn.Module
        if self.images:
            self.encoder = ConvEncoder(spec.obs_shape, c.cnn_depth)
            embed = self.encoder.out_dim
        else:
            self.obs_scaler = ObservationScaler(self.obs_dim)
            self.encoder = mlp(self.obs_dim, c.hidden, c.hidden, c.layers)
            embed = c.hidden
        # The first layers of the prior input and of the posterior are split by input, so the
        # parts that do not depend on the recurrence (action, embedding) are computed for all
        # time steps at once, outside the sequential loop.
        self.img_z = nn.Linear(self.stoch_dim, c.hidden)  # its bias also serves img_a
        self.img_a = nn.Linear(spec.action_dim, c.hidden, bias=False)
        self.img_norm = nn.LayerNorm(c.hidden)
        self.gru = nn.GRUCell(c.hidden, c.deter)
        self.prior_net = mlp(c.deter, c.hidden, self.stoch_dim, 1)
        self.post_h = nn.Linear(c.deter, c.hidden)  # its bias also serves post_e
        self.post_e = nn.Linear(embed, c.hidden, bias=False)
        self.post_out = nn.Sequential(
            nn.LayerNorm(c.hidden), nn.SiLU(), nn.Linear(c.hidden, self.stoch_dim)
        )
        if self.images:
            self.decoder = ConvDecoder(feat, spec.obs_shape, c.cnn_depth)
        else:
            self.decoder = mlp(feat, c.hidden, self.obs_dim, c.layers)
        self.reward_head = mlp(feat, c.hidden, c.reward_bins, c.layers)
        self.cont_head = mlp(feat, c.hidden, 1, c.layers)
        self.twohot = TwoHot(c.reward_bins, -20.0, 20.0)
        # DreamerV3 zero-initializes the reward head so early predictions are 0, not noise.
        last = self.reward_head[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    # --- categorical latent ---------------------------------------------------------------
    def _probs(self, logits: Tensor) -> Tensor:
        c: DreamerV3Config = self.config
        probs = softmax(logits.reshape(*logits.shape[:-1], c.stoch, c.classes))
        return (1 - c.unimix) * probs + c.unimix / c.classes

    def _sample(self, logits: Tensor, race: Tensor | None) -> Tensor:
        """One-hot sample with straight-through gradients; the expected one-hot (the mixed
        probabilities) when ``race`` is None."""
        c: DreamerV3Config = self.config
        return StraightThroughCategorical.apply(logits, race, c.classes, c.unimix)

    def _race(self, *shape: int) -> Tensor | None:
        # Deterministic (expected) latents outside training, so evaluation is repeatable.
        if not self.training:
            return None
        c: DreamerV3Config = self.config
        u = torch.rand(*shape, c.stoch, c.classes, device=self.device).clamp_(min=1e-12)
        return -1.0 / torch.log(u)  # 1 / Exp(1)

    # --- recurrent steps --------------------------------------------------------------------
    def _target(self, obs: Tensor) -> Tensor:
        """Vectors: what the encoder reads and the decoder predicts, symlog of the
        standardized observation, flattened."""
        return symlog(self.obs_scaler.normalize(obs.flatten(-len(self.spec.obs_shape))))

    def _embed(self, obs: Tensor) -> Tensor:
        return self.encoder(obs if self.images else self._target(obs))

    def _reconstruction(self, feat: Tensor, obs: Tensor) -> Tensor:
        """Squared error of the decoded observation, summed over its dimensions (pixels)."""
        if self.images:
            return pixel_error(self.decoder(feat), obs)
        return (self.decoder(feat) - self._target(obs)).pow(2).sum(-1).mean()

    def _action_proj(self, action: Tensor) -> Tensor:
        """The action's share of the prior's input layer (with that layer's bias)."""
        return F.linear(action, self.img_a.weight, self.img_z.bias)

    def _embed_proj(self, obs: Tensor) -> Tensor:
        """The observation's share of the posterior's first layer (with that layer's bias)."""
        return F.linear(self._embed(obs), self.post_e.weight, self.post_h.bias)

    def _img_step(self, h: Tensor, z: Tensor, a_proj: Tensor) -> Tensor:
        x = torch.addmm(a_proj, z, self.img_z.weight.t())
        return self.gru(F.silu(self.img_norm(x)), h)

    def _post_logits(self, h: Tensor, e_proj: Tensor) -> Tensor:
        return self.post_out(torch.addmm(e_proj, h, self.post_h.weight.t()))

    def initial_state(self, batch_size: int) -> State:
        c: DreamerV3Config = self.config
        zeros = torch.zeros
        return State(
            {
                "deter": zeros(batch_size, c.deter, device=self.device),
                "stoch": zeros(batch_size, self.stoch_dim, device=self.device),
            }
        )

    # --- contract -------------------------------------------------------------------------
    def encode(self, obs: Tensor) -> State:
        # The first step of a sequence, exactly as ``observe`` takes it: one GRU step from the
        # zero state with no action, then the posterior.
        no_action = torch.zeros(obs.shape[0], self.spec.action_dim, device=obs.device)
        return self.update(self.initial_state(obs.shape[0]), no_action, obs)

    def transition(self, state: State, action: Tensor) -> State:
        h = self._img_step(state["deter"], state["stoch"], self._action_proj(action))
        z = self._sample(self.prior_net(h), self._race(h.shape[0]))
        return State({"deter": h, "stoch": z})

    def update(self, state: State, action: Tensor, obs: Tensor) -> State:
        h = self._img_step(state["deter"], state["stoch"], self._action_proj(action))
        logits = self._post_logits(h, self._embed_proj(obs))
        return State({"deter": h, "stoch": self._sample(logits, self._race(h.shape[0]))})

    def decode(self, state: State) -> ModelOutput:
        feat = torch.cat([state["deter"], state["stoch"]], -1)
        if self.images:
            obs = self.decoder(feat)
        else:
            flat = self.obs_scaler.denormalize(symexp(self.decoder(feat)))
            obs = flat.reshape(*feat.shape[:-1], *self.spec.obs_shape)
        return ModelOutput(
            observation=obs,
            reward=self.twohot.mean(self.reward_head(feat)),
            continue_prob=torch.sigmoid(self.cont_head(feat)).squeeze(-1),
        )

    def _cell_params(self) -> tuple[Any, ...]:
        c: DreamerV3Config = self.config
        ln_post, out = self.post_out[0], self.post_out[2]
        assert isinstance(ln_post, nn.LayerNorm) and isinstance(out, nn.Linear)
        assert self.gru.bias_ih is not None and self.gru.bias_hh is not None
        return (
            self.img_z.weight, self.img_norm.weight, self.img_norm.bias,
            self.gru.weight_ih, self.gru.weight_hh, self.gru.bias_ih, self.gru.bias_hh,
            self.post_h.weight, ln_post.weight, ln_post.bias, out.weight, out.bias,
            c.classes, c.unimix, self.img_norm.eps,
        )  # fmt: skip

    def observe(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Filter a batch of sequences: returns h, z and posterior logits, each [L, B, ...]."""
        obs = batch.obs.transpose(0, 1)
        steps, size = obs.shape[:2]
        embed_proj = self._embed_proj(obs)
        act_proj = self._action_proj(batch.action.transpose(0, 1))
        # A segment starts without history, as in ``encode``: its first step sees no action
        # (segments may start mid-episode, where the recorded action is not zero).
        act_proj = torch.cat([self.img_z.bias.expand_as(act_proj[:1]), act_proj[1:]])
        keep = (1.0 - batch.is_first.transpose(0, 1)).unsqueeze(-1)
        # Segments from our sampler start at t=0 and never cross episodes; skip the masking
        # multiplications unless an episode starts mid-segment.
        restarts = bool(batch.is_first[:, 1:].any())
        race = self._race(steps, size)
        state = self.initial_state(size)
        # One fused node for the whole sequence (see cell.py); the same math as update().
        return posterior_sequence(
            state["deter"], state["stoch"], act_proj, embed_proj, race,
            keep if restarts else None, *self._cell_params(),
        )  # fmt: skip

    def loss(self, batch: Batch) -> LossOutput:
        c: DreamerV3Config = self.config
        if c.shift_pixels and self.training:
            batch = dataclasses.replace(batch, obs=random_shift(batch.obs, c.shift_pixels))
        h, z, post_logits = self.observe(batch)
        feat = torch.cat([h, z], -1)
        recon = self._reconstruction(feat, batch.obs.transpose(0, 1))
        reward = self.twohot.loss(self.reward_head(feat), batch.reward.transpose(0, 1)).mean()
        cont_target = 1.0 - batch.terminated.transpose(0, 1)
        cont = F.binary_cross_entropy_with_logits(self.cont_head(feat).squeeze(-1), cont_target)
        post = self._probs(post_logits)
        prior = self._probs(self.prior_net(h))
        kl_dyn = _categorical_kl(post.detach(), prior)
        kl_rep = _categorical_kl(post, prior.detach())
        dyn = kl_dyn.clamp(min=c.free_nats).mean()
        rep = kl_rep.clamp(min=c.free_nats).mean()
        kl = c.kl_dyn_scale * dyn + c.kl_rep_scale * rep
        total = c.recon_scale * recon + reward + cont + kl
        components = {
            "reconstruction": recon,
            "reward": reward,
            "continue": cont,
            "kl_dynamics": dyn,
            "kl_representation": rep,
        }
        return LossOutput(
            loss=total,
            components=components,
            metrics={"world_model_loss": total.item(), "kl_raw": kl_dyn.mean().item()},
        )


@register_family(
    "dreamerv3_pixels",
    presets=PIXEL_PRESETS,
    # A reference since its gate sweep beat persistence on frames on every seed (6 of 6:
    # docs/quality-gates.md, "Frame gates").
    maturity=Maturity.REFERENCE,
    description="DreamerV3 on frames: CNN encoder and decoder around the same RSSM",
)
class DreamerV3Pixels(DreamerV3):
    """DreamerV3 with the paper's image pathway: its own family, so frames get their own data
    set, gate policy and release line (the model code is DreamerV3's, ``cnn_depth > 0``)."""


def _categorical_kl(p: Tensor, q: Tensor) -> Tensor:
    """KL(p || q) of factorized categoricals [..., stoch, classes], summed over latents."""
    return (p * (p.log() - q.log())).sum((-2, -1))
