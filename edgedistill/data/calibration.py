"""Building a calibration set: the inputs a quantizer measures activation ranges on.

Sources: a folder of images (resized and center-cropped to the export size, mapped to the spec's
input range), "noise" (standard normal z, for noise generators), a saved .npz set, or nothing:
then the teacher's recipe in calibration/<teacher>.toml says how (degraded crops of the bundled
photos, or noise). Built sets are cached as .npz under a key of everything that shapes them.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.resources import data_dir
from edgedistill.core.spec import GeneratorSpec

METHODS = ("minmax", "entropy", "percentile")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MIN_ADVISED = 32
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "La"}


def load_recipe(teacher: str | Path) -> dict[str, Any]:
    """calibration/<teacher>.toml; `teacher` may also be a student run whose config names its teacher."""
    name = str(teacher)
    path = data_dir("calibration") / f"{Path(name).name}.toml"
    if path.is_file() and not Path(name).is_dir():
        try:
            recipe = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise EdgeDistillError(f"{path}: not a valid calibration recipe ({exc})") from None
        recipe["_dir"] = str(path.parent)
        return recipe
    parent = _teacher_of_run(Path(name))
    if parent is not None and parent != name:
        return load_recipe(parent)
    known = ", ".join(p.stem for p in sorted(data_dir("calibration").glob("*.toml")))
    raise EdgeDistillError(
        f"no calibration recipe for '{name}' (recipes: {known}): give --calib-data FOLDER of input images"
    )


def build_calibration(
    spec: GeneratorSpec,
    source: str | Path | None,
    size: int,
    *,
    teacher: str | None = None,
    seed: int = 0,
    method: str = "percentile",
    percentile: float = 99.99,
    input_size: tuple[int, int] | None = None,
    cache: Path | None = None,
) -> CalibrationSet:
    """`size` calibration samples for `spec`'s input; `cache` is a folder of .npz sets (reused by key)."""
    if method not in METHODS:
        raise EdgeDistillError(f"calibration method must be one of {', '.join(METHODS)}, not '{method}'")
    if not 0 < percentile <= 100:
        raise EdgeDistillError(f"calibration percentile must be in (0, 100], not {percentile}")
    if size < 1:
        raise EdgeDistillError(f"calibration size must be at least 1, not {size}")
    if len(spec.inputs) != 1:
        raise EdgeDistillError(f"calibration handles single-input generators, not {len(spec.inputs)} inputs")
    if size < MIN_ADVISED:
        warnings.warn(
            f"only {size} calibration samples: activation ranges from fewer than {MIN_ADVISED} are noisy "
            "(raise --calib-size)",
            UserWarning,
            stacklevel=2,
        )
    hw = _input_size(spec, input_size)
    plan = _plan(spec, source, teacher, hw)
    key = _key(spec, plan, size, seed, hw)
    cached = Path(cache) / f"{key}.npz" if cache is not None else None
    meta = {"key": key, "plan": {k: v for k, v in plan.items() if not k.startswith("_")}, "seed": seed}
    if cached is not None and cached.is_file():
        try:
            hit = CalibrationSet.load(
                cached, method=method, percentile=percentile, meta={**meta, "cached": True}
            )
            hit.source = plan["describe"]  # not the cache file's path: the manifest names the real source
            return hit
        except EdgeDistillError:
            cached.unlink(missing_ok=True)  # a damaged cache is rebuilt, not trusted
    arrays = {spec.inputs[0].name: _build(spec, plan, size, seed, hw)}
    calib = CalibrationSet(arrays, method=method, percentile=percentile, source=plan["describe"], meta=meta)
    if cached is not None:
        calib.save(cached)
    return calib


# ------------------------------------------------------------------------------------------ plans
def _input_size(spec: GeneratorSpec, input_size: tuple[int, int] | None) -> tuple[int, int] | None:
    if spec.kind != "image":
        return None
    return tuple(input_size or spec.default_size or (256, 256))  # type: ignore[return-value]


