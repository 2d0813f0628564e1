"""JEPA hyper-parameters and presets.

The family follows I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture": EMA target encoder, predictor in embedding space)
made action-conditioned as in LeCun 2022 ("A Path Towards Autonomous Machine Intelligence").
Those papers size ViT encoders of images; they give no sizes for MLP encoders of vector
observations, so this family has only the ``ci``, ``small`` and ``base`` presets below. The
EMA rate of I-JEPA (momentum 0.996 -> 1.0, i.e. tau <= 0.004) assumes ~10^5 steps; the short
presets use a faster target so it moves within a few hundred steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from worldflux.core.errors import ConfigError


@dataclass(frozen=True)
class JEPAConfig:
    embed: int = 32  # embedding size D (unit-normalized)
    hidden: int = 64  # MLP width of encoder, predictor and reward head
    enc_layers: int = 2
    pred_layers: int = 2
    horizon: int = 5  # predictor steps rolled out (open loop) from every start in a segment
    rho: float = 0.7  # weight of step k is rho^(k-1), normalized
    tau: float = 0.02  # EMA rate of the target encoder
    var_floor: float = 0.5  # hinge floor of the scaled per-dimension std (see model.py)
    var_coef: float = 1.0
    reward_coef: float = 0.1

    def validate(self) -> None:
        if self.embed < 2:
            raise ConfigError(f"jepa: embed must be >= 2, got {self.embed}")
        if self.horizon < 1:
            raise ConfigError(f"jepa: horizon must be >= 1, got {self.horizon}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"jepa: tau must be in (0, 1], got {self.tau}")
        if not 0.0 < self.rho <= 1.0:
            raise ConfigError(f"jepa: rho must be in (0, 1], got {self.rho}")
        if min(self.var_floor, self.var_coef, self.reward_coef) < 0:
            raise ConfigError("jepa: var_floor, var_coef and reward_coef must be >= 0")


PRESETS = {
    "ci": JEPAConfig(),
    "small": JEPAConfig(embed=64, hidden=256, tau=0.01),
    "base": JEPAConfig(embed=256, hidden=1024, enc_layers=3, pred_layers=3, tau=0.004),
}
