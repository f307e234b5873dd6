"""Image files in numpy + Pillow only (the artifact path must run without torch): pixels for
`edgedistill run`, and which files of a data folder train and which are held out.

A data folder is plain (every image is an input) or paired: A/ holds the inputs and B/ the targets
under the same relative names. It is split once, the same way for training, calibration and
held-out evaluation (`split_folder`).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedistill.core.atomic import write_atomic
from edgedistill.core.errors import EdgeDistillError

# Every place that lists images uses this one tuple (sources, calibration, held-out inputs).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "La"})  # Pillow's 1-channel modes
VAL_FRACTION = 0.1  # share of a data folder held out for validation when no --val-data is given


@dataclass(frozen=True)
class ImagePair:
    input: Path
    target: Path | None  # B/'s file of the same name in a paired folder, else None


@dataclass
class DataSplit:
    train: list[ImagePair]
    val: list[ImagePair]
    paired: bool


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` at any depth, sorted; hidden files and folders are skipped."""
    return sorted(
        p
        for p in Path(folder).rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def paired_dirs(root: Path) -> tuple[Path, Path] | None:
    """(A/, B/) when `root` holds both, else None (a plain folder)."""
    a_dir, b_dir = Path(root) / "A", Path(root) / "B"
    return (a_dir, b_dir) if a_dir.is_dir() and b_dir.is_dir() else None


def folder_pairs(root: Path, what: str = "--data") -> tuple[list[ImagePair], bool]:
    """Every (input, target) of a data folder and whether it is paired; `what` names the option."""
    root = Path(root)
    if not root.is_dir():
        raise EdgeDistillError(f"{what} {root} is not a directory of images")
    dirs = paired_dirs(root)
    files = list_images(dirs[0] if dirs else root)
    if not files:
        raise EdgeDistillError(f"{what} {root} holds no images ({', '.join(IMAGE_SUFFIXES)}): add some")
    if dirs is None:
        return [ImagePair(f, None) for f in files], False
    a_dir, b_dir = dirs
    pairs = [ImagePair(f, b_dir / f.relative_to(a_dir)) for f in files]
    missing = [str(p.input.relative_to(a_dir)) for p in pairs if not p.target.is_file()]  # type: ignore[union-attr]
    if missing:
        raise EdgeDistillError(
            f"{what} {root}: B/ lacks the targets of {', '.join(missing[:3])}: add them or remove the inputs"
        )
    return pairs, True


def val_score(relative: Path) -> float:
    """A file's place in [0, 1) from its relative name alone: adding files moves no other file."""
    digest = hashlib.sha256(relative.as_posix().encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_folder(root: Path, val_data: Path | None = None, fraction: float = VAL_FRACTION) -> DataSplit:
    """Training and validation pairs of a data folder, the same on every call.

    With `val_data`, all of `root` trains and `val_data` validates. Otherwise a file validates when
    its name's hash score is under `fraction`; a folder whose scores all miss holds out its lowest
    one, and a single image both trains and validates (there is nothing else to hold out).
    """
    if not 0 < fraction < 1:
        raise EdgeDistillError(f"the validation fraction must be in (0, 1), not {fraction}")
    pairs, paired = folder_pairs(root)
    if val_data is not None:
        if Path(val_data).resolve() == Path(root).resolve():
            raise EdgeDistillError(
                f"--val-data {val_data} is the --data folder: give a separate folder, or leave it out "
                f"to hold out {fraction:.0%} of --data"
            )
        return DataSplit(pairs, folder_pairs(Path(val_data), "--val-data")[0], paired)
    if len(pairs) == 1:
        warnings.warn(
            f"--data {root} holds one image: held-out scores are measured on the training image",
            UserWarning,
            stacklevel=2,
        )
        return DataSplit(pairs, pairs, paired)
    base = paired_dirs(Path(root))
    base_dir = base[0] if base else Path(root)
    scores = [val_score(p.input.relative_to(base_dir)) for p in pairs]
    held = {i for i, s in enumerate(scores) if s < fraction} or {int(np.argmin(scores))}
    if len(held) == len(pairs):  # every score fell under the fraction: the highest one trains
        held.discard(int(np.argmax(scores)))
    train = [p for i, p in enumerate(pairs) if i not in held]
    return DataSplit(train, [p for i, p in enumerate(pairs) if i in held], paired)


def read_pixels(path: str | Path, channels: int) -> np.ndarray:
    """An image file as (C, H, W) float32 in [0, 1], converted to `channels` (1 = gray, 3 = RGB)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise EdgeDistillError(f"input image not found: {path}")
    if channels not in (1, 3):
        raise EdgeDistillError(f"the model takes {channels}-channel images; run handles 1 (gray) or 3 (RGB)")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:  # a bomb is no OSError
        raise EdgeDistillError(f"{path}: not an image Pillow can read ({exc}): replace it") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def fit(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (C, H, W) so it covers `size` (H, W), keeping its aspect, then center-crop to `size`."""
    from PIL import Image

    h, w = pixels.shape[1:]
    th, tw = size
    if (h, w) == (th, tw):
        return pixels
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        # Resize each channel as float ("F" mode) so no rounding to 8 bits happens twice.
        planes = [
            np.asarray(Image.fromarray(p).resize((nw, nh), Image.Resampling.BICUBIC))
            for p in np.ascontiguousarray(pixels, dtype=np.float32)
        ]
        pixels = np.clip(np.stack(planes), 0.0, 1.0)
    return crop_center(pixels, size)


def crop_center(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    th, tw = size
    h, w = pixels.shape[1:]
    top, left = (h - th) // 2, (w - tw) // 2
    return np.ascontiguousarray(pixels[:, top : top + th, left : left + tw])


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> H x W (gray) or H x W x 3 uint8, rounding to nearest like imageio.to_uint8."""
    arr = (np.clip(pixels.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    return arr[..., 0] if arr.shape[2] == 1 else arr


def grid(images: list[np.ndarray], pad: int = 2, cols: int | None = None) -> np.ndarray:
    """(C, H, W) images in [0, 1] on one white canvas, square-ish, `pad` pixels apart (3 channels)."""
    rgb = [np.repeat(im, 3, axis=0) if im.shape[0] == 1 else im for im in images]
    h = max(im.shape[1] for im in rgb)
    w = max(im.shape[2] for im in rgb)
    cols = cols or math.ceil(math.sqrt(len(rgb)))
    rows = math.ceil(len(rgb) / cols)
    canvas = np.ones((3, rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i, im in enumerate(rgb):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        canvas[:, y : y + im.shape[1], x : x + im.shape[2]] = np.clip(im, 0.0, 1.0)
    return canvas


def check_output_path(path: str | Path) -> str:
    """The Pillow format for `path`'s suffix, or one line saying which suffixes work."""
    from PIL import Image

    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt not in ("PNG", "JPEG", "WEBP", "BMP", "TIFF"):
        raise EdgeDistillError(f"--output {path}: end it in .png (or .jpg, .webp, .bmp, .tiff)")
    return fmt


def save_pixels(pixels: np.ndarray, path: str | Path) -> Path:
    """Write (C, H, W) in [0, 1] as an image file (format from the suffix), atomically."""
    from PIL import Image

    fmt = check_output_path(path)
    image = Image.fromarray(to_uint8(pixels))
    return write_atomic(path, lambda p: image.save(p, format=fmt))
