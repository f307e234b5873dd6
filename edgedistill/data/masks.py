"""Pictures -> an image generator's input: the one place that maps pixels to the input range and,
for an inpainter (spec.mask_channel), cuts holes and appends the mask channel.

Training batches, calibration, held-out inputs and `edgedistill run` all build inputs here, so a
student is trained, calibrated and judged on the holes it meets when it runs. numpy only: `run`
on an artifact needs no torch. Masks are seeded per sample (seed, i): sample i's holes do not
depend on how many samples are drawn with it.
"""

from __future__ import annotations

import numpy as np

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec


def random_masks(count: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """(count, 1, H, W) float32 masks, 1 where pixels are missing: one or two rectangles and a
    brush stroke (a thick polyline), as inpainting papers draw their free-form holes."""
    h, w = size
    return np.stack([_one_mask(h, w, np.random.default_rng([seed, i]))[None] for i in range(count)])


def _one_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    for _ in range(int(rng.integers(1, 3))):
        mh, mw = (
            int(rng.integers(max(1, h // 8), max(2, h // 3) + 1)),
            int(rng.integers(max(1, w // 8), max(2, w // 3) + 1)),
        )
        top, left = int(rng.integers(0, h - mh + 1)), int(rng.integers(0, w - mw + 1))
        mask[top : top + mh, left : left + mw] = True
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    radius = max(1.0, min(h, w) / 16)
    y, x = rng.uniform(0, h), rng.uniform(0, w)
    for _ in range(int(rng.integers(2, 5))):
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(min(h, w) / 8, min(h, w) / 3)
        ny, nx = (
            float(np.clip(y + length * np.sin(angle), 0, h - 1)),
            float(np.clip(x + length * np.cos(angle), 0, w - 1)),
        )
        mask |= _near_segment(yy, xx, (y, x), (ny, nx), radius)
        y, x = ny, nx
    return mask.astype(np.float32)


def _near_segment(
    yy: np.ndarray, xx: np.ndarray, a: tuple[float, float], b: tuple[float, float], radius: float
) -> np.ndarray:
    """Pixels within `radius` of the segment a-b."""
    dy, dx = b[0] - a[0], b[1] - a[1]
    t = np.clip(((yy - a[0]) * dy + (xx - a[1]) * dx) / max(dy * dy + dx * dx, 1e-9), 0.0, 1.0)
    return (yy - a[0] - t * dy) ** 2 + (xx - a[1] - t * dx) ** 2 <= radius * radius


def image_inputs(
    spec: GeneratorSpec, pixels: np.ndarray, seed: int = 0, masks: np.ndarray | None = None
) -> np.ndarray:
    """(N, C, H, W) pixels in [0, 1] -> the generator's inputs (float32, the spec's input range).

    An inpainter's get holes: `masks` (N, 1, H, W), 1 where missing, or seeded random ones; missing
    pixels hold spec.mask_fill and the mask is appended as the last channel (0/1, not range-mapped).
    """
    lo, hi = spec.input_range
    x = (np.asarray(pixels, dtype=np.float32) * (hi - lo) + lo).astype(np.float32)
    if not spec.mask_channel:
        return x
    n, _, h, w = x.shape
    if masks is None:
        masks = random_masks(n, (h, w), seed)
    masks = (np.asarray(masks, dtype=np.float32) > 0.5).astype(np.float32)
    if masks.shape != (n, 1, h, w):
        raise EdgeDistillError(
            f"the mask is {masks.shape[-1]}x{masks.shape[-2]} but the image {w}x{h}: give a mask of the image's size"
        )
    x = np.where(masks > 0, np.float32(spec.mask_fill), x)
    return np.ascontiguousarray(np.concatenate([x, masks], axis=1), dtype=np.float32)
