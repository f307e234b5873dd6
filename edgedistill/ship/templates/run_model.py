#!/usr/bin/env python3
"""Run the model in this folder with numpy and its runtime only (onnxruntime or openvino).

Written by `edgedistill bundle`; standalone on purpose (no edgedistill, no torch): it reads
manifest.json beside it for the model file, the input name and shape and the value ranges.

    python run_model.py --input in.png --output out.png [--threads 2]   image -> image
    python run_model.py --seed 0 --count 4 --output grid.png            noise -> image(s)
    python run_model.py --input x.npy --output out.png                  the input array as is (N, C, H, W)
                                                                        (an inpainter's RGB + mask)

PNG in and out needs nothing else; with Pillow installed it also reads JPEG and resizes inputs
to a static input shape. In an app: `Model(folder)(x)` with x float32 NCHW in the input range.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


class Model:
    """The first input -> the first output of the model named by manifest.json in `folder`."""

    def __init__(self, folder: str | Path = HERE, threads: int | None = None) -> None:
        folder = Path(folder)
        self.manifest = json.loads((folder / "manifest.json").read_text())
        spec = self.manifest["spec"]
        self.kind = spec["kind"]
        self.input_shape = list(spec["inputs"][0]["shape"])  # str entries are free ("N", "H", "W")
        self.input_range = tuple(spec.get("input_range", (-1.0, 1.0)))
        self.output_range = tuple(spec.get("output_range", (-1.0, 1.0)))
        self.family = spec.get("family")
        self.kwargs = spec.get("kwargs") or {}
        target = self.manifest.get("target") or {}
        self.static = target.get("dynamic_shape") is False
        fixed = spec.get("default_size") or target.get("input_size")  # the size export compiled for
        self.static_size = tuple(int(v) for v in fixed) if self.static and fixed else None
        if all(isinstance(d, int) for d in self.input_shape[2:4]) and self.kind == "image":
            self.static_size = tuple(self.input_shape[2:4])
        path = folder / self.manifest["files"][0]
        if not path.resolve().is_relative_to(folder.resolve()):  # a tampered manifest leads nowhere else
            sys.exit(
                f"{folder / 'manifest.json'}: the model file {self.manifest['files'][0]!r} is outside {folder}"
            )
        backend = self.manifest["backend"]
        if backend == "onnxruntime":
            self._call = _onnxruntime(path, threads, target)
        elif backend == "openvino":
            self._call = _openvino(path, threads, self.manifest)
        elif backend == "tensorrt":
            build = "sh build.sh" if (folder / "build.sh").exists() else "trtexec (see README.md)"
            sys.exit(
                f"TensorRT engines are built on the device they run on: run `{build}` there, then load "
                "model.engine from C++ (see README.md) or with the tensorrt Python package."
            )
        else:
            sys.exit(f"unknown backend '{backend}' in manifest.json")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._call(np.ascontiguousarray(x, dtype=np.float32))


def _onnxruntime(path: Path, threads: int | None, target: dict):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy cores between frames
    wanted = (target.get("options") or {}).get("execution_providers") or ["CPUExecutionProvider"]
    providers = [p for p in wanted if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), opts, providers=providers)
    name, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    return lambda x: session.run([out], {name: x})[0]


def _openvino(path: Path, threads: int | None, manifest: dict):
    import openvino as ov

    core = ov.Core()
    target = manifest.get("target") or {}
    device = target.get("device") or "CPU"
    if device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
        print(f"note: no {device} here, running on CPU", file=sys.stderr)
        device = "CPU"
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if device == "CPU":
        # Set the precision the export checked: without a hint, CPUs with bf16/AMX quietly run fp32 in bf16.
        config["INFERENCE_PRECISION_HINT"] = precision_hint(manifest, core)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(str(path), device, config)
    request = compiled.create_infer_request()

    def call(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()

    return call


def precision_hint(manifest: dict, core) -> str:
    """The CPU's INFERENCE_PRECISION_HINT: what export recorded, else what the precision implies."""
    recorded = (manifest.get("backend_info") or {}).get("inference_precision")
    recorded = recorded or ((manifest.get("target") or {}).get("options") or {}).get("inference_precision")
    if recorded in ("f32", "f16", "bf16"):
        return recorded
    precision = manifest.get("precision", "fp32")
    if precision == "bf16":
        return "bf16"
    if precision == "fp16" and "FP16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return "f16"
    return "f32"  # fp32, and the layers int8 leaves in float


# ------------------------------------------------------------------------------------ images
def read_image(path: Path, channels: int) -> np.ndarray:
    """(C, H, W) float32 in [0, 1]; Pillow when installed, else the PNG reader below."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
        arr = arr[..., None] if arr.ndim == 2 else arr
    else:
        arr = _png_read(path)
        if channels == 1 and arr.shape[2] == 3:  # Pillow's "L": ITU-R 601-2 luma in 16-bit fixed point
            r, g, b = (arr[..., i].astype(np.uint32) for i in range(3))
            arr = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]
        elif channels == 3 and arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        arr = arr.astype(np.float32) / 255.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def fit(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to cover `size` keeping the aspect (bicubic, needs Pillow), then center-crop."""
    h, w = pixels.shape[1:]
    th, tw = size
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        try:
            from PIL import Image
        except ImportError:
            sys.exit(f"the input is {h}x{w} but the model takes {th}x{tw}: resize it, or pip install pillow")
        planes = [
            np.asarray(Image.fromarray(p).resize((nw, nh), Image.Resampling.BICUBIC))
            for p in np.ascontiguousarray(pixels, dtype=np.float32)
        ]
        pixels = np.clip(np.stack(planes), 0.0, 1.0)
    return crop(pixels, size)