def _plan(
    spec: GeneratorSpec, source: str | Path | None, teacher: str | None, hw: tuple[int, int] | None
) -> dict[str, Any]:
    """What to build, as plain data (it is also the cache key): kind of source and its settings."""
    if source is not None and str(source) == "noise" and not Path(source).exists():
        return _noise_plan(spec)
    if source is not None:
        path = Path(source).expanduser()
        if path.suffix == ".npz" and path.is_file():
            return {"kind": "npz", "path": str(path.resolve()), "describe": str(path), **_fingerprint([path])}
        if not path.exists():
            raise EdgeDistillError(
                f"calibration data not found: {path} (give a folder of images, or 'noise')"
            )
        if not path.is_dir():
            raise EdgeDistillError(
                f"calibration data {path} is a file: give a folder of images (or a .npz set)"
            )
        if spec.kind != "image":
            raise EdgeDistillError(
                f"{path}: image calibration needs an image-to-image generator; this one eats {spec.kind}: use 'noise'"
            )
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise EdgeDistillError(
                f"calibration folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): add some"
            )
        return {"kind": "folder", "path": str(path.resolve()), "describe": str(path), **_fingerprint(files)}
    name = teacher or (spec.provenance.get("config") or {}).get("teacher") or spec.provenance.get("teacher")
    recipe = None
    if name:
        try:
            recipe = load_recipe(name)
        except EdgeDistillError:
            recipe = None
    if recipe is None:
        if spec.kind in ("noise", "noise+label"):
            return _noise_plan(spec)
        raise EdgeDistillError(
            "no calibration data for this image generator (no recipe for "
            f"'{name or 'an unnamed teacher'}'): give --calib-data FOLDER of typical input images"
        )
    src, owner = recipe.get("source", ""), recipe.get("teacher", name)
    if src == "noise":
        return {**_noise_plan(spec), "recipe": owner}
    if src == "bundled-photos":
        return {
            "kind": "bundled-photos",
            "recipe": owner,
            "describe": f"{owner} recipe: degraded bundled photos",
        }
    folder = Path(recipe["_dir"]) / src  # a recipe may name a folder beside it
    if src and folder.is_dir():
        return _plan(spec, folder, None, hw)
    raise EdgeDistillError(f"calibration recipe for '{name}' has an unknown source '{src}'")


def _noise_plan(spec: GeneratorSpec) -> dict[str, Any]:
    if spec.kind == "image":
        raise EdgeDistillError(
            "'noise' calibration is for noise-input generators; this one restores images: "
            "give --calib-data FOLDER of typical input images"
        )
    return {"kind": "noise", "describe": "standard normal noise"}


