"""Held-out inputs for judging a student by eye and by number: never the data it trained on.

photo-restore: degraded centre and corner crops of the held-out bundled photos; noise generators:
fixed seeds (label-conditioned ones: the classes in turn); a user's folder: the inputs of its
validation split (data/images.py `split_folder`, the split distillation evaluates on and calibration
never reads), resized and center-cropped; an inpainter's with fixed-seed holes (data/masks.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgedistill.core.spec import GeneratorSpec, one_hot
from edgedistill.data.masks import image_inputs

SEED = 4321


def heldout_arrays(
    teacher: str,
    spec: GeneratorSpec,
    size: tuple[int, int] | None,
    count: int,
    data: Path | None = None,
    val_data: Path | None = None,
) -> dict[str, np.ndarray]:
    """Every input of the generator by name: `heldout_inputs`, and a label-conditioned generator's
    one-hot labels cycling through the classes (every class judged and shown alike)."""
    x = heldout_inputs(teacher, spec, size, count, data, val_data)
    arrays = {spec.inputs[0].name: x}
    if spec.classes is not None:
        arrays[spec.inputs[1].name] = one_hot(np.arange(len(x)) % spec.classes, spec.classes)
    return arrays


def heldout_inputs(
    teacher: str,
    spec: GeneratorSpec,
    size: tuple[int, int] | None,
    count: int,
    data: Path | None = None,
    val_data: Path | None = None,
) -> np.ndarray:
    """Up to `count` first inputs (N, ...) float32 in the spec's input range, at `size` for image
    generators (`heldout_arrays` gives every input)."""
    if spec.kind != "image":
        return spec.example_arrays(batch=count, seed=SEED)[spec.inputs[0].name]
    size = size or spec.default_size or (256, 256)
    if data is not None:
        return _validation_inputs(spec, Path(data), val_data, tuple(size), count)  # type: ignore[arg-type]
    if teacher == "photo-restore":
        return _photo_crops(spec, size, count)
    from edgedistill.data.calibration import build_calibration

    calib = build_calibration(spec, data, count, teacher=teacher, seed=SEED, input_size=size)
    return next(iter(calib.arrays.values()))[:count]


def _validation_inputs(
    spec: GeneratorSpec, data: Path, val_data: Path | None, size: tuple[int, int], count: int
) -> np.ndarray:
    """The first `count` validation inputs of the folder, fitted to `size`, in the input range."""
    from edgedistill.data.images import fit, read_pixels, split_folder

    val = split_folder(data, val_data).val[:count]
    pixels = np.stack([fit(read_pixels(p.input, spec.image_channels), size) for p in val])
    return image_inputs(spec, pixels, SEED)


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
    return image_inputs(spec, degraded.numpy(), SEED)
