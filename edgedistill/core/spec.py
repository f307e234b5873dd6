"""The generator spec: what a generator eats and makes (contract 1 of DESIGN.md).

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

KINDS = ("noise", "image", "noise+label")


@dataclass
class TensorSpec:
    """One input or output; a str in `shape` is a free dimension ("N", "H", "W")."""

    name: str
    shape: list[int | str]


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

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EdgeDistillError(f"spec kind must be one of {KINDS}, got '{self.kind}'")

    # ---- shapes ---------------------------------------------------------------------------
    def input_shape(self, size: tuple[int, int] | None = None, batch: int = 1) -> list[int]:
        """The concrete shape of the first input at `size` (image kind) and `batch`."""
        h, w = size or self.default_size or (256, 256)
        names = {"N": batch, "H": h, "W": w}
        return [d if isinstance(d, int) else names[d] for d in self.inputs[0].shape]

    def example_inputs(self, size: tuple[int, int] | None = None, batch: int = 1, seed: int = 0) -> tuple:
        """Random inputs in the spec's range, deterministic for a seed."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        shape = self.input_shape(size, batch)
        if self.kind == "image":
            lo, hi = self.input_range
            return (torch.rand(shape, generator=gen) * (hi - lo) + lo,)
        return (torch.randn(shape, generator=gen),)

    def example_arrays(
        self, size: tuple[int, int] | None = None, batch: int = 1, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """numpy inputs by input name (float32, the spec's range): what runtimes without torch eat."""
        rng = np.random.default_rng(seed)
        shape = self.input_shape(size, batch)
        if self.kind == "image":
            lo, hi = self.input_range
            x = rng.random(shape, dtype=np.float32) * (hi - lo) + lo
        else:
            x = rng.standard_normal(shape, dtype=np.float32)
        return {self.inputs[0].name: x.astype(np.float32)}

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
    raise EdgeDistillError(f"'{family}' is not a generator family: use resnet, unet or dcgan")
