"""`edgedistill run`: one inference on a shipped model (or a torch generator), to check it by eye.

Models open through runtime.sources.resolve, as in `profile`: an artifact (directory or bare
.onnx/.ort/.xml/.engine) runs through its backend with numpy only, so this works on a device
without torch; anything else goes through `load_generator` (torch).
Both paths build inputs the same way from the spec, so their pictures can be compared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.data import images
from edgedistill.runtime.sources import resolve


@dataclass
class Loaded:
    """A generator ready for one call on numpy arrays, whatever runs it."""

    spec: GeneratorSpec
    infer: Callable[[np.ndarray], np.ndarray]  # first input -> first output
    label: str  # what ran it, for the printout
    static_size: tuple[int, int] | None = None  # (H, W) the model only accepts
    static_batch: bool = False  # one sample per call


@dataclass
class RunResult:
    output: Path
    ms: float  # wall time of the inference call(s), not of loading or image I/O
    label: str
    input_shape: list[int]
    calls: int = 1
    notes: list[str] = field(default_factory=list)


def open_model(model: str | Path, threads: int | None = None) -> Loaded:
    """`model` opened the one way every command opens one (runtime.sources.resolve), ready for one call."""
    source = resolve(model)
    if source.spec is None:
        raise EdgeDistillError(
            f"{model} carries no generator spec: give its artifact directory (manifest.json with 'spec') "
            "or put the model.json it was exported from beside it"
        )
    spec = source.spec
    if source.kind == "torch" and threads:
        import torch

        torch.set_num_threads(threads)
    runner = source.load(threads)
    in_name = spec.inputs[0].name if spec.inputs[0].name in runner.input_names else runner.input_names[0]
    out_names = [o.name for o in spec.outputs if o.name in runner.output_names]
    out_name = out_names[0] if out_names else runner.output_names[0]

    def infer(x: np.ndarray) -> np.ndarray:
        return np.asarray(runner.run({in_name: x})[out_name])

    if source.artifact is None:
        return Loaded(spec, infer, f"torch ({source.given})")
    art = source.artifact
    size, batch = _static_shape(art.manifest, spec)
    return Loaded(spec, infer, f"{art.backend} {art.precision} ({art.model_path})", size, batch)


def run(
    model: str | Path,
    output: str | Path,
    *,
    input: str | Path | None = None,
    seed: int | None = None,
    count: int = 1,
    threads: int | None = None,
    compare: bool = False,
    size: tuple[int, int] | None = None,
) -> RunResult:
    """One inference of `model` on an image (image kind) or `count` noise samples (noise kind),
    written to `output` (a grid when count > 1; input | output with `compare`)."""
    output = Path(output)
    images.check_output_path(output)
    if input is not None and not Path(input).is_file():  # before loading: a typo should cost nothing
        raise EdgeDistillError(f"input image not found: {input}")
    loaded = open_model(model, threads)
    kind = loaded.spec.kind
    if kind == "image":
        if input is None:
            raise EdgeDistillError(f"{model} turns images into images: give --input IMAGE")
        if seed is not None or count != 1:
            raise EdgeDistillError(
                f"{model} turns images into images: --seed/--count are for noise generators"
            )
        return _run_image(loaded, Path(input), output, compare, size)
    if kind == "noise":
        if input is not None or compare or size:
            raise EdgeDistillError(
                f"{model} generates from noise: use --seed/--count (not --input, --compare or --size)"
            )
        if count < 1:
            raise EdgeDistillError(f"--count must be at least 1, got {count}")
        return _run_noise(loaded, output, seed or 0, count)
    raise EdgeDistillError(
        f"{model} is a '{kind}' generator: `edgedistill run` handles image and noise kinds"
    )


# ------------------------------------------------------------------------------------------- kinds
def _run_image(
    loaded: Loaded, input: Path, output: Path, compare: bool, size: tuple[int, int] | None
) -> RunResult:
    spec = loaded.spec
    channels = spec.inputs[0].shape[1] if len(spec.inputs[0].shape) == 4 else 3
    channels = channels if isinstance(channels, int) else 3
    pixels = images.read_pixels(input, channels)
    h, w = pixels.shape[1:]
    notes = []
    if size and loaded.static_size and tuple(size) != loaded.static_size:
        sh, sw = loaded.static_size
        raise EdgeDistillError(f"--size {size[0]} {size[1]}: this artifact takes {sh}x{sw} inputs only")
    target = tuple(size) if size else loaded.static_size
    if target and target != (h, w):
        pixels = images.fit(pixels, target)  # type: ignore[arg-type]
        why = "--size" if size else "the artifact's input shape is static"
        notes.append(f"input {h}x{w} resized/center-cropped to {target[0]}x{target[1]} ({why})")
    elif not target:
        m = size_multiple(spec)
        ch, cw = h - h % m, w - w % m
        if min(ch, cw) == 0:
            raise EdgeDistillError(f"{input} is {h}x{w}: this generator needs at least {m}x{m} pixels")
        if (ch, cw) != (h, w):
            pixels = images.crop_center(pixels, (ch, cw))
            notes.append(f"input {h}x{w} center-cropped to {ch}x{cw} (the generator needs multiples of {m})")
    lo, hi = spec.input_range
    x = (pixels[None] * (hi - lo) + lo).astype(np.float32)
    y, ms = _timed(loaded, x)
    out = _to_pixels(y, spec, loaded.label)[0]
    picture = images.grid([pixels, out], pad=2, cols=2) if compare else out
    return RunResult(images.save_pixels(picture, output), ms, loaded.label, list(x.shape), 1, notes)


def _run_noise(loaded: Loaded, output: Path, seed: int, count: int) -> RunResult:
    spec = loaded.spec
    z = noise(spec, seed, count)
    if loaded.static_batch and count > 1:
        parts = [_timed(loaded, z[i : i + 1]) for i in range(count)]
        y, ms, calls = np.concatenate([p[0] for p in parts]), sum(p[1] for p in parts), count
    else:
        (y, ms), calls = _timed(loaded, z), 1
    outs = list(_to_pixels(y, spec, loaded.label))
    picture = images.grid(outs) if count > 1 else outs[0]
    notes = [f"z ~ N(0, 1) from numpy default_rng({seed}), shape {list(z.shape)}"]
    return RunResult(images.save_pixels(picture, output), ms, loaded.label, list(z.shape), calls, notes)


def noise(spec: GeneratorSpec, seed: int, count: int) -> np.ndarray:
    """The z a noise generator eats for `seed`: the same numbers on every path and in the bundled runner."""
    shape = spec.input_shape(batch=count)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


# ----------------------------------------------------------------------------------------- helpers
def _timed(loaded: Loaded, x: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    try:
        y = loaded.infer(x)
    except EdgeDistillError:
        raise
    except Exception as exc:  # runtimes raise their own types; the user needs one line
        why = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:400]
        raise EdgeDistillError(
            f"{loaded.label}: inference on input {list(x.shape)} failed: {why or type(exc).__name__}"
        ) from None
    return y, (time.perf_counter() - start) * 1000


def _to_pixels(y: np.ndarray, spec: GeneratorSpec, label: str) -> np.ndarray:
    if y.ndim != 4 or y.shape[1] not in (1, 3):
        raise EdgeDistillError(f"{label}: output shape {list(y.shape)} is not (N, 1|3, H, W) image data")
    lo, hi = spec.output_range
    return np.clip((y.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


def size_multiple(spec: GeneratorSpec) -> int:
    """What H and W must divide by for the built-in families (1: unknown, let the model decide)."""
    if spec.family == "resnet":
        return 4
    if spec.family == "unet":
        return 2 ** int(spec.kwargs.get("num_downs", 8))
    return 1


def _static_shape(manifest: dict, spec: GeneratorSpec) -> tuple[tuple[int, int] | None, bool]:
    """(H, W) and batch-of-one when the artifact has a fixed input shape: the manifest's target says
    so (`dynamic_shape: false`), or the spec's input has fixed dims."""
    dims = list(spec.inputs[0].shape)
    target = manifest.get("target") or {}
    static = target.get("dynamic_shape") is False
    size: tuple[int, int] | None = None
    if spec.kind == "image" and len(dims) == 4:
        if isinstance(dims[2], int) and isinstance(dims[3], int):
            size = (dims[2], dims[3])
        elif static:
            # export records the size it compiled for in the spec; the target's is the profile default
            fixed = spec.default_size or target.get("input_size")
            size = (int(fixed[0]), int(fixed[1])) if fixed else None
    return size, static or (isinstance(dims[0], int) and dims[0] == 1)
