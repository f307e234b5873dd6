"""Pixel-level quality between images in [0, 1]: PSNR and SSIM, as torchmetrics computes them.

Both score each image on its own and then average over the batch, so one bad image lowers the
mean the same way whatever the batch size. Identical images get a finite PSNR cap (MAX_PSNR)
rather than inf, so the numbers stay valid JSON in reports.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from edgedistill.errors import EdgeDistillError

MAX_PSNR = 120.0  # dB: what an MSE of 1e-12 (of data_range²) would score
SSIM_WINDOW = 11  # torchmetrics' default Gaussian window; images must be at least this big


def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if a.dim() != 4 or a.shape != b.shape:
        raise EdgeDistillError(
            f"{what}: expected two (N, C, H, W) tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return a.detach().float(), b.detach().float().to(a.device)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean over the batch of per-image PSNR (dB) of two (N, C, H, W) tensors."""
    a, b = _check_pair(a, b, "psnr")
    per_image = peak_signal_noise_ratio(a, b, data_range=data_range, reduction="none", dim=(1, 2, 3))
    return float(per_image.clamp(max=MAX_PSNR).mean())


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean over the batch of per-image SSIM (11x11 Gaussian window, sigma 1.5; 1.0 = identical)."""
    a, b = _check_pair(a, b, "ssim")
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise EdgeDistillError(
            f"ssim: images of {a.shape[-2]}x{a.shape[-1]} are smaller than its {SSIM_WINDOW}-pixel window"
        )
    per_image = structural_similarity_index_measure(a, b, data_range=data_range, reduction="none")
    return float(per_image.mean())
