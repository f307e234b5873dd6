"""Held-out inputs for judging a student by eye and by number: never the data it trained on.

photo-restore: degraded centre and corner crops of the held-out bundled photos; noise generators:
fixed seeds; anything else: images from the user's folder (as calibration reads them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgedistill.core.spec import GeneratorSpec


def heldout_inputs(
    teacher: str, spec: GeneratorSpec, size: tuple[int, int] | None, count: int, data: Path | None = None
) -> np.ndarray:
    """`count` inputs (N, ...) float32 in the spec's input range, at `size` for image generators."""
    if spec.kind != "image":
        return spec.example_arrays(batch=count, seed=4321)[spec.inputs[0].name]
    size = size or spec.default_size or (256, 256)
    if data is None and teacher == "photo-restore":
        return _photo_crops(spec, size, count)
    from edgedistill.data.calibration import build_calibration

    calib = build_calibration(spec, data, count, teacher=teacher, seed=4321, input_size=size)
    return next(iter(calib.arrays.values()))[:count]


def _photo_crops(spec: GeneratorSpec, size: tuple[int, int], count: int) -> np.ndarray:
    """Centre, then corner crops of each held-out photo, alternating photos, degraded with a fixed seed."""
    import torch

    from edgedistill.data.bundled import bundled_photos, degrade

    h, w = size
    per_photo = []
    for img in bundled_photos("heldout"):
        ih, iw = img.shape[:2]
        spots = [((ih - h) // 2, (iw - w) // 2), (0, 0), (ih - h, iw - w), (0, iw - w), (ih - h, 0)]
        per_photo.append([img[y : y + h, x : x + w] for y, x in spots if y >= 0 and x >= 0])
    crops = [c for group in zip(*per_photo, strict=False) for c in group][:count]
    clean = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    degraded = degrade(clean, torch.Generator().manual_seed(123))
    return spec.to_input(degraded).numpy().astype(np.float32)
