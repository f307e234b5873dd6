"""`edgedistill run`: one inference on a shipped model (or a torch generator), to check it by eye.

Models open through runtime.sources.resolve, as in `profile`: an artifact (directory or bare
.onnx/.ort/.xml/.engine) runs through its backend with numpy only, so this works on a device
without torch; anything else goes through `load_generator` (torch).
Both paths build inputs the same way from the spec, so their pictures can be compared: an
image through data/masks.py (an inpainter's holes from --mask, else seeded ones), a noise
generator's z from its seed, a label-conditioned one's class from --label.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec, one_hot
from edgedistill.data import images
from edgedistill.data.masks import image_inputs
from edgedistill.runtime.sources import resolve


@dataclass
class Loaded:
    """A generator ready for one call on numpy arrays, whatever runs it."""

    spec: GeneratorSpec
    infer: Callable[[dict[str, np.ndarray]], np.ndarray]  # inputs by spec name -> first output
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
    wanted = [t.name for t in spec.inputs]
    # by name; else in order (a model file whose graph names its inputs otherwise)
    names = wanted if set(wanted) <= set(runner.input_names) else list(runner.input_names)[: len(wanted)]
    out_names = [o.name for o in spec.outputs if o.name in runner.output_names]
    out_name = out_names[0] if out_names else runner.output_names[0]

    def infer(arrays: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {n: arrays[w] for n, w in zip(names, wanted, strict=False)}
        return np.asarray(runner.run(feeds)[out_name])

    if source.artifact is None:
        return Loaded(spec, infer, f"torch ({source.given})", static_batch=_traced_batch(runner))
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
    label: int | None = None,
    mask: str | Path | None = None,
) -> RunResult:
    """One inference of `model` on an image (image kind; an inpainter's holes from `mask`, else
    seeded by `seed`) or `count` noise samples (noise kinds; of class `label`, else the classes in
    turn), written to `output` (a grid when count > 1; input | output with `compare`)."""
    output = Path(output)
    images.check_output_path(output)
    for given, what in ((input, "input image"), (mask, "mask image")):
        if given is not None and not Path(given).is_file():  # before loading: a typo should cost nothing
            raise EdgeDistillError(f"{what} not found: {given}")
    loaded = open_model(model, threads)
    spec = loaded.spec
    if mask is not None and not spec.mask_channel:
        raise EdgeDistillError(f"--mask is for inpainting generators; {model} takes no mask: leave it out")
    if label is not None and spec.classes is None:
        raise EdgeDistillError(
            f"--label is for label-conditioned generators; {model} takes no label: leave it out"
        )
    if spec.kind == "image":
        if input is None:
            raise EdgeDistillError(f"{model} turns images into images: give --input IMAGE")
        if count != 1 or (seed is not None and not spec.mask_channel):
            raise EdgeDistillError(
                f"{model} turns images into images: --seed/--count are for noise generators"
                + (" (an inpainter takes --seed for its holes)" if spec.mask_channel else "")
            )
        holes = Path(mask) if mask is not None else seed or 0
        return _run_image(loaded, Path(input), output, compare, size, holes)
    if input is not None or compare or size:
        raise EdgeDistillError(
            f"{model} generates from noise: use --seed/--count (not --input, --compare or --size)"
        )
    if count < 1:
        raise EdgeDistillError(f"--count must be at least 1, got {count}")
    return _run_noise(loaded, output, seed or 0, count, label)


# ------------------------------------------------------------------------------------------- kinds
def _run_image(
    loaded: Loaded,
    input: Path,
    output: Path,
    compare: bool,
    size: tuple[int, int] | None,
    holes: Path | int = 0,
) -> RunResult:
    """`holes`: an inpainter's mask image (white where missing), or the seed of random ones."""
    spec = loaded.spec
    pixels = images.read_pixels(input, spec.image_channels)
    h, w = pixels.shape[1:]
    if isinstance(holes, Path):  # resized and cropped with the picture: one more plane of it
        drawn = images.read_pixels(holes, 1)
        if drawn.shape[1:] != (h, w):
            raise EdgeDistillError(
                f"--mask {holes} is {drawn.shape[2]}x{drawn.shape[1]} but {input} is {w}x{h}: draw it at the image's size"
            )
        pixels = np.concatenate([pixels, drawn])
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
    masks = None
    if isinstance(holes, Path):
        pixels, masks = pixels[:-1], pixels[None, -1:]
        notes.append(f"holes from {holes} (white = missing)")
    elif spec.mask_channel:
        notes.append(f"random holes, mask seed {holes} (--mask MASK.png gives your own)")
    x = image_inputs(spec, pixels[None], seed=holes if isinstance(holes, int) else 0, masks=masks)
    y, ms = _timed(loaded, {spec.inputs[0].name: x})
    out = _to_pixels(y, spec, loaded.label)[0]
    shown = _unit(x[0, : spec.image_channels], spec.input_range) if spec.mask_channel else pixels  # the holes
    picture = images.grid([shown, out], pad=2, cols=2) if compare else out
    return RunResult(images.save_pixels(picture, output), ms, loaded.label, list(x.shape), 1, notes)


