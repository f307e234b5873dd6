"""Latency per target from measured blocks: predicted = sum of blocks + a measured per-model overhead.

    predict_latency(student, spec, "x86-onnxruntime", "int8", (256, 256))   -> ms
    measure_latency(student, spec, "x86-onnxruntime", "int8", (256, 256))   -> ms (whole model)

A candidate is exported to fp32 ONNX exactly as `export` does, cut into blocks (search/blocks.py),
and each block not yet in the table is compiled by the target's backend with the same quantizer and
settings as export (the target's first/last layers kept fp32 where its policy says so) and timed
kernel by kernel on the target (search/block_timing.py), here or over SSH. An op the runtime does
not run in int8 (ORT's ConvTranspose: DQ -> fp32 -> Q) is measured as what runs, so it is costed
as the fallback it is. The table is cached per target, precision, host, threads and runtime
version; the search reuses it across every candidate with the same blocks.

A whole model is not the sum of its blocks: the session call, the output copy and the gaps between
kernels add, and cutting a model into blocks adds (layout reorders and profiling at every block
edge, fusions a block cannot make). So predicted = a + b * kernels + c * blocks, fitted once per
table on reference models measured whole and by blocks. The references span the search space's
choices (block type, upsampling op, stem kernel, widths): fitted on plain ResNets only, the model
charged every kernel of a depthwise-separable candidate as a plain ResNet's, and ORT fp32 held
±10 % for 45 % of 20 random candidates; fitted on varied ones, 97 % in cross-validation on the same
measurements (benchmarks/latency_model.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec, spec_for_family
from edgedistill.core.targets import Target, get_target
from edgedistill.search.block_timing import BlockTiming, summarize, time_local, time_remote
from edgedistill.search.blocks import ANCHORS, Block, block_model, constants_to_initializers, partition

if TYPE_CHECKING:
    import torch

TABLE_FORMAT = 3  # 3: the whole-model fit has a scale on the blocks (c)
OPSET = 17
CALIB_SAMPLES = 2  # block activation ranges: the scales' values do not change the kernels that run
BLOCK_CALLS, BLOCK_SECONDS = 15, 0.15  # per block: short, medians keep it steady
WHOLE_MIN_TIME = 1.5
# reference models the whole-model fit is made on, by generator kind: (family, kwargs of each)
_R = "resnet"
REFERENCES = {
    "image": (
        _R,
        (
            {"ngf": 8, "n_blocks": 2},
            {"ngf": 16, "n_blocks": 4},
            {"ngf": 24, "n_blocks": 6},
            {
                "widths": [8, 16, 32, 16, 8],
                "n_blocks": 3,
                "upsample": "nearest",
                "kernel": 3,
                "block": "dwsep",
            },
            {"widths": [12, 24, 48, 24, 12], "n_blocks": 2, "upsample": "bilinear", "kernel": 7},
            {
                "widths": [16, 32, 32, 32, 16],
                "n_blocks": 5,
                "upsample": "pixelshuffle",
                "kernel": 3,
                "block": "dwsep",
            },
            {"widths": [8, 12, 24, 12, 8], "n_blocks": 6, "upsample": "convtranspose", "block": "dwsep"},
            {"widths": [24, 48, 48, 24, 24], "n_blocks": 1, "upsample": "pixelshuffle", "kernel": 7},
        ),
    ),
    "noise": ("dcgan", ({"ngf": 16}, {"ngf": 32}, {"ngf": 48})),
}
MIN_REFS_FOR_SCALE = 5  # fewer references fit a and b only (c = 1): three points cannot pin three terms


@dataclass
class Prediction:
    """A predicted latency and what it is made of."""

    ms: float
    blocks_ms: float
    overhead_ms: float
    kernels: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # per distinct block: desc, count, ms, precision
    table: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ms": round(self.ms, 4),
            "blocks_ms": round(self.blocks_ms, 4),
            "overhead_ms": round(self.overhead_ms, 4),
            "kernels": self.kernels,
            "rows": self.rows,
            "table": self.table,
        }


# ------------------------------------------------------------------------------------------ public
def predict_latency(
    model: torch.nn.Module,
    spec: GeneratorSpec,
    target: str | Path | Target,
    precision: str | None = None,
    size: tuple[int, int] | None = None,
    host: str | None = None,
    **options: Any,
) -> float:
    """Predicted ms of one inference of `model` on `target` at `precision` (see `predict`)."""
    return predict(model, spec, target, precision, size, host, **options).ms


def predict(
    model: torch.nn.Module,
    spec: GeneratorSpec,
    target: str | Path | Target,
    precision: str | None = None,
    size: tuple[int, int] | None = None,
    host: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
    progress: bool = True,
    ssh: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    overhead: bool = True,
) -> Prediction:
    """Blocks of `model` from the table (measuring the missing ones) + the table's overhead.

    `host` (user@device[:port]) measures on a device over SSH; `ssh` holds run_remote's options
    (options, identity, python, timeout). `overhead=False` leaves the overhead out (no reference
    models are measured; the sum of blocks alone)."""
    tgt = _target(target, precision)
    size = _size(spec, tgt, size)
    table = LatencyTable.open(tgt, host, threads, cache_dir)
    with tempfile.TemporaryDirectory(prefix="edgedistill-latency-") as work_str:
        work = Path(work_str)
        cut = cut_model(model, spec, tgt, size, work)
        missing = _unique([b for b in cut.blocks if table.block(b.key) is None])
        if missing:
            measure_blocks(cut, missing, tgt, table, work, host, threads, progress, ssh, log)
        if overhead and table.overhead(spec.kind, size) is None:
            fit_overhead(table, spec.kind, size, tgt, host, threads, progress, ssh, log)
    return table.predict(cut.blocks, spec.kind, size, with_overhead=overhead)


def measure_latency(
    model: torch.nn.Module,
    spec: GeneratorSpec,
    target: str | Path | Target,
    precision: str | None = None,
    size: tuple[int, int] | None = None,
    host: str | None = None,
    *,
    threads: int | None = None,
    min_time: float = WHOLE_MIN_TIME,
    ssh: dict[str, Any] | None = None,
) -> float:
    """Measured p50 ms of the whole `model`, compiled as export compiles it (same settings)."""
    return measure_models(
        [model], [spec], target, precision, size, host, threads=threads, min_time=min_time, ssh=ssh
    )[0]


def measure_models(
    models: Sequence[torch.nn.Module],
    specs: Sequence[GeneratorSpec],
    target: str | Path | Target,
    precision: str | None = None,
    size: tuple[int, int] | None = None,
    host: str | None = None,
    *,
    threads: int | None = None,
    min_time: float = WHOLE_MIN_TIME,
    ssh: dict[str, Any] | None = None,
    kernels: list[int] | None = None,
) -> list[float]:
    """p50 ms of each whole model, measured in interleaved rounds in one session (runtime/session.py).
    `kernels`, when given, receives how many kernels each compiled model runs."""
    tgt = _target(target, precision)
    with tempfile.TemporaryDirectory(prefix="edgedistill-latency-whole-") as work_str:
        work = Path(work_str)
        dirs = []
        for i, (model, spec) in enumerate(zip(models, specs, strict=True)):
            sz = _size(spec, tgt, size)
            dirs.append(compile_whole(model, spec, tgt, sz, work / f"m{i}"))
        return _time_whole(dirs, tgt, host, threads, min_time, ssh, kernels)


# ------------------------------------------------------------------------------------------ the table
class LatencyTable:
    """Per-block ms and the overhead fit for one target + precision + host + threads + runtime."""

    def __init__(self, path: Path, meta: dict[str, Any], data: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.data = data

    @classmethod
    def open(
        cls, tgt: Target, host: str | None, threads: int | None, cache_dir: str | Path | None = None
    ) -> LatencyTable:
        runtime = _runtime_version(tgt.backend) if host is None else None
        meta = {
            "format": TABLE_FORMAT,
            "target": tgt.name,
            "precision": tgt.precision,
            "backend": tgt.backend,
            "host": host or f"local:{platform.node()}",
            "threads": threads or tgt.threads,
            "runtime": runtime,
            "options": tgt.options,
        }
        digest = hashlib.sha1(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:10]
        name = f"{tgt.name}-{tgt.precision}-{_slug(meta['host'])}-{digest}.json"
        path = Path(cache_dir or default_cache_dir()) / name
        data: dict[str, Any] = {"blocks": {}, "overhead": {}}
        if path.is_file():
            try:
                old = json.loads(path.read_text())
                if old.get("meta") == json.loads(json.dumps(meta, default=str)):
                    data = {"blocks": old.get("blocks", {}), "overhead": old.get("overhead", {})}
            except (OSError, json.JSONDecodeError):
                pass  # a broken cache is remeasured, never trusted
        return cls(path, meta, data)

    def block(self, key: str) -> dict[str, Any] | None:
        return self.data["blocks"].get(key)

    def put_block(self, block: Block, timing: BlockTiming) -> None:
        self.data["blocks"][block.key] = {"desc": block.desc, "macs": block.macs, **timing.to_dict()}

    def overhead(self, kind: str, size: tuple[int, int] | None) -> dict[str, Any] | None:
        return self.data["overhead"].get(_io_key(kind, size))

    def put_overhead(self, kind: str, size: tuple[int, int] | None, fit: dict[str, Any]) -> None:
        self.data["overhead"][_io_key(kind, size)] = fit

    def save(self) -> Path:
        text = json.dumps({"meta": self.meta, **self.data}, indent=1, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(self.path, text)

    def predict(
        self, blocks: Sequence[Block], kind: str, size: tuple[int, int] | None, with_overhead: bool = True
    ) -> Prediction:
        rows: dict[str, dict[str, Any]] = {}
        total, kernels = 0.0, 0
        for b in blocks:
            entry = self.block(b.key)
            if entry is None:
                raise EdgeDistillError(f"block {b.desc} is not in {self.path}: measure it first")
            total += entry["ms"]
            kernels += entry["kernels"]
            row = rows.setdefault(
                b.key, {"block": entry["desc"], "count": 0, "ms": entry["ms"], "precision": _main(entry)}
            )
            row["count"] += 1
        fit = (self.overhead(kind, size) if with_overhead else None) or {"a": 0.0, "b": 0.0, "c": 1.0}
        ms = whole_ms(fit, total, kernels)
        return Prediction(ms, total, ms - total, kernels, list(rows.values()), str(self.path))


def default_cache_dir() -> Path:
    root = os.environ.get("EDGEDISTILL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgedistill"
    )
    return Path(root) / "latency"


# ------------------------------------------------------------------------------------------ steps
@dataclass
class CutModel:
    proto: Any  # the fp32 ONNX, constants as initializers
    blocks: list[Block]
    shapes: dict[str, tuple[int, ...]]
    feeds: list[dict[str, np.ndarray]]  # the model inputs the block activations are taken from


def cut_model(
    model: torch.nn.Module, spec: GeneratorSpec, tgt: Target, size: tuple[int, int] | None, work: Path
) -> CutModel:
    """Export as `export` does, infer static shapes at `size`, cut into blocks."""
    import onnx

    from edgedistill.exporter.onnx_export import export_onnx

    path = work / "model.fp32.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        export_onnx(model, spec, path, size=size, dynamic=tgt.dynamic_shape, opset=OPSET)
    proto = constants_to_initializers(onnx.load_model(str(path)))
    feeds = [spec.example_arrays(size=size, batch=1, seed=s) for s in range(CALIB_SAMPLES)]
    shapes = _static_shapes(proto, feeds[0])
    fp32 = _kept_fp32(proto, tgt)
    return CutModel(proto, partition(proto, fp32, shapes), shapes, feeds)


def measure_blocks(
    cut: CutModel,
    blocks: Sequence[Block],
    tgt: Target,
    table: LatencyTable,
    work: Path,
    host: str | None,
    threads: int | None,
    progress: bool = True,
    ssh: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Compile each block as export would and time it; the table is saved after each block."""
    from edgedistill.onnxtools.qdq import progress_bar

    acts = _activations(cut, blocks)
    dirs: list[Path] = []
    with progress_bar(
        progress, f"compiling {len(blocks)} block(s) for {tgt.name} {tgt.precision}", len(blocks)
    ) as advance:
        for i, b in enumerate(blocks):
            dirs.append(compile_block(cut, b, acts, tgt, work / f"b{i}"))
            advance(1)
    time_blocks(blocks, dirs, tgt, table, host, threads, progress, ssh, log)


