"""Where a distillation run gets its teacher inputs (and, when there are some, real images for D).

Every source draws batch `step` from a generator seeded by (seed, step, rank): a resumed run sees
exactly the batches an uninterrupted one would, and DDP ranks see different ones.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.data.bundled import bundled_photos, degrade, digits_images, random_crops
from edgedistill.data.colour_aug import MODES as COLOUR_AUG_MODES
from edgedistill.data.colour_aug import apply_colour, colour_transforms
from edgedistill.data.imageio import read_image
from edgedistill.data.images import IMAGE_SUFFIXES, ImagePair, list_images, split_folder
from edgedistill.data.masks import image_inputs


@dataclass
class Batch:
    inputs: torch.Tensor  # what the generators eat, already in the spec's input range
    real: torch.Tensor | None = None  # real images for D / ground truth, in the spec's output range
    labels: torch.Tensor | None = None  # one-hot (N, classes): a label-conditioned generator's 2nd input

    @property
    def args(self) -> tuple[torch.Tensor, ...]:
        """What a generator is called with: (inputs,), or (z, labels) for a label-conditioned one."""
        return (self.inputs,) if self.labels is None else (self.inputs, self.labels)

    def rows(self, idx: torch.Tensor | slice) -> Batch:
        """The samples `idx` of inputs and labels; real images (drawn apart from them) as they are."""
        return Batch(self.inputs[idx], self.real, None if self.labels is None else self.labels[idx])

    def to(self, device: torch.device | str) -> Batch:
        """The batch on `device` (data is made on the CPU; a GPU run trains there)."""
        return Batch(*(None if t is None else t.to(device) for t in (self.inputs, self.real, self.labels)))


class DataSource(Protocol):
    name: str

    def batch(self, step: int, size: int) -> Batch: ...

    def heldout(self) -> Batch: ...

    def validation(self) -> Batch: ...


# Held-out sizes at which a feature distance is stable enough to tell recipes apart (issue #12:
# photos >= 512 crops, digits >= 10k samples); validation sets are small, drawn apart from them.
PHOTO_EVAL, NOISE_EVAL, FOLDER_EVAL = 512, 10_000, 128
PHOTO_VAL, NOISE_VAL, FOLDER_VAL = 64, 512, 32
EVAL_ENV = "EDGEDISTILL_EVAL_SAMPLES"  # overrides the held-out sizes (the test suite keeps runs short)


def _eval_count(given: int | None, default: int) -> int:
    if given:
        return given
    return int(os.environ.get(EVAL_ENV) or default)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 97 + rank)


def to_output(spec: GeneratorSpec, pixels01: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] as the generator's outputs are: what D's real images and ground truth must be."""
    lo, hi = spec.output_range
    return pixels01 * (hi - lo) + lo


def _one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return F.one_hot(labels, classes).float()


class NoiseSource:
    """z ~ N(0, I) for noise generators, with uniform one-hot class labels for label-conditioned
    ones; optional real images (e.g. the digits) for D."""

    def __init__(
        self,
        spec: GeneratorSpec,
        seed: int,
        rank: int = 0,
        real: torch.Tensor | None = None,
        eval_count: int = NOISE_EVAL,
    ):
        self.name, self.spec, self.seed, self.rank, self.real = "noise", spec, seed, rank, real
        self.heldout_count = eval_count

    def batch(self, step: int, size: int) -> Batch:
        gen = step_generator(self.seed, step, self.rank)
        z = torch.randn([size, *self.spec.input_shape(batch=1)[1:]], generator=gen)
        real = None
        if self.real is not None:
            real = self.real[torch.randint(len(self.real), (size,), generator=gen)]
        classes = self.spec.classes
        labels = (
            None if classes is None else _one_hot(torch.randint(classes, (size,), generator=gen), classes)
        )
        return Batch(z, real, labels)

    def heldout(self) -> Batch:
        """Fixed z; labels cycle through the classes, so every class is judged (and shown) alike."""
        return self._fixed(10_000 + self.seed, self.heldout_count)

    def validation(self) -> Batch:
        return self._fixed(20_000 + self.seed, NOISE_VAL)

    def _fixed(self, seed: int, count: int) -> Batch:
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn([count, *self.spec.input_shape(batch=1)[1:]], generator=gen)
        classes = self.spec.classes
        labels = None if classes is None else _one_hot(torch.arange(count) % classes, classes)
        return Batch(z, self.real, labels)


