"""DreamerV3's image pathway (Hafner et al. 2023, appendix, paraphrased: a CNN of stride-2
4 x 4 convolutions that halve the resolution down to 4 x 4 and double the channels, mirrored by
transposed convolutions in the decoder).

Encoder, for a frame [C, S, S] with pixels in [0, 1] and S = 4 * 2^k:
    x = frame - 0.5
    k times: x = SiLU(LayerNorm_channels(Conv4x4/2(x)))      channels depth, 2 depth, 4 depth, ...
    embed = flatten(x)                                         [depth * 2^(k-1) * 4 * 4]
Decoder, from the model state feat:
    x = reshape(Linear(feat))                                  [depth * 2^(k-1), 4, 4]
    k-1 times: x = SiLU(LayerNorm_channels(ConvT4x4/2(x)))     halving the channels
    mean = ConvT4x4/2(x)                                       [C, S, S], predicts the frame
The reconstruction loss is the squared error summed over pixels (the paper's image MSE; no
symlog, pixels are already in a unit range).

Tensors run in channels-last memory layout: there a LayerNorm over channels is a LayerNorm over
the last dimension of a free permute, and oneDNN's CPU convolutions prefer it.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.core.errors import ConfigError

# Feature maps shrink to this side length before flattening (the paper's 4 x 4).
BOTTOM = 4


def stages_for(obs_shape: tuple[int, ...]) -> int:
    """How many stride-2 stages take a square frame down to 4 x 4; a clear error otherwise."""
    if len(obs_shape) != 3:
        raise ConfigError(
            f"the image encoder needs frames shaped [channels, height, width], got {obs_shape}: "
            "use a vector preset (cnn_depth 0) for vector observations"
        )
    _, height, width = obs_shape
    stages = round(math.log2(height / BOTTOM)) if height >= 2 * BOTTOM else 0
    if height != width or stages < 1 or BOTTOM * 2**stages != height:
        raise ConfigError(
            f"the image encoder needs square frames of side 4 * 2^k (8, 16, 32, 64, ...), got "
            f"{height} x {width}: resize the frames"
        )
    return stages


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of an [N, C, H, W] tensor (DreamerV3 normalizes channels)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _block(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, ChannelNorm(channels), nn.SiLU())


def _frames(x: Tensor, dims: int) -> tuple[Tensor, tuple[int, ...]]:
    """Flatten the leading (batch, time) dimensions of [..., C, H, W] into one."""
    lead = x.shape[:-dims]
    return x.reshape(-1, *x.shape[-dims:]), lead


class ConvEncoder(nn.Module):
    def __init__(self, obs_shape: tuple[int, ...], depth: int) -> None:
        super().__init__()
        stages = stages_for(obs_shape)
        channels = [obs_shape[0]] + [depth * 2**i for i in range(stages)]
        self.net = nn.Sequential(
            *(
                _block(nn.Conv2d(cin, cout, 4, 2, padding=1, bias=False), cout)
                for cin, cout in itertools.pairwise(channels)
            )
        )
        self.out_dim = channels[-1] * BOTTOM * BOTTOM

    def forward(self, frames: Tensor) -> Tensor:
        """[..., C, S, S] in [0, 1] -> [..., out_dim]."""
        x, lead = _frames(frames, 3)
        # frame - 0.5 written straight into channels-last memory: one copy of the batch, not two
        # (the frames are data, never differentiated).
        centred = torch.empty_like(x, memory_format=torch.channels_last)
        torch.sub(x.detach(), 0.5, out=centred)
        return self.net(centred).flatten(1).reshape(*lead, self.out_dim)


class ConvDecoder(nn.Module):
    def __init__(self, feat_dim: int, obs_shape: tuple[int, ...], depth: int) -> None:
        super().__init__()
        stages = stages_for(obs_shape)
        channels = [depth * 2**i for i in reversed(range(stages))]  # top first
        self.obs_shape = obs_shape
        self.top = channels[0]
        self.linear = nn.Linear(feat_dim, self.top * BOTTOM * BOTTOM)
        self.net = nn.Sequential(
            *(
                _block(nn.ConvTranspose2d(cin, cout, 4, 2, padding=1, bias=False), cout)
                for cin, cout in itertools.pairwise(channels)
            ),
            nn.ConvTranspose2d(channels[-1], obs_shape[0], 4, 2, padding=1),
        )
        # The output predicts the frame itself, starting from mid-grey (frame - 0.5 = 0).
        last = self.net[-1]
        assert isinstance(last, nn.ConvTranspose2d) and last.bias is not None
        nn.init.constant_(last.bias, 0.5)

    def forward(self, feat: Tensor) -> Tensor:
        """[..., feat_dim] -> [..., C, S, S]: the predicted frame (the mean of its pixels)."""
        x, lead = _frames(feat, 1)
        x = self.linear(x).reshape(-1, BOTTOM, BOTTOM, self.top).permute(0, 3, 1, 2)
        return self.net(x).reshape(*lead, *self.obs_shape)


def pixel_error(prediction: Tensor, frames: Tensor) -> Tensor:
    """Squared error summed over each frame's pixels, averaged over frames [..., C, S, S]
    (reduced in one pass: no per-pixel error tensor is kept)."""
    return F.mse_loss(prediction, frames, reduction="sum") / frames[..., 0, 0, 0].numel()


def random_shift(frames: Tensor, pad: int) -> Tensor:
    """Frames [B, T, C, S, S] each sequence moved by one random offset in [-pad, pad] pixels on
    both axes, edges replicated (DrQ's random shift, Kostrikov et al. 2021, as TD-MPC2 uses it on
    frames; one offset per sequence, so its motion is unchanged). Draws from torch's generator."""
    batch, steps, channels, height, width = frames.shape
    padded = F.pad(frames.reshape(batch, steps * channels, height, width), (pad,) * 4, "replicate")
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2)).tolist()
    shifted = torch.stack(
        [padded[i, :, y : y + height, x : x + width] for i, (y, x) in enumerate(offsets)]
    )
    return shifted.reshape(frames.shape)
