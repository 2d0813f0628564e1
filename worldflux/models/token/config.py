"""Token world-model hyper-parameters and presets.

The architecture follows IRIS (Micheli, Alonso and Fleuret 2023, "Transformers are
Sample-Efficient World Models"): a GPT-style causal transformer over interleaved observation
tokens and actions. IRIS tokenizes frames with a VQ-VAE; vector observations here are
tokenized per dimension with fixed uniform bins in symlog space instead. The ``iris`` preset
uses the paper's transformer sizes (10 layers, 4 heads, width 256, 20 time steps of context,
dropout 0.1) with its codebook size (512) as bins per dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

from worldflux.core.errors import ConfigError


@dataclass(frozen=True)
class TokenConfig:
    vocab_size: int = 64  # bins per observation dimension
    value_range: float = 3.0  # bins cover symlog(x) in [-value_range, value_range] (|x| <= 19)
    context: int = 16  # time steps in the transformer's window
    embed: int = 64  # transformer width
    layers: int = 1  # one block keeps a 15-step rollout within the latency budget on a CPU
    heads: int = 4
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * embed
    dropout: float = 0.0

    def validate(self) -> None:
        for name in ("embed", "layers", "heads", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ConfigError(f"token: {name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size < 2:
            raise ConfigError(f"token: vocab_size must be >= 2, got {self.vocab_size}")
        if self.context < 2:
            raise ConfigError(f"token: context must be >= 2 time steps, got {self.context}")
        if self.embed % self.heads:
            raise ConfigError(
                f"token: embed ({self.embed}) must be a multiple of heads ({self.heads})"
            )
        if not self.value_range > 0:
            raise ConfigError(f"token: value_range must be > 0, got {self.value_range}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"token: dropout must be in [0, 1), got {self.dropout}")


PRESETS = {
    "ci": TokenConfig(),
    "small": TokenConfig(vocab_size=128, context=32, embed=128, layers=4, heads=4),
    # IRIS's world-model transformer (Appendix, Table of hyper-parameters).
    "iris": TokenConfig(vocab_size=512, context=20, embed=256, layers=10, heads=4, dropout=0.1),
}