class PhotoRestoreSource:
    """The embedded photo teacher's default data: degraded crops of the bundled photos + clean targets."""

    def __init__(
        self,
        spec: GeneratorSpec,
        seed: int,
        patch: int,
        rank: int = 0,
        eval_size: int = 96,
        eval_count: int = PHOTO_EVAL,
        colour_aug: str = "permute",
    ):
        self.name, self.spec, self.seed, self.patch, self.rank = "bundled-photos", spec, seed, patch, rank
        self.photos, self.eval_size, self.eval_count = bundled_photos("train"), eval_size, eval_count
        self.colour_aug = colour_aug  # data/colour_aug.py

    def batch(self, step: int, size: int) -> Batch:
        gen = step_generator(self.seed, step, self.rank)
        clean = random_crops(self.photos, size, self.patch, gen)
        matrices = colour_transforms(self.colour_aug, size, gen)
        if matrices is not None:  # the clean crop is changed before it is degraded: exact for any map
            clean = apply_colour(clean, matrices)
        return Batch(self.spec.to_input(degrade(clean, gen)), to_output(self.spec, clean))

    @functools.cache  # noqa: B019  (one source per run; the trainer and the evaluation share it)
    def heldout(self) -> Batch:
        return self._crops(20_000, self.eval_count)

    @functools.cache  # noqa: B019
    def validation(self) -> Batch:
        """Other crops of the held-out photos, other degradations: only two photos are held out, so
        validation shares them with the test crops (best-checkpoint choice sees the same scenes)."""
        return self._crops(30_000, PHOTO_VAL)

    def _crops(self, seed: int, count: int) -> Batch:
        gen = torch.Generator().manual_seed(seed)
        clean = random_crops(bundled_photos("heldout"), count, self.eval_size, gen)
        return Batch(self.spec.to_input(degrade(clean, gen)), to_output(self.spec, clean))


