"""Pixels for `edgedistill run`, in numpy + Pillow only: the artifact path must run without torch."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgedistill.core.atomic import write_atomic
from edgedistill.core.errors import EdgeDistillError


def read_pixels(path: str | Path, channels: int) -> np.ndarray:
    """An image file as (C, H, W) float32 in [0, 1], converted to `channels` (1 = gray, 3 = RGB)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise EdgeDistillError(f"input image not found: {path}")
    if channels not in (1, 3):
        raise EdgeDistillError(f"the model takes {channels}-channel images; run handles 1 (gray) or 3 (RGB)")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise EdgeDistillError(f"{path}: not an image Pillow can read ({exc})") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def fit(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (C, H, W) so it covers `size` (H, W), keeping its aspect, then center-crop to `size`."""
    from PIL import Image

    h, w = pixels.shape[1:]
    th, tw = size
    if (h, w) == (th, tw):
        return pixels
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        # Resize each channel as float ("F" mode) so no rounding to 8 bits happens twice.
        planes = [
            np.asarray(Image.fromarray(p).resize((nw, nh), Image.Resampling.BICUBIC))
            for p in np.ascontiguousarray(pixels, dtype=np.float32)
        ]
        pixels = np.clip(np.stack(planes), 0.0, 1.0)
    return crop_center(pixels, size)


def crop_center(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    th, tw = size
    h, w = pixels.shape[1:]
    top, left = (h - th) // 2, (w - tw) // 2
    return np.ascontiguousarray(pixels[:, top : top + th, left : left + tw])


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> H x W (gray) or H x W x 3 uint8, rounding to nearest like imageio.to_uint8."""
    arr = (np.clip(pixels.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    return arr[..., 0] if arr.shape[2] == 1 else arr


def grid(images: list[np.ndarray], pad: int = 2, cols: int | None = None) -> np.ndarray:
    """(C, H, W) images in [0, 1] on one white canvas, square-ish, `pad` pixels apart (3 channels)."""
    rgb = [np.repeat(im, 3, axis=0) if im.shape[0] == 1 else im for im in images]
    h = max(im.shape[1] for im in rgb)
    w = max(im.shape[2] for im in rgb)
    cols = cols or math.ceil(math.sqrt(len(rgb)))
    rows = math.ceil(len(rgb) / cols)
    canvas = np.ones((3, rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i, im in enumerate(rgb):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        canvas[:, y : y + im.shape[1], x : x + im.shape[2]] = np.clip(im, 0.0, 1.0)
    return canvas


def check_output_path(path: str | Path) -> str:
    """The Pillow format for `path`'s suffix, or one line saying which suffixes work."""
    from PIL import Image

    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt not in ("PNG", "JPEG", "WEBP", "BMP", "TIFF"):
        raise EdgeDistillError(f"--output {path}: end it in .png (or .jpg, .webp, .bmp, .tiff)")
    return fmt


def save_pixels(pixels: np.ndarray, path: str | Path) -> Path:
    """Write (C, H, W) in [0, 1] as an image file (format from the suffix), atomically."""
    from PIL import Image

    fmt = check_output_path(path)
    image = Image.fromarray(to_uint8(pixels))
    return write_atomic(path, lambda p: image.save(p, format=fmt))