def time_blocks(
    blocks: Sequence[Block],
    dirs: Sequence[Path],
    tgt: Target,
    table: LatencyTable,
    host: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    ssh: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Time compiled blocks (compile_block's folders) and put them in `table` (saved as it goes)."""
    from edgedistill.onnxtools.qdq import progress_bar

    threads = threads or tgt.threads
    feeds = [_load_feed(d) for d in dirs]
    if host is not None:
        kernels = time_remote(host, [d / "art" for d in dirs], feeds, threads, BLOCK_CALLS, ssh, log)
        for b, ks in zip(blocks, kernels, strict=True):
            table.put_block(b, summarize(ks, b.inputs, b.outputs))
        table.save()
        return
    with progress_bar(
        progress, f"timing {len(blocks)} block(s) on {tgt.name} {tgt.precision}", len(blocks)
    ) as advance:
        for b, d, feed in zip(blocks, dirs, feeds, strict=True):
            ks = time_local(d / "art", feed, threads, BLOCK_CALLS, BLOCK_SECONDS)
            table.put_block(b, summarize(ks, b.inputs, b.outputs))
            table.save()
            advance(1)


def _load_feed(d: Path) -> dict[str, np.ndarray]:
    """Random inputs with each block input's shape, mean and spread: a few numbers travel, not
    megabytes of activations (what the kernels cost does not hang on the values)."""
    rng = np.random.default_rng(0)
    spec = json.loads((d / "feed.json").read_text())
    return {
        t: (rng.standard_normal([1, *v["shape"]]) * v["std"] + v["mean"]).astype(np.float32)
        for t, v in spec.items()
    }


def compile_block(cut: CutModel, block: Block, acts: dict[str, np.ndarray], tgt: Target, out: Path) -> Path:
    """The block as a standalone ONNX model, compiled by the target's backend into `out/art`."""
    import onnx

    out.mkdir(parents=True, exist_ok=True)
    path = out / "block.onnx"
    onnx.save_model(block_model(cut.proto, block, cut.shapes, OPSET), str(path))
    calib = CalibrationSet({t: acts[t] for t in block.inputs}, source="block activations")
    feed = {
        t: {"shape": list(acts[t].shape[1:]), "mean": float(acts[t].mean()), "std": float(acts[t].std())}
        for t in block.inputs
    }
    (out / "feed.json").write_text(json.dumps(feed))
    _compile(path, tgt, calib, out / "art", block.fp32_nodes, None)
    return out


def compile_whole(
    model: torch.nn.Module,
    spec: GeneratorSpec,
    tgt: Target,
    size: tuple[int, int] | None,
    out: Path,
    onnx_path: Path | None = None,
) -> Path:
    """The whole model compiled as export compiles it (its target policy's fp32 layers included);
    `onnx_path`: its fp32 export already made (cut_model's `work/model.fp32.onnx`)."""
    import onnx

    from edgedistill.exporter.onnx_export import export_onnx

    out.mkdir(parents=True, exist_ok=True)
    path = onnx_path or out / "model.fp32.onnx"
    if onnx_path is None:
        with contextlib.redirect_stdout(io.StringIO()):
            export_onnx(model, spec, path, size=size, dynamic=tgt.dynamic_shape, opset=OPSET)
    feeds = [spec.example_arrays(size=size, batch=1, seed=s) for s in range(CALIB_SAMPLES)]
    calib = CalibrationSet(
        {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}, source="random inputs"
    )
    _compile(path, tgt, calib, out / "art", _kept_fp32(onnx.load_model(str(path)), tgt), spec)
    return out / "art"


def fit_overhead(
    table: LatencyTable,
    kind: str,
    size: tuple[int, int] | None,
    tgt: Target,
    host: str | None,
    threads: int | None,
    progress: bool = True,
    ssh: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure the reference models whole and by blocks; fit whole = a + b * kernels + c * blocks."""
    from edgedistill.models.registry import create

    family, variants = REFERENCES.get(kind, REFERENCES["image"])
    models, specs, preds = [], [], []
    for kw in variants:
        spec = spec_for_family(family, kw)
        if kind == "image" and size:
            spec.default_size = tuple(size)  # type: ignore[assignment]
        models.append(create(family, **kw))
        specs.append(spec)
    with tempfile.TemporaryDirectory(prefix="edgedistill-latency-ref-") as work_str:
        work = Path(work_str)
        for i, (m, s) in enumerate(zip(models, specs, strict=True)):
            cut = cut_model(m, s, tgt, size if kind == "image" else None, work / f"r{i}")
            missing = _unique([b for b in cut.blocks if table.block(b.key) is None])
            if missing:
                measure_blocks(cut, missing, tgt, table, work / f"r{i}", host, threads, progress, ssh, log)
            preds.append(table.predict(cut.blocks, kind, size))
    wall = measure_models(
        models, specs, tgt, None, size if kind == "image" else None, host, threads=threads, ssh=ssh
    )
    fit = overhead_fit([p.kernels for p in preds], [p.blocks_ms for p in preds], wall)
    fit["references"] = [
        {
            "family": family,
            "kwargs": kw,
            "measured_ms": round(w, 4),
            "blocks_ms": round(p.blocks_ms, 4),
            "kernels": p.kernels,
        }
        for kw, w, p in zip(variants, wall, preds, strict=True)
    ]
    table.put_overhead(kind, size, fit)
    table.save()
    return fit


def overhead_fit(
    kernels: Sequence[int], blocks_ms: Sequence[float], whole: Sequence[float]
) -> dict[str, Any]:
    """Least squares whole-model ms = a + b * kernels + c * blocks' ms over the references.

    With fewer than MIN_REFS_FOR_SCALE references, or a scale outside (0.25, 2) (a fit to noise),
    c stays 1 and the residual is fitted as a + b * kernels, with a negative per-kernel cost
    (noise again) falling back to the mean residual."""
    k = np.asarray(kernels, dtype=np.float64)
    s = np.asarray(blocks_ms, dtype=np.float64)
    y = np.asarray(whole, dtype=np.float64)
    if len(y) >= MIN_REFS_FOR_SCALE:
        (a, b, c), *_ = np.linalg.lstsq(np.c_[np.ones_like(k), k, s], y, rcond=None)
        if 0.25 < c < 2:
            return {"a": float(a), "b": float(b), "c": float(c)}
    r = y - s
    a, b = float(np.mean(r)), 0.0
    if len(set(k.tolist())) > 1:
        slope, icept = np.polyfit(k, r, 1)
        if slope >= 0:
            a, b = float(icept), float(slope)
    return {"a": a, "b": b, "c": 1.0}


def whole_ms(fit: dict[str, Any], blocks_ms: float, kernels: int) -> float:
    """A whole model's predicted ms from its blocks' sum and kernel count (see overhead_fit)."""
    return fit["a"] + fit["b"] * kernels + fit.get("c", 1.0) * blocks_ms


# ------------------------------------------------------------------------------------------ helpers
def _compile(
    onnx_path: Path,
    tgt: Target,
    calib: CalibrationSet,
    out: Path,
    keep: Sequence[str],
    spec: GeneratorSpec | None,
) -> None:
    """backend.compile as export calls it, then a manifest so the artifact loads anywhere."""
    from edgedistill.backends import get_backend
    from edgedistill.exporter.manifest import target_dict, write_manifest

    backend = get_backend(tgt.backend)
    why = backend.available()
    if why is not None and not backend.compiles_offline:
        raise EdgeDistillError(f"target {tgt.name} needs {tgt.backend}, which cannot be compiled here: {why}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with _quiet_compile():
        result = backend.compile(
            onnx_path, tgt, calib if tgt.precision == "int8" else None, out, keep_higher=list(keep)
        )
    write_manifest(
        out,
        {
            "format": 1,
            "backend": tgt.backend,
            "precision": result.precision,
            "files": result.files,
            "target": target_dict(tgt),
            "spec": spec.to_dict() if spec is not None else None,
            "backend_info": result.extra,
            "kept_higher_precision": result.kept_higher_precision,
        },
    )


@contextlib.contextmanager
def _quiet_compile() -> Any:
    """NNCF and ORT's quantizer print progress bars per compile: hundreds of blocks would flood."""
    import logging

    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        nncf_log.setLevel(level)


def _time_whole(
    dirs: Sequence[Path],
    tgt: Target,
    host: str | None,
    threads: int | None,
    min_time: float,
    ssh: dict[str, Any] | None,
    kernels: list[int] | None,
) -> list[float]:
    from edgedistill.core.artifact import load_artifact
    from edgedistill.runtime.session import ProfileOptions, run_profile
    from edgedistill.runtime.sources import artifact_source

    sources = [artifact_source(load_artifact(d), str(d), f"m{i}") for i, d in enumerate(dirs)]
    layers = 1_000_000 if kernels is not None else 0
    opts = ProfileOptions(
        threads=threads or tgt.threads,
        warmup=3,
        iterations=10,
        min_time=min_time,
        layers=layers,
        layer_calls=5,
        roofline=False,
    )
    if host is None:
        report = run_profile(sources, opts)
    else:
        from edgedistill.profiler.remote import run_remote

        ssh = ssh or {}
        report = run_remote(
            host, sources, opts, ssh_options=ssh.get("options", ()), identity=ssh.get("identity"),
            remote_python=ssh.get("python", "python3"), timeout=ssh.get("timeout"),
        )  # fmt: skip
    out = []
    for res in report.models:
        if res.stats is None:
            raise EdgeDistillError(f"{res.name} did not run on {host or 'this machine'}: {res.skipped}")
        out.append(float(res.stats.p50))
        if kernels is not None:
            kernels.append(len(res.layers))
    return out


def _activations(cut: CutModel, blocks: Sequence[Block]) -> dict[str, np.ndarray]:
    """Every boundary tensor of `blocks` on the sample inputs (N = CALIB_SAMPLES): the block inputs
    a block is calibrated and fed with are the ones it sees in the model."""
    import onnx
    import onnxruntime as ort

    wanted = list(dict.fromkeys(t for b in blocks for t in b.inputs))
    model = onnx.ModelProto()
    model.CopyFrom(cut.proto)
    have = {o.name for o in model.graph.output}
    inputs = {i.name for i in model.graph.input}
    for t in wanted:
        if t not in have and t not in inputs:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    acts: dict[str, list[np.ndarray]] = {}
    for feed in cut.feeds:
        outs = dict(zip(names, sess.run(names, feed), strict=True))
        for t in wanted:
            acts.setdefault(t, []).append(feed[t] if t in feed else outs[t])
    return {t: np.concatenate(v).astype(np.float32) for t, v in acts.items()}


def _static_shapes(proto: Any, feed: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape at the sample input's size (ONNX shape inference on a fixed-size copy)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for inp in model.graph.input:
        if inp.name in feed:
            dims = inp.type.tensor_type.shape.dim
            for d, n in zip(dims, feed[inp.name].shape, strict=True):
                d.ClearField("dim_param")
                d.dim_value = int(n)
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _kept_fp32(proto: Any, tgt: Target) -> list[str]:
    """What export keeps at fp32 by the target's policy (exporter/api.py: the first and last
    weighted layers with keep_io_layers); the quality gate may keep more, which no table can know."""
    if tgt.precision != "int8" or not tgt.options.get("keep_io_layers"):
        return []
    names = [n.name for n in proto.graph.node if n.op_type in ANCHORS]
    return list(dict.fromkeys([names[0], names[-1]])) if names else []


def _target(target: str | Path | Target, precision: str | None) -> Target:
    if isinstance(target, Target):
        return target.with_precision(precision)
    return get_target(target, precision)


def _size(spec: GeneratorSpec, tgt: Target, size: tuple[int, int] | None) -> tuple[int, int] | None:
    if spec.kind != "image":
        return None
    return tuple(size or tgt.input_size or spec.default_size or (256, 256))  # type: ignore[return-value]


def _unique(blocks: Sequence[Block]) -> list[Block]:
    seen: dict[str, Block] = {}
    for b in blocks:
        seen.setdefault(b.key, b)
    return list(seen.values())


def _main(entry: dict[str, Any]) -> str:
    mix = entry.get("precision") or {}
    return max(mix, key=mix.get) if mix else ""


def _io_key(kind: str, size: tuple[int, int] | None) -> str:
    return f"{kind}@{size[0]}x{size[1]}" if size else kind


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)[:60]


def _runtime_version(backend: str) -> str | None:
    from edgedistill.core.versions import installed_versions

    return installed_versions([backend]).get(backend)
