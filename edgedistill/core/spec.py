"""The generator spec: what a generator eats and makes (contract 1 in docs/architecture.md).

It travels with every file that holds a generator (a `model.json` sidecar, ONNX metadata_props),
so export and profile can build inputs, map pixels and rebuild built-in families without code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.jsonfile import read_json

if TYPE_CHECKING:  # torch is imported lazily: the runtime part (profile on a device) has no torch
    import torch

KINDS = ("noise", "image", "noise+label", "classifier")


@dataclass
class TensorSpec:
    """One input or output; a str in `shape` is a free dimension: "N", "H", "W", or an output's
    size as a function of the input's, "H*2" / "W*2" (a 2x super-resolver) or "H/2"."""

    name: str
    shape: list[int | str]


def resolve_dim(dim: int | str, sizes: dict[str, int]) -> int:
    """A spec dimension at concrete sizes {"N": .., "H": .., "W": ..}."""
    if isinstance(dim, int):
        return dim
    name, op, factor = dim.partition("*") if "*" in dim else dim.partition("/")
    if name not in sizes or (op and not factor.isdigit()):
        raise EdgeDistillError(
            f"spec dimension '{dim}' is not N, H, W, H*k or H/k: regenerate its model.json"
        )
    base = sizes[name]
    return base * int(factor) if op == "*" else base // int(factor) if op == "/" else base


def scaled_dim(name: str, size_in: int, size_out: int) -> int | str:
    """How an output dimension follows the input's: "H", "H*2", "H/2", or a fixed size."""
    if size_out == size_in:
        return name
    if size_out % size_in == 0:
        return f"{name}*{size_out // size_in}"
    if size_in % size_out == 0:
        return f"{name}/{size_in // size_out}"
    return size_out


