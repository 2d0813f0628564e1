"""V-JEPA 2: a ViT joint-embedding predictive world model of image observations.

Frames x [C, H, W] are cut into P patches of p x p pixels (32 x 32 frames, p = 8: P = 16).

    context encoder   h = f(patches, visible)       ViT: tokens attend to visible patches only
    target encoder    hb = fb(patches)              fb = EMA of f over ALL patches, no gradient:
                                                    fb <- (1 - tau) fb + tau f
    frame embedding   z_t = n(mean_j f(x_t)_j)      n(v) = v / |v|; the State (full frame)
    target embedding  zb_t = n(mean_j hb_j)
    mask predictor    q_j = n(g([h_visible; m + pos_j]))_j    for masked patches j
    action predictor  p_{t+1} = n(p_t + u(p_t, a_{t+1}))      p_t = z_t, rolled open loop
    reward head       r_t = symexp(h(z_t))

Masks M are the union of ``mask_blocks`` random rectangles of patches per frame (multi-block
masking). Losses over a segment of L frames (w_k ∝ rho^(k-1), k = 1..H):

    masked    = mean_{t, j in M_t} [1 - <q_tj, n(hb_tj)>]           in [0, 2]
    next      = sum_k w_k mean_s [1 - <p^(k)_{s+k}, zb_{s+k}>]      in [0, 2]
    variance  = mean_d relu(var_floor - sqrt(D) std_batch(z_d))    VICReg-style hinge
    reward    = mean_t (h(z_t) - symlog r_t)^2

``world_model_loss`` (the gate metric) is (masked + next) / 2: cosine distances between unit
vectors, non-negative and on a fixed scale while the target moves. Collapse would also make it
small, which the variance hinge (trained) and ``embedding_std`` (reported: 1 for isotropic
unit vectors, 0 when collapsed) guard against; ``no_change_baseline`` is ``next`` for
p^(k) = z_s, which the action predictor must beat. Masks come from the global torch RNG in
training (the trainer's seed controls them) and from a generator seeded with ``mask_seed`` in
eval mode, so held-out evaluation is exact and consumes no global random numbers.
Row convention: action t led to observation t, so the action taken at frame t is action t+1.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.core.errors import ConfigError
from worldflux.core.model import Capability, Maturity, ModelSpec, WorldModel
from worldflux.core.registry import register_family
from worldflux.core.types import Batch, LossOutput, ModelOutput, State
from worldflux.models.vjepa2.config import PRESETS, VJEPA2Config
from worldflux.models.vjepa2.vit import Block, Encoder, multiblock_mask, patchify
from worldflux.nn import ema_update, embedding_spread, mlp, multistep_cosine_loss, symexp, symlog


@register_family(
    "vjepa2",
    presets=PRESETS,
    maturity=Maturity.EXPERIMENTAL,
    description="V-JEPA 2: ViT patch encoder, multi-block masking, EMA target, action predictor",
)
class VJEPA2(WorldModel):
    capabilities = frozenset({Capability.REWARD_PREDICTION})

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        c: VJEPA2Config = spec.config
        if len(spec.obs_shape) != 3 or spec.obs_shape[1] % c.patch or spec.obs_shape[2] % c.patch:
            raise ConfigError(
                f"vjepa2 needs image observations [C, H, W] with H and W multiples of patch="
                f"{c.patch}, got obs_shape {spec.obs_shape} (try load_bundled('cartpole_pixels'))"
            )
        channels, height, width = spec.obs_shape
        self.grid = (height // c.patch, width // c.patch)
        tokens = self.grid[0] * self.grid[1]
        patch_dim = channels * c.patch * c.patch
        self.encoder = Encoder(patch_dim, tokens, c.width, c.depth, c.heads, c.mlp_ratio)
        # The mask predictor: its own width (as in the paper), a learned mask token and
        # positions, projected back to the encoder's width to compare with the target tokens.
        self.pred_in = nn.Linear(c.width, c.pred_width)
        self.mask_token = nn.Parameter(torch.zeros(c.pred_width))
        self.pred_pos = nn.Parameter(0.02 * torch.randn(tokens, c.pred_width))
        self.pred_blocks = nn.ModuleList(
            Block(c.pred_width, c.pred_heads, c.mlp_ratio) for _ in range(c.pred_depth)
        )
        self.pred_out = nn.Sequential(nn.LayerNorm(c.pred_width), nn.Linear(c.pred_width, c.width))
        self.action_predictor = mlp(c.width + spec.action_dim, c.hidden, c.width, c.action_layers)
        self.reward_head = mlp(c.width, c.hidden, 1, 1)
        # The action predictor starts as "nothing changes" (p_{t+1} = p_t), as in jepa: the
        # next-frame loss before training is the no-change baseline, not a random residual's.
        last = self.action_predictor[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        # Parameters (saved), frozen: the EMA in after_optimizer_step is their only update.
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)

    # --- pieces -----------------------------------------------------------------------------
    def _patches(self, obs: Tensor) -> Tensor:
        """[..., C, H, W] -> [N, P, C p p] with N the product of the leading dims."""
        return patchify(obs.reshape(-1, *self.spec.obs_shape), self.config.patch)

    def _embed(self, obs: Tensor) -> Tensor:
        """Unit-norm frame embeddings [..., D] of the context encoder over all patches."""
        pooled = self.encoder(self._patches(obs)).mean(1)
        return F.normalize(pooled, dim=-1).reshape(*obs.shape[:-3], -1)

    def _targets(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Target tokens n(hb) [N, P, D] and pooled target embeddings [..., D]."""
        with torch.no_grad():
            tokens = self.target_encoder(self._patches(obs))
            pooled = F.normalize(tokens.mean(1), dim=-1).reshape(*obs.shape[:-3], -1)
            return F.normalize(tokens, dim=-1), pooled

    def _mask(self, count: int) -> Tensor:
        # Eval: a fresh generator with a fixed seed (same masks every call, global RNG
        # untouched). Training: the global RNG, which the trainer seeds.
        generator = None
        if not self.training:
            generator = torch.Generator().manual_seed(self.config.mask_seed)
        c: VJEPA2Config = self.config
        return multiblock_mask(
            count, self.grid, c.mask_blocks, c.mask_block_max, generator, self.device
        )

    def _predict_masked(self, patches: Tensor, masked: Tensor) -> tuple[Tensor, Tensor]:
        """Context tokens over the visible patches and unit predictions for every patch
        (only the masked ones are scored)."""
        context = self.encoder(patches, ~masked)
        x = self.pred_in(context)
        x = torch.where(masked[..., None], self.mask_token.expand_as(x), x) + self.pred_pos
        for block in self.pred_blocks:
            x = block(x)
        return context, F.normalize(self.pred_out(x), dim=-1)

    def _step(self, z: Tensor, action: Tensor) -> Tensor:
        # Residual: predicting a change of embedding is easier than predicting it afresh.
        return F.normalize(z + self.action_predictor(torch.cat([z, action], -1)), dim=-1)

    # --- contract ---------------------------------------------------------------------------
    def encode(self, obs: Tensor) -> State:
        return State({"embedding": self._embed(obs)})

    def transition(self, state: State, action: Tensor) -> State:
        return State({"embedding": self._step(state["embedding"], action)})

    def update(self, state: State, action: Tensor, obs: Tensor) -> State:
        # CartPole frames do not show velocities, but the action predictor only ever sees one
        # frame's embedding too (as V-JEPA 2-AC with a single-frame context): no filtering.
        return self.encode(obs)

    def decode(self, state: State) -> ModelOutput:
        return ModelOutput(reward=symexp(self.reward_head(state["embedding"]).squeeze(-1)))

    def loss(self, batch: Batch) -> LossOutput:
        c: VJEPA2Config = self.config
        patches = self._patches(batch.obs)  # [B*L, P, p*p*C]
        target_tokens, target = self._targets(batch.obs)
        masked = self._mask(patches.shape[0])
        _, predicted = self._predict_masked(patches, masked)
        distance = 1 - (predicted * target_tokens).sum(-1)  # [B*L, P]
        weight = masked.to(distance.dtype)
        masked_loss = (distance * weight).sum() / weight.sum()

        z = self._embed(batch.obs)  # [B, L, D], full frames: what encode() gives the planner
        horizon = min(c.horizon, z.shape[1] - 1)
        next_loss, baseline = multistep_cosine_loss(
            z, target, batch.action, self._step, horizon, c.rho
        )
        std = embedding_spread(z)
        variance = F.relu(c.var_floor - std).mean()
        reward = (self.reward_head(z).squeeze(-1) - symlog(batch.reward)).pow(2).mean()
        world_model = (masked_loss + next_loss) / 2
        total = masked_loss + next_loss + c.var_coef * variance + c.reward_coef * reward
        return LossOutput(
            loss=total,
            components={
                "masked": masked_loss,
                "next": next_loss,
                "variance": variance,
                "reward": reward,
            },
            metrics={
                "world_model_loss": world_model.item(),
                "masked_loss": masked_loss.item(),
                "next_loss": next_loss.item(),
                "embedding_std": std.mean().item(),
                "no_change_baseline": baseline,
                "mask_fraction": weight.mean().item(),
            },
        )

    def diagnostics(self, batch: Batch) -> dict[str, Tensor]:
        patches = self._patches(batch.obs)
        masked = self._mask(patches.shape[0])
        context, predicted = self._predict_masked(patches, masked)
        target_tokens, _ = self._targets(batch.obs)
        return {
            "context_projection": context,
            "target_projection": target_tokens,
            "mask": masked.to(context.dtype),
            "predictor_projection": predicted,
        }

    def after_optimizer_step(self) -> None:
        """Move the target encoder a step ``tau`` toward the context encoder (EMA)."""
        ema_update(self.target_encoder, self.encoder, self.config.tau)