def _run_noise(loaded: Loaded, output: Path, seed: int, count: int, label: int | None = None) -> RunResult:
    spec = loaded.spec
    arrays = {spec.inputs[0].name: noise(spec, seed, count)}
    notes = [f"z ~ N(0, 1) from numpy default_rng({seed}), shape {list(arrays[spec.inputs[0].name].shape)}"]
    if spec.classes is not None:
        arrays[spec.inputs[1].name] = labels(spec, count, label)
        which = f"label {label}" if label is not None else f"labels 0, 1, … in turn (of {spec.classes})"
        notes.append(f"{which}, one-hot: --label K picks a class")
    if loaded.static_batch and count > 1:
        parts = [_timed(loaded, {k: v[i : i + 1] for k, v in arrays.items()}) for i in range(count)]
        y, ms, calls = np.concatenate([p[0] for p in parts]), sum(p[1] for p in parts), count
    else:
        (y, ms), calls = _timed(loaded, arrays), 1
    outs = list(_to_pixels(y, spec, loaded.label))
    picture = images.grid(outs) if count > 1 else outs[0]
    shape = list(arrays[spec.inputs[0].name].shape)
    return RunResult(images.save_pixels(picture, output), ms, loaded.label, shape, calls, notes)


def noise(spec: GeneratorSpec, seed: int, count: int) -> np.ndarray:
    """The z a noise generator eats for `seed`: the same numbers on every path and in the bundled runner."""
    shape = spec.input_shape(batch=count)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def labels(spec: GeneratorSpec, count: int, label: int | None) -> np.ndarray:
    """One-hot labels of a label-conditioned generator: all `label`, or the classes in turn."""
    classes = int(spec.classes or 0)
    if label is not None and not 0 <= label < classes:
        raise EdgeDistillError(
            f"--label: label {label} is not in 0..{classes - 1} (this generator knows {classes} classes)"
        )
    return one_hot(np.full(count, label) if label is not None else np.arange(count) % classes, classes)


# ----------------------------------------------------------------------------------------- helpers
def _timed(loaded: Loaded, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    try:
        y = loaded.infer(arrays)
    except EdgeDistillError:
        raise
    except Exception as exc:  # runtimes raise their own types; the user needs one line
        why = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:400]
        shapes = ", ".join(str(list(a.shape)) for a in arrays.values())
        raise EdgeDistillError(
            f"{loaded.label}: inference on input {shapes} failed: {why or type(exc).__name__}"
        ) from None
    return y, (time.perf_counter() - start) * 1000


def _traced_batch(runner: object) -> bool:
    """A torch.export program (a pruned .pt2 student) keeps the batch size it was traced at: one
    sample per call. Other torch modules take any batch."""
    import torch

    module = getattr(runner, "module", None)
    if not isinstance(module, torch.fx.GraphModule):
        return False
    first = next((n for n in module.graph.nodes if n.op == "placeholder"), None)
    shape = getattr(first.meta.get("val") if first is not None else None, "shape", None)
    return bool(shape) and isinstance(shape[0], int)


def _unit(x: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    lo, hi = value_range
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


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