def crop(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    th, tw = size
    h, w = pixels.shape[1:]
    top, left = (h - th) // 2, (w - tw) // 2
    return np.ascontiguousarray(pixels[:, top : top + th, left : left + tw])


def grid(images: list[np.ndarray], pad: int = 2) -> np.ndarray:
    rgb = [np.repeat(im, 3, axis=0) if im.shape[0] == 1 else im for im in images]
    h, w = max(im.shape[1] for im in rgb), max(im.shape[2] for im in rgb)
    cols = math.ceil(math.sqrt(len(rgb)))
    rows = math.ceil(len(rgb) / cols)
    canvas = np.ones((3, rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i, im in enumerate(rgb):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        canvas[:, y : y + im.shape[1], x : x + im.shape[2]] = np.clip(im, 0.0, 1.0)
    return canvas


def save_image(pixels: np.ndarray, path: Path) -> None:
    """(C, H, W) in [0, 1] -> file; PNG is written here, other formats need Pillow."""
    arr = (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() == ".png":
        _png_write(tmp, arr)
    else:
        from PIL import Image

        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(tmp, format=_pil_format(path))
    tmp.replace(path)  # never a half-written picture


def _pil_format(path: Path) -> str:
    from PIL import Image

    return Image.registered_extensions()[path.suffix.lower()]


def _png_write(path: Path, arr: np.ndarray) -> None:
    h, w, c = arr.shape
    color = {1: 0, 3: 2}[c]
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(h))  # filter type 0 on every row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
    path.write_bytes(png + chunk(b"IEND", b""))


def _png_read(path: Path) -> np.ndarray:
    """8-bit, non-interlaced PNG -> H x W x (1|3) uint8 (alpha dropped, palette expanded)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path}: not a PNG (install pillow to read other formats)")
    pos, idat, palette = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if tag == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif tag == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif tag == b"IDAT":
            idat.append(body)
        elif tag == b"IEND":
            break
    if depth != 8 or interlace:
        sys.exit(
            f"{path}: {depth}-bit{' interlaced' if interlace else ''} PNG: pip install pillow to read it"
        )
    bpp = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(h, 1 + w * bpp)
    out = np.zeros((h, w * bpp), dtype=np.uint8)
    prev = np.zeros(w * bpp, dtype=np.int32)
    for y in range(h):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            row = line
        elif kind == 2:
            row = (line + prev) & 0xFF
        elif kind == 1:  # Sub: each byte adds the one bpp bytes left of it -> running sums per channel
            row = (np.cumsum(line.reshape(w, bpp), axis=0) & 0xFF).reshape(-1)
        else:  # Average and Paeth depend on the reconstructed left pixel: one pixel at a time
            row = np.zeros_like(line)
            left = np.zeros(bpp, dtype=np.int32)
            up_left = np.zeros(bpp, dtype=np.int32)
            for x in range(w):
                s = slice(x * bpp, (x + 1) * bpp)
                up = prev[s]
                if kind == 3:
                    pred = (left + up) // 2
                else:
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
                row[s] = left = (line[s] + pred) & 0xFF
                up_left = up
        out[y] = row
        prev = row
    img = out.reshape(h, w, bpp)
    if color == 3:
        return palette[img[..., 0]]
    return img[..., :3] if color in (2, 6) else img[..., :1]


# --------------------------------------------------------------------------------------- main
def multiple(model: Model) -> int:
    """What H and W must divide by for edgedistill's built-in families (1 when unknown)."""
    if model.family == "resnet":
        return 4
    if model.family == "unet":
        return 2 ** int(model.kwargs.get("num_downs", 8))
    return 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", type=Path, help="image file (image -> image models)")
    parser.add_argument("--output", type=Path, default=Path("out.png"))
    parser.add_argument("--seed", type=int, default=0, help="noise seed (noise models)")
    parser.add_argument("--count", type=int, default=1, help="images to generate (noise models): a grid")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--folder", type=Path, default=HERE, help="where manifest.json and the model are")
    args = parser.parse_args(argv)

    model = Model(args.folder, args.threads)
    lo, hi = model.input_range
    batch = 1
    if args.input is not None and args.input.suffix == ".npy":  # preprocessed: the model's first input
        xs = [np.load(args.input)]
    elif model.kind == "image":
        if args.input is None or not args.input.is_file():
            sys.exit(f"input image not found: {args.input}" if args.input else "give --input IMAGE")
        channels = model.input_shape[1] if isinstance(model.input_shape[1], int) else 3
        pixels = read_image(args.input, channels)
        if model.static_size:
            pixels = fit(pixels, model.static_size)
        else:
            m = multiple(model)
            h, w = pixels.shape[1:]
            pixels = crop(pixels, (h - h % m, w - w % m))
        xs = [(pixels[None] * (hi - lo) + lo).astype(np.float32)]
    elif model.kind == "noise":
        batch = args.count
        shape = [batch if d == "N" else d for d in model.input_shape]
        z = np.random.default_rng(args.seed).standard_normal(shape, dtype=np.float32)
        xs = [z[i : i + 1] for i in range(batch)] if model.static else [z]
    else:
        sys.exit(f"'{model.kind}' generators are not handled by this runner")

    start = time.perf_counter()
    ys = [model(x) for x in xs]
    ms = (time.perf_counter() - start) * 1000
    olo, ohi = model.output_range
    y = np.clip((np.concatenate(ys).astype(np.float32) - olo) / (ohi - olo), 0.0, 1.0)
    save_image(grid(list(y)) if len(y) > 1 else y[0], args.output)
    print(f"wrote {args.output}  ({len(xs)} call(s), {ms:.1f} ms)")


if __name__ == "__main__":
    main()