class ImageFolderSource:
    """A folder of images (inputs only), or A/ and B/ subfolders of same-named pairs (input, target).

    Trains on the training split and evaluates on the validation split of `split_folder` (a fixed
    tenth of the folder, or all of `val_data`): the split calibration and compress use too.
    An inpainter's inputs get seeded holes (data/masks.py); its target is the crop without them.
    """

    def __init__(
        self,
        root: Path,
        spec: GeneratorSpec,
        seed: int,
        patch: int,
        rank: int = 0,
        eval_size: int = 128,
        val_data: Path | None = None,
        eval_count: int = FOLDER_EVAL,
        colour_aug: str = "none",
    ):
        self.name, self.spec, self.seed, self.patch, self.rank = str(root), spec, seed, patch, rank
        self.eval_count, self.colour_aug = eval_count, colour_aug
        if colour_aug != "none" and (spec.image_channels != 3 or spec.outputs[0].shape[1] != 3):
            raise EdgeDistillError(
                f"--colour-aug {colour_aug} mixes RGB, but this generator maps "
                f"{spec.image_channels} to {spec.outputs[0].shape[1]} channels; use --colour-aug none"
            )
        split = split_folder(root, val_data)
        self.train = [self._load(p) for p in split.train]
        self.val = self.train if split.val is split.train else [self._load(p) for p in split.val]
        small = [
            p.input.name
            for p, (x, _) in zip(split.train, self.train, strict=True)
            if min(x.shape[1:]) < patch
        ]
        if small:
            raise EdgeDistillError(
                f"--data {root}: {small[0]} is smaller than the {patch}px patch; lower --patch"
            )
        # held-out crops share one size, so images of different sizes stack
        self.eval_size = min(eval_size, *(min(x.shape[1:]) for x, _ in self.val))

    def _load(self, pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(input, target) pixels in [0, 1]; a target must match its input's size to crop alike."""
        x = read_image(pair.input, self.spec.image_channels, what="--data")
        if pair.target is None:
            return x, None
        y = read_image(pair.target, int(self.spec.outputs[0].shape[1]))
        want = tuple(self.spec.output_shape(tuple(x.shape[1:]))[2:])  # a super-resolver's target is larger
        if tuple(y.shape[1:]) != want:
            raise EdgeDistillError(
                f"{pair.target} is {y.shape[2]}x{y.shape[1]} but its input {pair.input} is "
                f"{x.shape[2]}x{x.shape[1]}: this generator's target for it is {want[1]}x{want[0]}"
            )
        return x, y

    def _crops(
        self,
        images: list[tuple[torch.Tensor, torch.Tensor | None]],
        n: int,
        size: int,
        gen: torch.Generator,
        colour_aug: str = "none",
    ) -> Batch:
        xs, ys = [], []
        for _ in range(n):
            x, y = images[int(torch.randint(len(images), (1,), generator=gen))]
            h, w = x.shape[1:]
            s = min(size, h, w)
            top = int(torch.randint(h - s + 1, (1,), generator=gen))
            left = int(torch.randint(w - s + 1, (1,), generator=gen))
            xs.append(x[:, top : top + s, left : left + s])
            if y is not None:  # the target's crop covers the same content at its own scale
                k = y.shape[1] // h
                ys.append(y[:, k * top : k * (top + s), k * left : k * (left + s)])
        pixels = torch.stack(xs)
        targets = torch.stack(ys) if len(ys) == n else None
        matrices = colour_transforms(colour_aug, n, gen)
        if matrices is not None:  # input and target alike: exact for per-channel degradations
            pixels = apply_colour(pixels, matrices)
            targets = None if targets is None else apply_colour(targets, matrices)
        real = to_output(self.spec, targets) if targets is not None else None
        if (
            real is None
            and self.spec.mask_channel
            and self.spec.outputs[0].shape[1] == self.spec.image_channels
        ):
            # an inpainter's truth: the picture without its holes
            real = to_output(self.spec, pixels)
        seed = int(torch.randint(2**31, (1,), generator=gen)) if self.spec.mask_channel else 0
        return Batch(torch.from_numpy(image_inputs(self.spec, pixels.numpy(), seed)), real)

    def batch(self, step: int, size: int) -> Batch:
        gen = step_generator(self.seed, step, self.rank)
        return self._crops(self.train, size, self.patch, gen, self.colour_aug)

    @functools.cache  # noqa: B019  (one source per run; the trainer and the evaluation share it)
    def heldout(self) -> Batch:
        return self._crops(self.val, self.eval_count, self.eval_size, torch.Generator().manual_seed(20_000))

    @functools.cache  # noqa: B019
    def validation(self) -> Batch:
        return self._crops(self.val, FOLDER_VAL, self.eval_size, torch.Generator().manual_seed(30_000))


def make_source(
    teacher_name: str,
    spec: GeneratorSpec,
    data: Path | None,
    seed: int,
    patch: int,
    rank: int = 0,
    val_data: Path | None = None,
    eval_count: int | None = None,
    colour_aug: str | None = None,
) -> DataSource:
    """The user's --data when given, else the teacher's default set; unconditional needs none.
    `eval_count`: held-out samples (None: the defaults above). `colour_aug` (data/colour_aug.py):
    None is "permute" on the bundled photos (measured: benchmarks/distill_ablation.py) and "none" on a
    user's folder, whose task may not."""
    if colour_aug is not None and colour_aug not in COLOUR_AUG_MODES:
        raise EdgeDistillError(
            f"--colour-aug must be one of {', '.join(COLOUR_AUG_MODES)} (got '{colour_aug}')"
        )
    if colour_aug not in (None, "none") and spec.kind != "image":
        raise EdgeDistillError(
            f"--colour-aug is for image-to-image generators; {teacher_name} eats {spec.kind}"
        )
    if val_data is not None and (spec.kind != "image" or data is None):
        raise EdgeDistillError(
            "--val-data holds out images of an image-to-image generator's --data: give --data too"
            if spec.kind == "image"
            else f"--val-data is for image-to-image generators; {teacher_name} eats {spec.kind}: leave it out"
        )
    if spec.kind == "image":
        if data is not None:
            return ImageFolderSource(
                Path(data),
                spec,
                seed,
                patch,
                rank,
                val_data=val_data,
                eval_count=_eval_count(eval_count, FOLDER_EVAL),
                colour_aug=colour_aug or "none",
            )
        if teacher_name == "photo-restore":
            return PhotoRestoreSource(
                spec,
                seed,
                patch,
                rank,
                eval_count=_eval_count(eval_count, PHOTO_EVAL),
                colour_aug=colour_aug or "permute",
            )
        raise EdgeDistillError(
            f"{teacher_name} is an image-to-image generator and has no default data: pass --data DIR "
            "(a folder of input images, or A/ and B/ subfolders of pairs)"
        )
    real = None
    if data is not None:
        real = _real_images(Path(data), spec)
    elif teacher_name == "digits-dcgan":
        real = digits_images("train")[0]
    return NoiseSource(spec, seed, rank, real, eval_count=_eval_count(eval_count, NOISE_EVAL))


def _real_images(folder: Path, spec: GeneratorSpec) -> torch.Tensor:
    """A noise generator's --data: real images for D at the output size, in the output range."""
    files = list_images(folder) if folder.is_dir() else []
    if not files:
        raise EdgeDistillError(f"--data {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    size = spec.default_size or spec.input_shape()[2:]
    imgs = [read_image(f, int(spec.outputs[0].shape[1]))[None] for f in files]
    return to_output(spec, torch.cat([F.interpolate(x, size=tuple(size), mode="area") for x in imgs]))