def _fingerprint(files: list[Path]) -> dict[str, Any]:
    """Names, sizes and times of the files: a changed folder must not reuse a stale cache."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"files": len(files), "fingerprint": h.hexdigest()[:16]}


def _key(spec: GeneratorSpec, plan: dict[str, Any], size: int, seed: int, hw: tuple[int, int] | None) -> str:
    blob = {
        "plan": {k: v for k, v in plan.items() if k != "describe"},
        "size": size,
        "seed": seed,
        "input_size": hw,
        "input": [spec.inputs[0].name, spec.inputs[0].shape, list(spec.input_range)],
        "v": 1,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------ builders
def _build(
    spec: GeneratorSpec, plan: dict[str, Any], size: int, seed: int, hw: tuple[int, int] | None
) -> np.ndarray:
    kind = plan["kind"]
    if kind == "noise":
        shape = spec.input_shape(batch=size)
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    if kind == "npz":
        loaded = CalibrationSet.load(plan["path"])
        name = spec.inputs[0].name
        if name not in loaded.arrays:
            raise EdgeDistillError(f"{plan['path']} has no array '{name}' (has {', '.join(loaded.arrays)})")
        return loaded.arrays[name][:size]
    assert hw is not None
    channels = int(spec.inputs[0].shape[1])
    if kind == "bundled-photos":
        pixels = _bundled_photo_inputs(size, seed, hw, channels)
    else:
        pixels = _folder_pixels(Path(plan["path"]), size, seed, hw, channels)
    lo, hi = spec.input_range
    return (pixels * (hi - lo) + lo).astype(np.float32)


def _bundled_photo_inputs(n: int, seed: int, hw: tuple[int, int], channels: int) -> np.ndarray:
    """The photo teacher's task: random crops at the photos' native scale (as it was trained), degraded."""
    import torch

    from edgedistill.data.bundled import bundled_photos, degrade

    if channels != 3:
        raise EdgeDistillError(f"the bundled photos are RGB; this generator takes {channels} channels")
    h, w = hw
    gen = torch.Generator().manual_seed(seed)
    photos = [_at_least(p, h, w) for p in bundled_photos("train")]
    clean = torch.empty(n, 3, h, w)
    for i in range(n):
        img = photos[int(torch.randint(len(photos), (1,), generator=gen))]
        y = int(torch.randint(img.shape[0] - h + 1, (1,), generator=gen))
        x = int(torch.randint(img.shape[1] - w + 1, (1,), generator=gen))
        crop = torch.from_numpy(np.ascontiguousarray(img[y : y + h, x : x + w])).permute(2, 0, 1)
        clean[i] = crop.flip(2) if torch.rand(1, generator=gen) < 0.5 else crop
    return degrade(clean, gen).numpy()


def _at_least(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Upscale a photo smaller than the crop (a few bundled ones are under 256 px on a side)."""
    scale = max(h / img.shape[0], w / img.shape[1])
    if scale <= 1:
        return img
    from PIL import Image

    size = (max(w, round(img.shape[1] * scale)), max(h, round(img.shape[0] * scale)))
    pil = Image.fromarray((img * 255 + 0.5).clip(0, 255).astype(np.uint8)).resize(
        size, Image.Resampling.BICUBIC
    )
    return np.asarray(pil, dtype=np.float32) / 255.0


def _folder_pixels(folder: Path, n: int, seed: int, hw: tuple[int, int], channels: int) -> np.ndarray:
    """Up to n images of the folder (a seeded random choice), resized + center-cropped, in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    order = np.random.default_rng(seed).permutation(len(files))
    out, unreadable = [], []
    for idx in order:
        if len(out) == n:
            break
        f = files[idx]
        try:
            with Image.open(f) as im:
                have = 1 if im.mode in _GRAY_MODES else 3
                if have != channels:
                    raise EdgeDistillError(
                        f"{f}: a {have}-channel ({im.mode}) image, but the generator takes {channels} channels: "
                        f"give --calib-data a folder of {'grayscale' if channels == 1 else 'color'} images"
                    )
                out.append(_fit(im.convert("L" if channels == 1 else "RGB"), hw))
        except (UnidentifiedImageError, OSError, ValueError):
            unreadable.append(f.name)
    if not out:
        raise EdgeDistillError(
            f"none of the {len(files)} image files in {folder} could be read ({', '.join(unreadable[:3])} ...)"
        )
    if unreadable:
        warnings.warn(f"skipped {len(unreadable)} unreadable images in {folder}", UserWarning, stacklevel=3)
    if len(out) < n:
        warnings.warn(
            f"{folder} has {len(out)} readable images, fewer than the {n} calibration samples asked for",
            UserWarning,
            stacklevel=3,
        )
    return np.stack(out)


def _fit(im: Any, hw: tuple[int, int]) -> np.ndarray:
    """Resize so the image covers (H, W), then center-crop: (C, H, W) float32 in [0, 1]."""
    from PIL import Image

    h, w = hw
    scale = max(h / im.height, w / im.width)
    size = (max(w, round(im.width * scale)), max(h, round(im.height * scale)))
    if size != im.size:
        im = im.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    left, top = (im.width - w) // 2, (im.height - h) // 2
    arr = np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.float32) / 255.0
    return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).copy()


def _teacher_of_run(path: Path) -> str | None:
    """The embedded teacher a student run was distilled from (its model.json's provenance.config.teacher)."""
    spec_path = path / "model.json" if path.is_dir() else None
    if spec_path is None or not spec_path.is_file():
        return None
    try:
        prov = json.loads(spec_path.read_text()).get("provenance") or {}
    except (json.JSONDecodeError, OSError):
        return None
    return (prov.get("config") or {}).get("teacher") or prov.get("teacher")
