"""Where a distillation run gets its teacher inputs (and, when there are some, real images for D).

Every source draws batch `step` from a generator seeded by (seed, step, rank): a resumed run sees
exactly the batches an uninterrupted one would, and DDP ranks see different ones.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.data.bundled import bundled_photos, degrade, digits_images, random_crops
from edgedistill.data.imageio import read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class Batch:
    inputs: torch.Tensor  # what the generators eat, already in the spec's input range
    real: torch.Tensor | None = None  # real images for D / ground truth, in the spec's output range


class DataSource(Protocol):
    name: str

    def batch(self, step: int, size: int) -> Batch: ...

    def heldout(self) -> Batch: ...


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 97 + rank)


class NoiseSource:
    """z ~ N(0, I) for unconditional generators; optional real images (e.g. the digits) for D."""

    def __init__(self, spec: GeneratorSpec, seed: int, rank: int = 0, real: torch.Tensor | None = None):
        self.name, self.spec, self.seed, self.rank, self.real = "noise", spec, seed, rank, real
        self.heldout_count = 1000

    def batch(self, step: int, size: int) -> Batch:
        gen = step_generator(self.seed, step, self.rank)
        z = torch.randn([size, *self.spec.input_shape(batch=1)[1:]], generator=gen)
        real = None
        if self.real is not None:
            real = self.real[torch.randint(len(self.real), (size,), generator=gen)]
        return Batch(z, real)

    def heldout(self) -> Batch:
        gen = torch.Generator().manual_seed(10_000 + self.seed)
        z = torch.randn([self.heldout_count, *self.spec.input_shape(batch=1)[1:]], generator=gen)
        return Batch(z, self.real)


class PhotoRestoreSource:
    """The embedded photo teacher's default data: degraded crops of the bundled photos + clean targets."""

    def __init__(self, spec: GeneratorSpec, seed: int, patch: int, rank: int = 0, eval_size: int = 96):
        self.name, self.spec, self.seed, self.patch, self.rank = "bundled-photos", spec, seed, patch, rank
        self.photos, self.eval_size = bundled_photos("train"), eval_size

    def batch(self, step: int, size: int) -> Batch:
        gen = step_generator(self.seed, step, self.rank)
        clean = random_crops(self.photos, size, self.patch, gen)
        return Batch(self.spec.to_input(degrade(clean, gen)), self.spec.to_input(clean))

    @functools.cache  # noqa: B019  (one source per run; the trainer and the evaluation share it)
    def heldout(self) -> Batch:
        gen = torch.Generator().manual_seed(20_000)
        clean = random_crops(bundled_photos("heldout"), 128, self.eval_size, gen)
        return Batch(self.spec.to_input(degrade(clean, gen)), self.spec.to_input(clean))


class ImageFolderSource:
    """A folder of images (inputs only), or A/ and B/ subfolders of same-named pairs (input, target)."""

    def __init__(
        self, root: Path, spec: GeneratorSpec, seed: int, patch: int, rank: int = 0, eval_size: int = 128
    ):
        self.name, self.spec, self.seed, self.patch, self.rank = str(root), spec, seed, patch, rank
        self.eval_size = eval_size
        if not root.is_dir():
            raise EdgeDistillError(f"--data {root} is not a directory of images")
        a_dir, b_dir = root / "A", root / "B"
        paired = a_dir.is_dir() and b_dir.is_dir()
        files = _images(a_dir if paired else root)
        if not files:
            raise EdgeDistillError(f"--data {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        channels = spec.input_shape()[1]
        self.inputs = [read_image(f, channels) for f in files]
        self.targets = None
        if paired:
            missing = [f.name for f in files if not (b_dir / f.name).exists()]
            if missing:
                raise EdgeDistillError(f"--data {root}: B/ lacks the pairs of {', '.join(missing[:3])}")
            self.targets = [read_image(b_dir / f.name, spec.outputs[0].shape[1]) for f in files]
        small = [f.name for f, x in zip(files, self.inputs, strict=True) if min(x.shape[1:]) < patch]
        if small:
            raise EdgeDistillError(
                f"--data {root}: {small[0]} is smaller than the {patch}px patch; lower --patch"
            )
        # the last image (or a tenth) is held out for evaluation when there are several
        cut = max(1, len(files) - max(1, len(files) // 10)) if len(files) > 1 else 1
        self.train_idx, self.eval_idx = list(range(cut)), list(range(cut, len(files))) or [0]

    def _crops(self, idx: list[int], n: int, size: int, gen: torch.Generator) -> Batch:
        xs, ys = [], []
        for _ in range(n):
            i = idx[int(torch.randint(len(idx), (1,), generator=gen))]
            x = self.inputs[i]
            h, w = x.shape[1:]
            s = min(size, h, w)
            top = int(torch.randint(h - s + 1, (1,), generator=gen))
            left = int(torch.randint(w - s + 1, (1,), generator=gen))
            xs.append(x[:, top : top + s, left : left + s])
            if self.targets is not None:
                ys.append(self.targets[i][:, top : top + s, left : left + s])
        real = self.spec.to_input(torch.stack(ys)) if ys else None
        return Batch(self.spec.to_input(torch.stack(xs)), real)

    def batch(self, step: int, size: int) -> Batch:
        return self._crops(self.train_idx, size, self.patch, step_generator(self.seed, step, self.rank))

    @functools.cache  # noqa: B019  (one source per run; the trainer and the evaluation share it)
    def heldout(self) -> Batch:
        return self._crops(self.eval_idx, 32, self.eval_size, torch.Generator().manual_seed(20_000))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def make_source(
    teacher_name: str, spec: GeneratorSpec, data: Path | None, seed: int, patch: int, rank: int = 0
) -> DataSource:
    """The user's --data when given, else the teacher's default set; unconditional needs none."""
    if spec.kind == "image":
        if data is not None:
            return ImageFolderSource(Path(data), spec, seed, patch, rank)
        if teacher_name == "photo-restore":
            return PhotoRestoreSource(spec, seed, patch, rank)
        raise EdgeDistillError(
            f"{teacher_name} is an image-to-image generator and has no default data: pass --data DIR "
            "(a folder of input images, or A/ and B/ subfolders of pairs)"
        )
    real = None
    if data is not None:
        files = _images(Path(data)) if Path(data).is_dir() else []
        if not files:
            raise EdgeDistillError(f"--data {data} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        size = spec.default_size or spec.input_shape()[2:]
        imgs = [read_image(f, spec.outputs[0].shape[1])[None] for f in files]
        real = spec.to_input(torch.cat([F.interpolate(x, size=tuple(size), mode="area") for x in imgs]))
    elif teacher_name == "digits-dcgan":
        real = digits_images("train")[0]
    return NoiseSource(spec, seed, rank, real)
