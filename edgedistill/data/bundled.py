"""Training data that ships inside installed packages, so nothing is downloaded at run time.

Photos: scikit-image's and scikit-learn's bundled images (the pooch-fetched ones fail offline).
Digits: scikit-learn's 8x8 digits, upsampled to 32x32.
The photo restoration task (blur + noise -> clean) is defined here so the teacher's training,
its default distillation data and its quality checks all degrade photos the same way.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

TRAIN_PHOTOS = (
    "astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle",
    "colorwheel", "camera", "moon", "coins", "clock", "grass", "gravel", "brick", "page", "text",
    "sklearn:china.jpg", "sklearn:flower.jpg",
)  # fmt: skip
HELDOUT_PHOTOS = ("chelsea", "rocket")
MAX_SIDE = 640


@functools.cache
def _photo(name: str) -> np.ndarray:
    """An HxWx3 float32 image in [0, 1], longest side at most MAX_SIDE."""
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image

        img = load_sample_image(name.split(":", 1)[1])
    else:
        import skimage.data

        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):  # stereo pairs
            img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3].astype(np.float32) / 255.0
    scale = MAX_SIDE / max(img.shape[:2])
    if scale < 1:
        t = torch.from_numpy(img).permute(2, 0, 1)[None]
        t = F.interpolate(t, scale_factor=scale, mode="area")
        img = t[0].permute(1, 2, 0).numpy()
    return np.ascontiguousarray(img)


def bundled_photos(split: str = "train") -> list[np.ndarray]:
    names = {"train": TRAIN_PHOTOS, "heldout": HELDOUT_PHOTOS}[split]
    return [_photo(n) for n in names]


def random_crops(photos: list[np.ndarray], n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """n random size x size crops (with random flips) as an (n, 3, size, size) tensor in [0, 1]."""
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        img = photos[int(torch.randint(len(photos), (1,), generator=gen))]
        h, w = img.shape[:2]
        y = int(torch.randint(h - size + 1, (1,), generator=gen))
        x = int(torch.randint(w - size + 1, (1,), generator=gen))
        crop = torch.from_numpy(img[y : y + size, x : x + size]).permute(2, 0, 1)
        if torch.rand(1, generator=gen) < 0.5:
            crop = crop.flip(2)
        out[i] = crop
    return out


def center_crop(img: np.ndarray, size: int) -> torch.Tensor:
    h, w = img.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return torch.from_numpy(img[y : y + size, x : x + size]).permute(2, 0, 1).contiguous()


def _gaussian_kernels(sigmas: torch.Tensor, radius: int = 3) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k1 = torch.exp(-(t[None] ** 2) / (2 * sigmas[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    return k1[:, :, None] * k1[:, None, :]  # (n, k, k)


def degrade(clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The restoration task's input: Gaussian blur (sigma 0.5-1.6) + noise (std 0.02-0.10), in [0, 1]."""
    n, c, h, w = clean.shape
    sigmas = 0.5 + 1.1 * torch.rand(n, generator=gen)
    kernels = _gaussian_kernels(sigmas)
    r = kernels.shape[-1] // 2
    padded = F.pad(clean, (r, r, r, r), mode="reflect")
    weight = kernels.repeat_interleave(c, 0)[:, None]  # (n*c, 1, k, k)
    blurred = F.conv2d(padded.reshape(1, n * c, h + 2 * r, w + 2 * r), weight, groups=n * c).reshape(
        n, c, h, w
    )
    noise_std = 0.02 + 0.08 * torch.rand(n, 1, 1, 1, generator=gen)
    return (blurred + noise_std * torch.randn(clean.shape, generator=gen)).clamp(0, 1)


def digits_images(split: str = "train", size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as (N, 1, size, size) in [-1, 1] and their labels; a fixed 85/15 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1
    y = torch.from_numpy(d.target.astype(np.int64))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(0.85 * len(x))
    idx = order[:cut] if split == "train" else order[cut:]
    return x[idx], y[idx]
