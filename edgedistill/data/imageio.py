"""Image files in and out: PNG grids of tensors, pixel loading. Pillow only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from edgedistill.core.atomic import write_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.data.images import GRAY_MODES
from edgedistill.data.images import to_uint8 as pixels_to_uint8


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> HxWxC (or HxW) uint8."""
    return pixels_to_uint8(img.detach().float().cpu().numpy())


def save_grid(rows: list[torch.Tensor], path: str | Path, pad: int = 2) -> Path:
    """Write rows of (N, C, H, W) images in [0, 1] as one PNG; rows may differ in length."""
    rows = [r.expand(-1, 3, -1, -1) if r.shape[1] == 1 else r for r in rows]
    h = max(r.shape[2] for r in rows)
    w = max(r.shape[3] for r in rows)
    cols = max(r.shape[0] for r in rows)
    canvas = torch.ones(3, len(rows) * (h + pad) + pad, cols * (w + pad) + pad)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, y : y + img.shape[1], x : x + img.shape[2]] = img.clamp(0, 1)
    return write_atomic(path, lambda p: Image.fromarray(to_uint8(canvas)).save(p, format="PNG"))


def read_image(path: str | Path, channels: int = 3, what: str | None = None) -> torch.Tensor:
    """An image file as (C, H, W) float in [0, 1]; an unreadable file is one EdgeDistillError line.

    With `what` (the option it came from, e.g. "--data"), a grayscale file for a colour input is
    refused as calibration refuses it: a gray photo would train a colour model on colourless input.
    Colour for a gray input is converted (a colouriser learns from the colour photo's gray)."""
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as im:
            if what and channels == 3 and im.mode in GRAY_MODES:
                raise EdgeDistillError(
                    f"{path}: a 1-channel ({im.mode}) image, but the generator takes 3 channels: "
                    f"give {what} a folder of color images (or remove it)"
                )
            arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:  # a bomb is no OSError
        raise EdgeDistillError(
            f"{path}: not an image Pillow can read ({exc}): replace or remove it"
        ) from None
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
