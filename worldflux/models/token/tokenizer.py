"""Per-dimension observation tokenizer: symlog, then uniform bins over a fixed range.

    token_d = round((symlog(x_d) + r) / (2 r) * (V - 1)),  clipped to [0, V - 1]
    x_d     = symexp(c[token_d]),   c = linspace(-r, r, V)   (the bin centres)

The bins depend on the config only, never on data, so a rebuilt model tokenizes exactly as the
saved one did; symlog spends the resolution on small magnitudes and still covers |x| <= 19 at
the default range.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from worldflux.nn import symexp, symlog


class BinTokenizer(nn.Module):
    centres: Tensor

    def __init__(self, vocab_size: int, value_range: float) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.value_range = value_range
        # Persistent (saved) although fixed: the checkpoint then states its own bins.
        self.register_buffer("centres", torch.linspace(-value_range, value_range, vocab_size))

    def encode(self, x: Tensor) -> Tensor:
        """Values [...] -> tokens [...] (int64)."""
        r, v = self.value_range, self.vocab_size
        scaled = (symlog(x) + r) / (2 * r) * (v - 1)
        return scaled.round().clamp(0, v - 1).long()

    def centre(self, tokens: Tensor) -> Tensor:
        """Tokens -> bin centres in symlog space (the transformer's value feature)."""
        return self.centres[tokens]

    def decode(self, tokens: Tensor) -> Tensor:
        """Tokens [...] -> values [...] (bin centres mapped back from symlog space)."""
        return symexp(self.centre(tokens))
