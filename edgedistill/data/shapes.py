"""A procedurally generated 10-class 32x32 colour image set: textured shapes on textured backgrounds.

Why: a harder data-free case than digits that ships as code, not files. Each image is one shape
(the class) under a random rotation, scale, aspect and position, filled with a random texture
(solid, stripes, checker, smooth noise) in random colours, on a textured background, with a
distractor blob and pixel noise. Rendered at 2x and area-downsampled, so edges are anti-aliased.
Splits are fixed by seed; the held-out split is only ever used for evaluation.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

CLASSES = ("disk", "square", "triangle", "star", "plus", "ring", "hexagon", "crescent", "arrow", "two-dots")
SPLITS = {"train": (10_000, 11), "heldout": (2_000, 12)}  # size, seed
_RENDER = 64


def _polygon(r: torch.Tensor, phi: torch.Tensor, n: int, apothem: float) -> torch.Tensor:
    sector = 2 * math.pi / n
    return r * torch.cos(torch.remainder(phi, sector) - sector / 2) < apothem


def _form(k: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Class k's implicit form at local coordinates (u, v): True inside the shape."""
    r, phi = torch.sqrt(u * u + v * v), torch.atan2(v, u)
    if k == 0:
        return r < 0.9
    if k == 1:
        return torch.maximum(u.abs(), v.abs()) < 0.75
    if k == 2:
        return _polygon(r, phi, 3, 0.5)
    if k == 3:
        t = torch.remainder(phi * 5 / (2 * math.pi), 1.0)
        return r < 0.38 + 0.62 * (1 - 2 * t).abs() ** 1.5
    if k == 4:
        return ((u.abs() < 0.28) & (v.abs() < 0.95)) | ((v.abs() < 0.28) & (u.abs() < 0.95))
    if k == 5:
        return (r > 0.52) & (r < 0.95)
    if k == 6:
        return _polygon(r, phi, 6, 0.8)
    if k == 7:
        return (r < 0.95) & ((u - 0.45) ** 2 + v * v > 0.7**2)
    if k == 8:
        shaft = (v.abs() < 0.17) & (u > -0.95) & (u < 0.15)
        return shaft | ((u >= 0.15) & (u < 0.95) & (v.abs() < (0.95 - u) * 0.95))
    return ((u - 0.5) ** 2 + v * v < 0.4**2) | ((u + 0.5) ** 2 + v * v < 0.4**2)


def _masks(u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(n, H, W) shape masks: each sample's local coordinates against its own class's form."""
    out = torch.zeros_like(u)
    for k in labels.unique().tolist():
        sel = labels == k
        out[sel] = _form(int(k), u[sel], v[sel]).float()
    return out


def _texture(n: int, xs: torch.Tensor, ys: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(n, H, W) in [0, 1]: solid, stripes, checker or smooth noise, one kind per sample."""
    kind = torch.randint(4, (n,), generator=gen)
    freq = (3 + 9 * torch.rand(n, 1, 1, generator=gen)) * math.pi / 2
    ang = torch.rand(n, 1, 1, generator=gen) * math.pi
    proj = xs * torch.cos(ang) + ys * torch.sin(ang)
    stripes = 0.5 + 0.5 * torch.sin(freq * proj)
    checker = ((torch.sin(freq * xs) * torch.sin(freq * ys)) > 0).float()
    noise = F.interpolate(torch.rand(n, 1, 6, 6, generator=gen), size=xs.shape[-2:], mode="bicubic")[:, 0]
    out = torch.where(kind[:, None, None] == 1, stripes, torch.zeros_like(stripes))
    out = torch.where(kind[:, None, None] == 2, checker, out)
    return torch.where(kind[:, None, None] == 3, noise.clamp(0, 1), out)


def _colours(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two related colours per sample: a base and a texture colour near it."""
    a = torch.rand(n, 3, 1, 1, generator=gen)
    b = (a + (torch.rand(n, 3, 1, 1, generator=gen) - 0.5) * 0.6).clamp(0, 1)
    return a, b


def render(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Images (n, 3, 32, 32) in [-1, 1] of the given classes."""
    n, s = len(labels), _RENDER
    lin = torch.linspace(-1, 1, s)
    ys, xs = torch.meshgrid(lin, lin, indexing="ij")
    xs, ys = xs.expand(n, s, s), ys.expand(n, s, s)
    theta = torch.rand(n, 1, 1, generator=gen) * 2 * math.pi
    scale = 0.42 + 0.4 * torch.rand(n, 1, 1, generator=gen)
    aspect = 0.8 + 0.4 * torch.rand(n, 1, 1, generator=gen)
    shift = (torch.rand(n, 2, 1, 1, generator=gen) - 0.5) * 2 * (1 - scale[:, None])
    dx, dy = xs - shift[:, 0], ys - shift[:, 1]
    u = (dx * torch.cos(theta) + dy * torch.sin(theta)) / (scale * aspect)
    v = (-dx * torch.sin(theta) + dy * torch.cos(theta)) / (scale / aspect)
    mask = _masks(u, v, labels)[:, None]
    fg_a, fg_b = _colours(n, gen)
    bg_a, bg_b = _colours(n, gen)
    # keep the shape visible: push a background too close to the foreground away from it
    close = ((fg_a - bg_a).norm(dim=1, keepdim=True) < 0.35).float()
    bg_a = torch.where(close.bool(), 1 - fg_a, bg_a)
    fg = fg_a + (fg_b - fg_a) * _texture(n, u, v, gen)[:, None]
    bg = bg_a + (bg_b - bg_a) * 0.6 * _texture(n, xs, ys, gen)[:, None]
    img = fg * mask + bg * (1 - mask)
    # a distractor blob on half the images, then pixel noise
    cxy = (torch.rand(n, 2, 1, 1, generator=gen) - 0.5) * 1.8
    rad = 0.08 + 0.12 * torch.rand(n, 1, 1, generator=gen)
    blob = (((xs - cxy[:, 0]) ** 2 + (ys - cxy[:, 1]) ** 2) < rad**2).float()[:, None]
    blob = blob * (torch.rand(n, 1, 1, 1, generator=gen) < 0.5).float()
    img = img * (1 - blob) + torch.rand(n, 3, 1, 1, generator=gen) * blob
    img = F.avg_pool2d(img, 2)
    img = img + torch.randn(img.shape, generator=gen) * 0.06 * torch.rand(n, 1, 1, 1, generator=gen)
    return img.clamp(0, 1) * 2 - 1


@functools.cache
def _split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    size, seed = SPLITS[split]
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(size) % len(CLASSES)
    labels = labels[torch.randperm(size, generator=gen)]
    images = torch.cat([render(labels[i : i + 500], gen) for i in range(0, size, 500)])
    return images, labels


def shapes_images(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The shapes set as (N, 3, 32, 32) in [-1, 1] and labels: 'train' (10 000) or 'heldout' (2 000)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}")
    x, y = _split(split)
    return x.clone(), y.clone()
