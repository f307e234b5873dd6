"""Building a calibration set: the inputs a quantizer measures activation ranges on.

Sources: a folder of images (random crops at the export size, mapped to the spec's input range;
an inpainter's get seeded holes and the mask channel, data/masks.py), "noise" (standard normal z,
and for a label-conditioned generator one-hot labels, every class equally often), a saved .npz set
holding an array per input, or nothing:
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
from edgedistill.core.spec import GeneratorSpec, one_hot
from edgedistill.data.images import GRAY_MODES, IMAGE_SUFFIXES, list_images, paired_dirs, split_folder
from edgedistill.data.masks import image_inputs

METHODS = ("minmax", "entropy", "percentile")
MIN_ADVISED = 32


# What a recipe may say, and the type each key takes: anything else is a typo that would silently
# fall back to a default (a misspelt `method` to minmax), so it is refused.
RECIPE_KEYS: dict[str, tuple[type, ...]] = {
    "teacher": (str,),
    "source": (str,),
    "size": (int,),
    "crop": (list,),
    "method": (str,),
    "percentile": (int, float),
    "seed": (int,),
}


def load_recipe(teacher: str | Path) -> dict[str, Any]:
    """calibration/<teacher>.toml; `teacher` may also be a student run whose config names its teacher."""
    recipe = find_recipe(teacher)
    if recipe is not None:
        return recipe
    known = ", ".join(p.stem for p in sorted(data_dir("calibration").glob("*.toml")))
    raise EdgeDistillError(
        f"no calibration recipe for '{teacher}' (recipes: {known}): give --calib-data FOLDER of input images"
    )


def find_recipe(teacher: str | Path) -> dict[str, Any] | None:
    """The recipe as `load_recipe` finds it, None where there is none; a recipe that exists but is
    malformed is an error naming the file and the fault, never a silent fall-back to defaults."""
    name = str(teacher)
    path = data_dir("calibration") / f"{Path(name).name}.toml"
    if path.is_file() and not Path(name).is_dir():
        return _read_recipe(path)
    parent = _teacher_of_run(Path(name))
    if parent is not None and parent != name:
        return find_recipe(parent)
    return None


def _read_recipe(path: Path) -> dict[str, Any]:
    try:
        recipe = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EdgeDistillError(f"{path}: TOML syntax error, {exc}: fix the recipe") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeDistillError(f"{path}: cannot read the calibration recipe ({exc})") from None
    for key, value in recipe.items():
        types = RECIPE_KEYS.get(key)
        if types is None:
            raise EdgeDistillError(
                f"{path}: unknown key '{key}' in the calibration recipe (keys: {', '.join(RECIPE_KEYS)})"
            )
        if not isinstance(value, types) or isinstance(value, bool):
            raise EdgeDistillError(f"{path}: key '{key}' must be {types[0].__name__}, not {value!r}")
    if recipe.get("method", "minmax") not in METHODS:
        raise EdgeDistillError(
            f"{path}: method '{recipe['method']}' is not one of {', '.join(METHODS)}: fix the recipe"
        )
    if not 0 < recipe.get("percentile", 99.99) <= 100:
        raise EdgeDistillError(f"{path}: percentile must be in (0, 100], not {recipe['percentile']}")
    recipe["_dir"], recipe["_file"] = str(path.parent), str(path)
    return recipe


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
    if len(spec.inputs) != (1 if spec.classes is None else 2):
        raise EdgeDistillError(
            f"calibration handles one input (two for a noise+label generator), not {len(spec.inputs)} "
            f"inputs ({', '.join(t.name for t in spec.inputs)}): give --calib-data a .npz with one array per input"
        )
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
    # Stable facts only (kind, fingerprint, recipe): the meta travels into calibration.json, where a
    # path (perhaps a temp folder, deleted by now) would be a promise a later run cannot check.
    facts = {k: v for k, v in plan.items() if k not in ("path", "describe") and not k.startswith("_")}
    meta = {"key": key, "plan": facts, "seed": seed}
    if cached is not None and cached.is_file():
        try:
            hit = CalibrationSet.load(
                cached, method=method, percentile=percentile, meta={**meta, "cached": True}
            )
            hit.source = plan["describe"]  # not the cache file's path: the manifest names the real source
            return hit
        except EdgeDistillError:
            cached.unlink(missing_ok=True)  # a damaged cache is rebuilt, not trusted
    arrays = _build(spec, plan, size, seed, hw)
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
        files = _folder_files(path)
        if not files:
            raise EdgeDistillError(
                f"calibration folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}): add some"
            )
        describe = f"{path} (training inputs of A/)" if paired_dirs(path) else str(path)
        return {"kind": "folder", "path": str(path.resolve()), "describe": describe, **_fingerprint(files)}
    name = teacher or (spec.provenance.get("config") or {}).get("teacher") or spec.provenance.get("teacher")
    recipe = find_recipe(name) if name else None  # a malformed recipe raises: no silent fall-back
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
    raise EdgeDistillError(
        f"{recipe['_file']}: source '{src}' is neither noise, bundled-photos nor a folder beside the recipe"
    )


def _noise_plan(spec: GeneratorSpec) -> dict[str, Any]:
    if spec.kind == "image":
        raise EdgeDistillError(
            "'noise' calibration is for noise-input generators; this one restores images: "
            "give --calib-data FOLDER of typical input images"
        )
    return {"kind": "noise", "describe": "standard normal noise"}


def _folder_files(folder: Path) -> list[Path]:
    """The images a folder calibrates with: all of a plain folder; of an A/ + B/ paired folder only
    the training inputs of A/ (B/ holds targets, not inputs; the validation split stays unseen)."""
    if paired_dirs(folder):
        return [p.input for p in split_folder(folder).train]
    return list_images(folder)


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
    if spec.mask_channel:  # added only where it applies: the keys of existing caches stay valid
        blob["mask"] = {"fill": spec.mask_fill, "v": 1}  # v: data/masks.py's drawing
    if spec.classes is not None:
        blob["label"] = [spec.inputs[1].name, spec.classes]
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------ builders
def _build(
    spec: GeneratorSpec, plan: dict[str, Any], size: int, seed: int, hw: tuple[int, int] | None
) -> dict[str, np.ndarray]:
    """One array per model input, by name."""
    kind = plan["kind"]
    if kind == "noise":
        return _noise_inputs(spec, size, seed)
    if kind == "npz":
        loaded = CalibrationSet.load(plan["path"])
        missing = [t.name for t in spec.inputs if t.name not in loaded.arrays]
        if missing:
            raise EdgeDistillError(
                f"{plan['path']} has no array '{missing[0]}' (has {', '.join(loaded.arrays)})"
            )
        for t in spec.inputs:  # a wrong shape must fail here, not as the runtime's traceback
            arr = loaded.arrays[t.name]
            fixed = [(i, d) for i, d in enumerate(t.shape) if isinstance(d, int) and i > 0]
            if arr.ndim != len(t.shape) or any(arr.shape[i] != d for i, d in fixed):
                raise EdgeDistillError(
                    f"{plan['path']}: array '{t.name}' has shape {list(arr.shape)} but the generator takes "
                    f"{t.shape}: save the calibration arrays in that shape"
                )
        return {t.name: loaded.arrays[t.name][:size] for t in spec.inputs}
    assert hw is not None
    channels = spec.image_channels
    if kind == "bundled-photos":
        pixels = _bundled_photo_inputs(size, seed, hw, channels)
    else:
        pixels = _folder_pixels(Path(plan["path"]), size, seed, hw, channels)
    return {spec.inputs[0].name: image_inputs(spec, pixels, seed)}


def _noise_inputs(spec: GeneratorSpec, size: int, seed: int) -> dict[str, np.ndarray]:
    """z ~ N(0, 1); a label-conditioned generator's labels after it from the same generator, every
    class equally often (in a seeded order), so each class's activations reach the ranges."""
    rng = np.random.default_rng(seed)
    arrays = {spec.inputs[0].name: rng.standard_normal(spec.input_shape(batch=size), dtype=np.float32)}
    if spec.classes is not None:
        labels = rng.permutation(np.arange(size) % spec.classes)
        arrays[spec.inputs[1].name] = one_hot(labels, spec.classes)
    return arrays


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
    """n calibration inputs in [0, 1]: seeded random (H, W) crops at the images' native scale, spread
    evenly over the readable images, so a folder of a few large photos yields as many samples as
    asked (the teacher recipe takes many crops per photo too). Images smaller than the crop are
    skipped; a folder where none is large enough fails with what it found."""
    from PIL import Image, UnidentifiedImageError

    files = _folder_files(folder)
    rng = np.random.default_rng(seed)
    order = [files[i] for i in rng.permutation(len(files))]
    h, w = hw
    usable, unreadable, small = [], [], []
    for f in order:
        try:
            with Image.open(f) as im:
                have = 1 if im.mode in GRAY_MODES else 3
                if (
                    have == 1 and channels == 3
                ):  # colour photos feed a colouriser (as its gray input); not back
                    raise EdgeDistillError(
                        f"{f}: a {have}-channel ({im.mode}) image, but the generator takes {channels} channels: "
                        f"give --calib-data a folder of {'grayscale' if channels == 1 else 'color'} images"
                    )
                (usable if im.height >= h and im.width >= w else small).append((f, im.size))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            if isinstance(exc, Image.DecompressionBombError):  # not an OSError; a file to remove, not skip
                raise EdgeDistillError(
                    f"{f}: image too large to decode safely ({exc.args[0][:80]}…): remove it or re-save it smaller"
                ) from None
            unreadable.append(f.name)
    if not usable:
        largest = max(small, key=lambda t: t[1][0] * t[1][1])[1] if small else None
        found = (
            f"{len(small)} readable image(s), the largest {largest[0]}x{largest[1]}"
            if largest
            else "no readable image"
        )
        raise EdgeDistillError(
            f"{folder}: {found} ({len(files)} image file(s)); calibration crops {w}x{h} inputs: give images at "
            f"least {w}x{h} or a smaller input --size"
        )
    for what, names in (("unreadable", unreadable), (f"smaller than {w}x{h}", [f.name for f, _ in small])):
        if names:
            warnings.warn(f"skipped {len(names)} {what} image(s) in {folder}", UserWarning, stacklevel=3)
    out = np.empty((n, channels, h, w), np.float32)
    for k, (f, (iw, ih)) in enumerate(usable):
        picks = range(k, n, len(usable))  # sample i comes from image i mod len(usable)
        if not picks:
            break
        with Image.open(f) as im:
            pixels = _as_array(im.convert("L" if channels == 1 else "RGB"))
        for i in picks:
            top, left = int(rng.integers(ih - h + 1)), int(rng.integers(iw - w + 1))
            out[i] = pixels[:, top : top + h, left : left + w]
    return out


def _as_array(im: Any) -> np.ndarray:
    """A PIL image as (C, H, W) float32 in [0, 1]."""
    arr = np.asarray(im, dtype=np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


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
