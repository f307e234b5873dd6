"""PSNR / SSIM / max error: the one definition every part uses (distill's evaluation, export's
quality gate and sensitivity ranking, profile's output comparison, compress's scoring).

numpy only, so it runs on a device too. Per-image scores averaged over the batch; SSIM with an
11x11 Gaussian window (sigma 1.5) over the whole image, reflect-padded at the borders, as
torchmetrics does (tests/test_metrics.py checks agreement to 1e-3). Identical images score
MAX_PSNR rather than inf, so reports stay valid JSON. Torch tensors are accepted (CPU, no grad).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgedistill.core.errors import EdgeDistillError

MAX_PSNR = 120.0  # dB: what an MSE of 1e-12 (of data_range²) scores; identical images get this, not inf
SSIM_WINDOW, SSIM_SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def _numpy(x: Any) -> np.ndarray:
    """numpy view of an array or a (CPU, detached) torch tensor, without importing torch."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def to_unit(y: np.ndarray, output_range: Sequence[float]) -> np.ndarray:
    """Model output in its spec's range -> [0, 1], where PSNR/SSIM are measured."""
    lo, hi = output_range
    return np.clip((np.asarray(y, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)


def _as_nchw(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _numpy(a).astype(np.float64), _numpy(b).astype(np.float64)
    if a.shape != b.shape:
        raise EdgeDistillError(f"{what}: arrays differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4:
        raise EdgeDistillError(f"{what}: expected (N, C, H, W) or (C, H, W) arrays, got {a.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean over the batch of per-image PSNR in dB (capped at MAX_PSNR)."""
    return float(psnr_per_image(a, b, data_range).mean())


def psnr_per_image(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """(N,) per-image PSNR in dB (capped at MAX_PSNR): what a bootstrap resamples."""
    a, b = _as_nchw(a, b, "psnr")
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        per_image = 10.0 * np.log10(data_range**2 / mse)
    return np.minimum(per_image, MAX_PSNR)


def channel_shift(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> list[float]:
    """Per-channel mean of `a` minus that of `b`, as a fraction of `data_range`.

    A colour cast is a shift of a channel's mean over the whole set: PSNR barely moves for a 2 %
    shift that every viewer sees (a pink cat, a purple sky), so it is measured on its own.
    """
    a, b = _as_nchw(a, b, "channel shift")
    return [float(v) / data_range for v in (a - b).mean(axis=(0, 2, 3))]


def _gaussian() -> np.ndarray:
    t = np.arange(SSIM_WINDOW, dtype=np.float64) - (SSIM_WINDOW - 1) / 2
    g = np.exp(-(t**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def _blur(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' Gaussian filter over the last two axes."""
    k = len(g)
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    rows = sum(g[i] * x[..., i : i + h, :] for i in range(k))
    return sum(g[j] * rows[..., :, j : j + w] for j in range(k))  # type: ignore[index]


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean over the batch of per-image SSIM (1.0 = identical)."""
    a, b = _as_nchw(a, b, "ssim")
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise EdgeDistillError(
            f"ssim: images of {a.shape[-2]}x{a.shape[-1]} are smaller than its {SSIM_WINDOW}-pixel window"
        )
    g = _gaussian()
    pad = ((0, 0), (0, 0), (SSIM_WINDOW // 2,) * 2, (SSIM_WINDOW // 2,) * 2)
    a, b = np.pad(a, pad, mode="reflect"), np.pad(b, pad, mode="reflect")
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_a, mu_b = _blur(a, g), _blur(b, g)
    var_a = np.maximum(_blur(a * a, g) - mu_a**2, 0.0)
    var_b = np.maximum(_blur(b * b, g) - mu_b**2, 0.0)
    cov = _blur(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float((num / den).reshape(len(a), -1).mean(axis=1).mean())


def max_abs_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = _numpy(a).astype(np.float32), _numpy(b).astype(np.float32)
    if a.shape != b.shape:
        raise EdgeDistillError(f"max_abs_err: arrays differ in shape: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0
