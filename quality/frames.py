"""Measures of predicted frames (image observations in [0, peak]): PSNR, SSIM, and the
frame-to-frame change of a sequence (temporal consistency).

    PSNR  = 10 log10(peak^2 / MSE), the MSE over every pixel of every frame of the batch
    SSIM  = mean over frames, channels and window positions of
            (2 mu_x mu_y + C1) (2 sigma_xy + C2) / (mu_x^2 + mu_y^2 + C1) / (s_x^2 + s_y^2 + C2)
            with Gaussian windows of 11 px, sigma 1.5 (valid positions only), C1 = (0.01 peak)^2,
            C2 = (0.03 peak)^2 (Wang et al. 2004, the reference parameters)
    change_t = sqrt(mean((frame_t - frame_{t-1})^2)), the RMS change from one frame to the next

The window shrinks to the frame for frames smaller than 11 px. Plain torch, float64: the
gates compare these numbers with thresholds, so they must not depend on the device's rounding.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def psnr(predicted: Tensor, truth: Tensor, peak: float) -> float:
    mse = float(((predicted.double() - truth.double()) ** 2).mean())
    return 10 * math.log10(max(peak, 1e-12) ** 2 / max(mse, 1e-12))


def _window(size: int, channels: int, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(predicted: Tensor, truth: Tensor, peak: float) -> float:
    """Mean SSIM of frames [N, C, H, W]."""
    if predicted.shape != truth.shape or predicted.dim() != 4:
        raise ValueError(
            f"ssim needs two frame batches [N, C, H, W] of one shape, got "
            f"{tuple(predicted.shape)} and {tuple(truth.shape)}"
        )
    x, y = predicted.double(), truth.double()
    channels, size = x.shape[1], min(WINDOW, x.shape[2], x.shape[3])
    window = _window(size, channels, x.device)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (K1 * peak) ** 2, (K2 * peak) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float((numerator / denominator).mean())


def rms_change(frames: Tensor) -> list[float]:
    """RMS change between consecutive frames of a sequence [T, ...] (T - 1 values)."""
    steps = frames.double().flatten(2) if frames.dim() > 2 else frames.double()
    return [float(((b - a) ** 2).mean().sqrt()) for a, b in itertools.pairwise(steps)]
