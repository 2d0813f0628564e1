"""The small ViT pieces of V-JEPA 2: patch tokens, pre-norm transformer blocks, and the
multi-block masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def patchify(frames: Tensor, patch: int) -> Tensor:
    """[N, C, H, W] -> [N, (H/p)(W/p), C p p], patches in row-major order."""
    n, c, h, w = frames.shape
    x = frames.reshape(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(n, (h // patch) * (w // patch), c * patch * patch)


class Block(nn.Module):
    """Pre-norm transformer block; ``allowed`` [N, T] (True = may be attended to) drops the
    masked tokens from every query's keys."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )

    def forward(self, x: Tensor, allowed: Tensor | None = None) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        mask = None if allowed is None else allowed[:, None, None, :]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(attended.transpose(1, 2).reshape(n, t, d))
        return x + self.mlp(self.norm2(x))


class Encoder(nn.Module):
    """Patch embedding + learned positions + blocks + final norm: token features [N, T, D]."""

    def __init__(
        self, patch_dim: int, tokens: int, width: int, depth: int, heads: int, mlp_ratio: int
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(patch_dim, width)
        self.pos = nn.Parameter(0.02 * torch.randn(tokens, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, patches: Tensor, visible: Tensor | None = None) -> Tensor:
        x = self.embed(patches) + self.pos
        for block in self.blocks:
            x = block(x, visible)
        return self.norm(x)


def multiblock_mask(
    count: int,
    grid: tuple[int, int],
    blocks: int,
    block_max: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """[count, rows*cols] bool, True = masked: the union of ``blocks`` random rectangles of
    1..block_max patches per side per frame (V-JEPA's multi-block masking, scaled down).

    Drawn on the CPU with ``generator`` (the global RNG when None) so a seeded generator gives
    the same masks on every device. At least one patch is always left visible (the context
    encoder needs something to attend to); at least one is always masked.
    """
    rows, cols = grid
    shape = (count, blocks)
    side_h = min(block_max, rows)
    side_w = min(block_max, cols)
    h = torch.randint(1, side_h + 1, shape, generator=generator)
    w = torch.randint(1, side_w + 1, shape, generator=generator)
    top = (torch.rand(shape, generator=generator) * (rows - h + 1)).long()
    left = (torch.rand(shape, generator=generator) * (cols - w + 1)).long()
    r = torch.arange(rows)[None, None, :, None]
    c = torch.arange(cols)[None, None, None, :]
    inside_r = (r >= top[..., None, None]) & (r < (top + h)[..., None, None])
    inside_c = (c >= left[..., None, None]) & (c < (left + w)[..., None, None])
    masked = (inside_r & inside_c).any(1).reshape(count, rows * cols)
    # Unmask a whole-grid mask's first patch: only possible when blocks cover everything.
    full = masked.all(-1)
    masked[full, 0] = False
    return masked.to(device)
