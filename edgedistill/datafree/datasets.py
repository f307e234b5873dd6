"""Real images for a classifier teacher: its held-out set (evaluation only) and, for KD with data, its
train split. Looked up through the data modules at call time, so a test can make the train split
unreadable and prove a data-free run never asks for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.data import bundled, shapes

BUILT_IN = ("digits", "shapes")


def builtin_split(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A built-in set's 'train' or 'heldout' split as (images in [-1, 1], labels)."""
    if name == "digits":
        return bundled.digits_images(split)
    if name == "shapes":
        return shapes.shapes_images(split)
    raise EdgeDistillError(
        f"'{name}' is not a built-in data set: use {' or '.join(BUILT_IN)}, or an .npz file"
    )


def load_npz(path: str | Path, spec: GeneratorSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An .npz with `x` (N, C, H, W) in the teacher's input range and optionally `y` (N,) labels."""
    p = Path(path)
    if not p.is_file():
        raise EdgeDistillError(f"{p}: no such file; give an .npz with x (N, C, H, W) and y (N,)")
    with np.load(p) as blob:
        if "x" not in blob:
            raise EdgeDistillError(f"{p}: has no array 'x'; save images as x (N, C, H, W) in the input range")
        x = torch.from_numpy(blob["x"].astype(np.float32))
        y = torch.from_numpy(blob["y"].astype(np.int64)) if "y" in blob else None
    want = spec.input_shape(batch=len(x))
    if list(x.shape) != want:
        raise EdgeDistillError(f"{p}: x has shape {list(x.shape)}, the teacher eats {want}: resize it")
    return x, y


def teacher_dataset(spec: GeneratorSpec) -> str | None:
    """The built-in set an embedded teacher was trained on (its provenance says), else None."""
    name = spec.provenance.get("dataset")
    return name if name in BUILT_IN else None


def real_images(
    given: str | Path | None, spec: GeneratorSpec, split: str
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """`given` (a built-in name or an .npz), else the teacher's own set's `split`, else None."""
    if given is None:
        name = teacher_dataset(spec)
        return builtin_split(name, split) if name else None
    if str(given) in BUILT_IN:
        return builtin_split(str(given), split)
    return load_npz(given, spec)
