"""TD-MPC2 hyper-parameters and presets (Hansen et al. 2024, "TD-MPC2: Scalable, Robust World
Models for Continuous Control"; model sizes 1M..317M from the paper's appendix)."""

from __future__ import annotations

from dataclasses import dataclass

from worldflux.core.errors import ConfigError


@dataclass(frozen=True)
class TDMPC2Config:
    latent: int = 32  # latent state size (a multiple of simnorm_dim)
    hidden: int = 32  # MLP width of dynamics, reward, Q and policy
    enc_hidden: int = 32  # encoder MLP width
    enc_layers: int = 1
    simnorm_dim: int = 8  # SimNorm group size
    num_q: int = 2  # Q ensemble size (paper: 5)
    num_bins: int = 101  # two-hot bins for reward and Q over symlog space
    vmin: float = -10.0
    vmax: float = 10.0
    rho: float = 0.5  # temporal weight of the latent rollout losses
    discount: float = 0.99
    tau: float = 0.01  # EMA rate of the target Q networks
    consistency_coef: float = 20.0
    reward_coef: float = 0.1
    value_coef: float = 0.1
    entropy_coef: float = 1e-4
    discrete_actions: bool = False  # one-hot actions: a categorical policy prior

    def validate(self) -> None:
        if self.latent % self.simnorm_dim:
            raise ConfigError(
                f"tdmpc2: latent ({self.latent}) must be a multiple of simnorm_dim "
                f"({self.simnorm_dim})"
            )
        if self.num_q < 2:
            raise ConfigError("tdmpc2: num_q must be >= 2 (targets take the min of two Qs)")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"tdmpc2: tau must be in (0, 1], got {self.tau}")


PRESETS = {
    # Same sizes as WorldFlux's `ci` preset, for side-by-side benchmarks.
    "ci": TDMPC2Config(),
    "small": TDMPC2Config(latent=64, hidden=128, enc_hidden=128, enc_layers=2, num_q=2),
    # The paper's sizes: encoder width, MLP width, latent size, encoder layers; 5 Qs.
    "1m": TDMPC2Config(latent=128, hidden=384, enc_hidden=256, enc_layers=2, num_q=5),
    "5m": TDMPC2Config(latent=512, hidden=512, enc_hidden=256, enc_layers=2, num_q=5),
    "19m": TDMPC2Config(latent=768, hidden=1024, enc_hidden=1024, enc_layers=2, num_q=5),
    "48m": TDMPC2Config(latent=768, hidden=1792, enc_hidden=1792, enc_layers=2, num_q=5),
    "317m": TDMPC2Config(latent=1376, hidden=4096, enc_hidden=4096, enc_layers=3, num_q=5),
}