@dataclass
class GeneratorSpec:
    kind: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    input_range: tuple[float, float] = (-1.0, 1.0)
    output_range: tuple[float, float] = (-1.0, 1.0)
    default_size: tuple[int, int] | None = None  # H, W for image generators
    family: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    # An inpainter: the image input's last channel is the mask (1 where pixels are missing, 0 where
    # known), and missing pixels hold `mask_fill` (in the input range); see data/masks.py.
    mask_channel: bool = False
    mask_fill: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EdgeDistillError(f"spec kind must be one of {KINDS}, got '{self.kind}'")
        if self.mask_channel and (self.kind != "image" or not self.inputs or self.image_channels < 1):
            raise EdgeDistillError(
                "mask_channel is for image generators whose input is the image plus one mask channel "
                '(e.g. "shape": ["N", 4, "H", "W"] for RGB + mask): fix model.json'
            )
        if self.kind == "noise+label" and (
            len(self.inputs) != 2
            or len(self.inputs[1].shape) != 2
            or not isinstance(self.inputs[1].shape[1], int)
        ):
            raise EdgeDistillError(
                'a noise+label spec has two inputs, z ["N", nz, 1, 1] and a one-hot label ["N", classes] '
                "(classes a number): fix model.json"
            )
        if self.kind == "classifier" and (
            len(self.inputs) != 1
            or len(self.inputs[0].shape) != 4
            or not all(isinstance(d, int) for d in self.inputs[0].shape[1:])
            or len(self.outputs) != 1
            or len(self.outputs[0].shape) != 2
            or not isinstance(self.outputs[0].shape[1], int)
        ):
            raise EdgeDistillError(
                'a classifier spec has one image input ["N", C, H, W] (numbers) and one logits output '
                '["N", classes]: fix model.json'
            )

    @property
    def image_channels(self) -> int:
        """Channels of the picture an image generator eats: its input's, less an inpainter's mask."""
        c = self.inputs[0].shape[1] if len(self.inputs[0].shape) == 4 else 3
        c = c if isinstance(c, int) else 3
        return c - 1 if self.mask_channel else c

    @property
    def classes(self) -> int | None:
        """How many classes a label-conditioned generator knows (its one-hot label's width)."""
        return int(self.inputs[1].shape[1]) if self.kind == "noise+label" else None

    @property
    def logits(self) -> int | None:
        """How many classes a classifier tells apart (its logits' width); None for a generator."""
        return int(self.outputs[0].shape[1]) if self.kind == "classifier" else None

    # ---- shapes ---------------------------------------------------------------------------
    def input_shape(self, size: tuple[int, int] | None = None, batch: int = 1) -> list[int]:
        """The concrete shape of the first input at `size` (image kind) and `batch`."""
        h, w = size or self.default_size or (256, 256)
        names = {"N": batch, "H": h, "W": w}
        return [d if isinstance(d, int) else names[d] for d in self.inputs[0].shape]

    def output_shape(self, size: tuple[int, int] | None = None, batch: int = 1) -> list[int]:
        """The concrete shape of the first output for an input at `size`: a super-resolver's is
        larger, a colouriser's has other channels (the spec records it as a function of the input)."""
        h, w = size or self.default_size or (256, 256)
        return [resolve_dim(d, {"N": batch, "H": h, "W": w}) for d in self.outputs[0].shape]

    @property
    def output_scale(self) -> float:
        """Output height / input height of an image generator (2.0 for a 2x super-resolver)."""
        if self.kind != "image" or not self.outputs:
            return 1.0
        h = 256
        return self.output_shape((h, h))[2] / h

    def example_inputs(self, size: tuple[int, int] | None = None, batch: int = 1, seed: int = 0) -> tuple:
        """Random inputs in the spec's range, deterministic for a seed."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        shape = self.input_shape(size, batch)
        if self.kind in ("image", "classifier"):
            lo, hi = self.input_range
            return (torch.rand(shape, generator=gen) * (hi - lo) + lo,)
        z = torch.randn(shape, generator=gen)
        if self.classes is None:
            return (z,)
        labels = torch.randint(self.classes, (batch,), generator=gen)
        return z, torch.nn.functional.one_hot(labels, self.classes).float()

    def example_arrays(
        self, size: tuple[int, int] | None = None, batch: int = 1, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """numpy inputs by input name (float32, the spec's range): what runtimes without torch eat."""
        rng = np.random.default_rng(seed)
        shape = self.input_shape(size, batch)
        if self.kind in ("image", "classifier"):
            lo, hi = self.input_range
            x = rng.random(shape, dtype=np.float32) * (hi - lo) + lo
        else:
            x = rng.standard_normal(shape, dtype=np.float32)
        arrays = {self.inputs[0].name: x.astype(np.float32)}
        if self.classes is not None:
            arrays[self.inputs[1].name] = one_hot(rng.integers(self.classes, size=batch), self.classes)
        return arrays

    # ---- pixels ---------------------------------------------------------------------------
    def to_input(self, pixels01: torch.Tensor) -> torch.Tensor:
        lo, hi = self.input_range
        return pixels01 * (hi - lo) + lo

    def to_pixels(self, output: torch.Tensor) -> torch.Tensor:
        lo, hi = self.output_range
        return ((output - lo) / (hi - lo)).clamp(0, 1)

    # ---- files ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorSpec:
        try:
            d = dict(d)
            d["inputs"] = [TensorSpec(**t) for t in d["inputs"]]
            d["outputs"] = [TensorSpec(**t) for t in d["outputs"]]
            for key in ("input_range", "output_range", "default_size"):
                if d.get(key) is not None:
                    d[key] = tuple(d[key])
            return cls(**d)
        except (KeyError, TypeError) as exc:
            raise EdgeDistillError(f"invalid generator spec ({exc}): regenerate its model.json") from None

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> GeneratorSpec:
        return cls.from_dict(read_json(path, missing=f"spec not found: {path}", fix="regenerate it"))


def one_hot(labels: np.ndarray | list[int], classes: int) -> np.ndarray:
    """Class indices (N,) as the float32 one-hot rows (N, classes) a label-conditioned generator eats:
    float like every other input, so calibration sets, runtimes and quantizers take it as they are."""
    idx = np.asarray(labels, dtype=np.int64)
    bad = idx[(idx < 0) | (idx >= classes)]
    if bad.size:
        raise EdgeDistillError(f"class label {int(bad[0])} is not in 0..{classes - 1}")
    return np.eye(classes, dtype=np.float32)[idx]


def spec_for_family(family: str, kwargs: dict[str, Any], **extra: Any) -> GeneratorSpec:
    """The spec of a built-in family's generator from its constructor kwargs."""
    if family == "dcgan":
        nz, nc, size = kwargs.get("nz", 100), kwargs.get("nc", 3), kwargs.get("image_size", 64)
        return GeneratorSpec(
            kind="noise",
            inputs=[TensorSpec("z", ["N", nz, 1, 1])],
            outputs=[TensorSpec("image", ["N", nc, size, size])],
            default_size=(size, size),
            family=family,
            kwargs=dict(kwargs),
            **extra,
        )
    if family in ("resnet", "unet"):
        cin, cout = kwargs.get("input_nc", 3), kwargs.get("output_nc", 3)
        default = 2 ** kwargs.get("num_downs", 8) if family == "unet" else 256
        return GeneratorSpec(
            kind="image",
            inputs=[TensorSpec("image", ["N", cin, "H", "W"])],
            outputs=[TensorSpec("output", ["N", cout, "H", "W"])],
            default_size=extra.pop("default_size", (default, default)),
            family=family,
            kwargs=dict(kwargs),
            **extra,
        )
    if family in CLASSIFIER_FAMILIES:
        c, size, classes = (
            kwargs.get("in_channels", 1),
            kwargs.get("image_size", 32),
            kwargs.get("classes", 10),
        )
        return GeneratorSpec(
            kind="classifier",
            inputs=[TensorSpec("image", ["N", c, size, size])],
            outputs=[TensorSpec("logits", ["N", classes])],
            default_size=(size, size),
            family=family,
            kwargs=dict(kwargs),
            **extra,
        )
    raise EdgeDistillError(f"'{family}' is not a generator family: use resnet, unet or dcgan")


# Classifier families (models/classifiers.py): a `classifier` spec eats one fixed-size image in
# `input_range` and returns one logit per class; data-free distillation synthesises its inputs.
CLASSIFIER_FAMILIES = ("lenet", "resnet_classifier")
