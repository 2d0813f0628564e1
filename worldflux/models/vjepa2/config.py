"""V-JEPA 2 hyper-parameters and presets.

The family follows V-JEPA 2 (Assran et al. 2025, "V-JEPA 2: Self-Supervised Video Models
Enable Understanding, Prediction and Planning"): a ViT context encoder over the visible patches
of a multi-block mask, an EMA target encoder over all patches, a predictor of the masked
patches' target embeddings, and (V-JEPA 2-AC) an action-conditioned predictor of the next
frame's embedding. The paper's encoders are ViT-L/16 (width 1024, 24 blocks, 16 heads),
ViT-H/16 (1280, 32, 16) and ViT-g/16 (1408, 40, 22); its mask predictor is 12 blocks of width
384 and its action-conditioned predictor 24 blocks of width 1024. The ``large``, ``huge`` and
``giant`` presets record those sizes (16 px patches, so frames must be multiples of 16); the
``ci`` and ``small`` presets are tiny ViTs for 32 x 32 frames (``cartpole_pixels``). The
paper's EMA momentum 0.99925 (tau 7.5e-4) assumes ~10^5 steps; the short presets use a faster
target so it moves within a few hundred steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from worldflux.core.errors import ConfigError


@dataclass(frozen=True)
class VJEPA2Config:
    patch: int = 8  # square patch side in pixels
    width: int = 32  # token width of the encoders (= embedding size D of the state)
    depth: int = 1  # transformer blocks of the context / target encoder
    heads: int = 2
    pred_width: int = 32  # token width of the masked-patch predictor
    pred_depth: int = 1
    pred_heads: int = 2
    mlp_ratio: int = 2  # transformer MLP hidden = ratio * width
    hidden: int = 64  # MLP width of the action-conditioned predictor and the reward head
    action_layers: int = 2
    mask_blocks: int = 2  # rectangles of patches unioned into one mask per frame
    mask_block_max: int = 2  # each rectangle is 1..mask_block_max patches high and wide
    mask_seed: int = 0  # seed of the fixed generator drawing masks in eval mode
    horizon: int = 3  # next-frame predictor steps rolled out open loop from every start
    rho: float = 0.7  # weight of step k is rho^(k-1), normalized
    tau: float = 0.02  # EMA rate of the target encoder
    var_floor: float = 0.5  # hinge floor of the scaled per-dimension std of the embedding
    var_coef: float = 1.0
    reward_coef: float = 0.1

    def validate(self) -> None:
        if min(self.patch, self.width, self.depth, self.heads, self.pred_width) < 1:
            raise ConfigError("vjepa2: patch, width, depth, heads and pred_width must be >= 1")
        if min(self.pred_depth, self.pred_heads, self.mlp_ratio, self.hidden) < 1:
            raise ConfigError("vjepa2: pred_depth, pred_heads, mlp_ratio, hidden must be >= 1")
        if self.width % self.heads or self.pred_width % self.pred_heads:
            raise ConfigError("vjepa2: width and pred_width must be divisible by their heads")
        if self.mask_blocks < 1 or self.mask_block_max < 1:
            raise ConfigError("vjepa2: mask_blocks and mask_block_max must be >= 1")
        if self.horizon < 1:
            raise ConfigError(f"vjepa2: horizon must be >= 1, got {self.horizon}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"vjepa2: tau must be in (0, 1], got {self.tau}")
        if not 0.0 < self.rho <= 1.0:
            raise ConfigError(f"vjepa2: rho must be in (0, 1], got {self.rho}")
        if min(self.var_floor, self.var_coef, self.reward_coef) < 0:
            raise ConfigError("vjepa2: var_floor, var_coef and reward_coef must be >= 0")


_PAPER = {"patch": 16, "pred_width": 384, "pred_depth": 12, "pred_heads": 12, "mlp_ratio": 4}
PRESETS = {
    "ci": VJEPA2Config(),
    "small": VJEPA2Config(
        width=64,
        depth=2,
        heads=4,
        pred_width=64,
        pred_depth=2,
        pred_heads=4,
        hidden=256,
        tau=0.01,
    ),
    "large": VJEPA2Config(width=1024, depth=24, heads=16, hidden=1024, tau=7.5e-4, **_PAPER),
    "huge": VJEPA2Config(width=1280, depth=32, heads=16, hidden=1280, tau=7.5e-4, **_PAPER),
    "giant": VJEPA2Config(width=1408, depth=40, heads=22, hidden=1408, tau=7.5e-4, **_PAPER),
}
