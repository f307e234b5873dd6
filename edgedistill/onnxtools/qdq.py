"""Static INT8 QDQ quantization whose calibration runs once.

The quality gate and the sensitivity ranking re-quantize one model many times, each time with
other layers kept in fp32. Calibration (running the model on every sample and histogramming every
activation) is the slow part and does not depend on which layers are kept, so `compute_ranges`
measures activation ranges once and `quantize_qdq` hands them to ONNX Runtime's quantizer through
its calibration cache (`quantize_static(calibration_cache_path=...)`): no recalibration.

Both work on the `quant_pre_process`ed model (shape inference + basic optimization), whose tensor
names the ranges refer to. No torch here.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.core.atomic import write_atomic, write_text_atomic
from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.hashing import file_sha256
from edgedistill.core.jsonfile import read_json
from edgedistill.core.targets import QDQ_FORMS
from edgedistill.onnxtools.checks import copy_metadata, load_onnx_checked
from edgedistill.onnxtools.quiet import quiet

QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Entropy with ORT's defaults (128 bins into 128 quantized bins) has a single candidate threshold,
# the full range, so it equals MinMax. These give KL-divergence a real choice at a bearable cost
# (ORT's search is a Python loop over bins: 2048 bins take ~10x longer than 512).
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 512, 128
PERCENTILE_BINS = 2048
_ORT_METHOD = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# The QDQ forms a runtime executes in int8 (anything else runs as DQ -> fp32 -> Q):
#   "u8s8"    uint8 activations, int8 symmetric weights: ORT's x86 CPU EP (QLinearConv, VNNI/AVX2 u8s8)
#   "xnnpack" int8 activations (any zero point), int8 symmetric per-channel weights (zero point 0),
#             ConvTranspose weights per tensor: XNNPACK's qs8/qc8 conv and its per-tensor
#             QLinearConvTranspose (onnxruntime/core/providers/xnnpack); ARM/mobile targets use it
#   "s8s8"    int8 activations with zero point 0 too: TensorRT (`symmetric_activations`)


@dataclass
class TensorRanges:
    """Calibrated (min, max) of every activation tensor, by name in the pre-processed model."""

    method: str
    percentile: float
    ranges: dict[str, tuple[float, float]]
    source_sha256: str
    # Where this run pre-processed the model (reused while it runs); a scratch path, so never saved.
    preprocessed: str | None = field(default=None, compare=False)
    samples: int = 0
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ranges"] = {k: [float(lo), float(hi)] for k, (lo, hi) in self.ranges.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorRanges:
        try:
            d = dict(d)
            d.pop("preprocessed", None)  # an older file's scratch path: gone, or now someone else's
            d["ranges"] = {k: (float(v[0]), float(v[1])) for k, v in d["ranges"].items()}
            return cls(**d)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise EdgeDistillError(
                f"not a calibration range cache ({exc}): delete it to recalibrate"
            ) from None

    def save(self, path: str | Path) -> Path:
        d = {k: v for k, v in self.to_dict().items() if k != "preprocessed"}
        return write_text_atomic(path, json.dumps(d, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TensorRanges:
        missing = f"calibration range cache not found: {path}"
        return cls.from_dict(read_json(path, missing=missing, fix="delete it to recalibrate"))


def quantizable_nodes(onnx_path: str | Path) -> list[str]:
    """Names of the Conv / ConvTranspose / Gemm / MatMul nodes, in graph order."""
    model = load_onnx_checked(onnx_path, check=False)
    return [n.name for n in model.graph.node if n.op_type in QUANTIZABLE_OPS]


def quantized_nodes(onnx_path: str | Path) -> list[str]:
    """Every node ONNX Runtime's QDQ quantizer puts int8 around, in graph order: the weighted layers
    and the activation ops (InstanceNormalization, Add, Pad, Resize, Concat, ...). Where the error of
    an INT8 model sits in activations (around InstanceNorm and residual adds), only these can say so."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = set(QDQRegistry) | set(QLinearOpsRegistry) | set(QUANTIZABLE_OPS)
    model = load_onnx_checked(onnx_path, check=False)
    return [n.name for n in model.graph.node if n.op_type in ops]


# ------------------------------------------------------------------------------------------ ranges
def compute_ranges(
    fp32_onnx: str | Path,
    calib: CalibrationSet,
    work_dir: str | Path,
    *,
    threads: int | None = None,
    chunk: int = 4,
    progress: bool = True,
) -> TensorRanges:
    """Run ORT's calibrator for `calib.method` once over `calib`; the ranges are reusable and JSON-able."""
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if calib is None:
        raise EdgeDistillError(
            "INT8 needs calibration data: give --calib-data (or use a teacher with a recipe)"
        )
    if calib.method not in _ORT_METHOD:
        raise EdgeDistillError(
            f"calibration method must be one of {', '.join(_ORT_METHOD)}, not '{calib.method}'"
        )
    t0 = time.perf_counter()
    fp32_onnx, work_dir = Path(fp32_onnx), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    pre = preprocess(fp32_onnx, work_dir / "model.preprocessed.onnx")
    options: dict[str, Any] = {}
    if calib.method == "entropy":
        options = {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}
    elif calib.method == "percentile":
        options = {"num_bins": PERCENTILE_BINS, "percentile": float(calib.percentile), "symmetric": True}
    op_types = sorted(set(QDQRegistry) | set(QLinearOpsRegistry))
    with quiet():
        try:
            calibrator = create_calibrator(
                pre,
                op_types,
                augmented_model_path=str(work_dir / "model.augmented.onnx"),
                calibrate_method=CalibrationMethod[_ORT_METHOD[calib.method]],
                extra_options=options,
            )
        except Exception as exc:
            raise EdgeDistillError(f"cannot prepare {fp32_onnx} for calibration: {_first(exc)}") from None
    # ORT's calibrator session takes every core and spins; use the caller's thread budget instead.
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads or 0
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    calibrator.infer_session = ort.InferenceSession(
        calibrator.augmented_model_path, so, providers=["CPUExecutionProvider"]
    )
    expected = {i.name for i in calibrator.infer_session.get_inputs()}
    if set(calib.arrays) != expected:
        raise EdgeDistillError(
            f"calibration set has inputs {sorted(calib.arrays)} but {fp32_onnx.name} takes {sorted(expected)}"
        )
    with progress_bar(progress, f"calibrating ({calib.method})", len(calib)) as advance, quiet():
        for batch in _chunks(calib, chunk):
            try:
                calibrator.collect_data(_Reader(batch))
            except Exception as exc:
                raise EdgeDistillError(f"calibration run of {fp32_onnx.name} failed: {_first(exc)}") from None
            advance(len(batch))
        tensors = calibrator.compute_data()
    # A range may come as a 0-d or a 1-element array; a tensor never seen (e.g. an empty one) gives (0, 0).
    ranges = {
        k: (float(np.min(td.range_value[0])), float(np.max(td.range_value[1]))) for k, td in tensors.items()
    }
    return TensorRanges(
        calib.method,
        float(calib.percentile),
        ranges,
        file_sha256(fp32_onnx),
        str(pre),
        len(calib),
        round(time.perf_counter() - t0, 3),
        {
            "calibration": {k: v for k, v in calib.meta.items() if k != "cached"}
        },  # no paths: see build_calibration
    )


_PREPROCESS_LOCK = threading.Lock()


def preprocess(fp32_onnx: Path, out: Path) -> Path:
    """ORT's quant_pre_process (optimization + shape inference); symbolic inference is skipped if it fails."""
    from onnxruntime.quantization import quant_pre_process

    load_onnx_checked(fp32_onnx, check=False)  # one clear line for a bad file, and no escaping external data
    # ORT's symbolic shape inference, when incomplete, saves its half-done model into the current
    # directory before raising (sym_shape_infer_temp.onnx + a <uuid>.data): it runs in a private
    # temporary directory, so neither the user's folder nor a parallel run's collects them (the
    # working directory is process-wide: one pre-process at a time)
    src, dst = Path(fp32_onnx).resolve(), Path(out).resolve()
    last: Exception | None = None
    with (
        _PREPROCESS_LOCK,
        tempfile.TemporaryDirectory(prefix="edgedistill-preprocess-") as scratch,
        contextlib.chdir(scratch),
    ):
        for skip_symbolic in (False, True):
            try:
                with quiet():
                    quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip_symbolic)
                return out
            except Exception as exc:
                last = exc
    raise EdgeDistillError(f"cannot pre-process {fp32_onnx} for quantization: {_first(last)}")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ quantize
def quantize_qdq(
    fp32_onnx: str | Path,
    out: str | Path,
    ranges: TensorRanges,
    *,
    exclude: Sequence[str] = (),
    per_channel: bool = True,
    symmetric_activations: bool = False,
    only: Sequence[str] | None = None,
    form: str | None = None,
) -> Path:
    """Write a QDQ model: int8 weights (per output channel), uint8 activations or, with
    `symmetric_activations`, int8 with zero point 0 (what TensorRT wants); `form` names one of
    QDQ_FORMS instead ("xnnpack": what XNNPACK runs on ARM). Nodes in `exclude` stay fp32; `only`
    quantizes just those nodes (the sensitivity ranking's one-layer-at-a-time)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    fp32_onnx, out = Path(fp32_onnx), Path(out)
    method = CalibrationMethod[_ORT_METHOD[ranges.method]]
    with tempfile.TemporaryDirectory(prefix="edgedistill-qdq-") as tmp_str:
        tmp = Path(tmp_str)
        pre = _reuse_preprocessed(fp32_onnx, ranges, tmp)
        model = onnx.load_model(str(pre), load_external_data=False)
        names = {n.name for n in model.graph.node}
        unknown = [n for n in [*exclude, *(only or [])] if n not in names]
        if unknown:
            raise EdgeDistillError(
                f"{fp32_onnx.name} has no node(s) {', '.join(unknown[:4])}: name nodes of the model being quantized"
            )
        tensors = {v for n in model.graph.node for v in [*n.input, *n.output]}
        missing = [t for t in ranges.ranges if t not in tensors]
        if missing:
            raise EdgeDistillError(
                f"the calibration ranges name {len(missing)} tensor(s) {fp32_onnx.name} lacks "
                f"(e.g. {missing[0]}): they were measured on another model; recalibrate"
            )
        act_type, options = _form_options(form or ("s8s8" if symmetric_activations else "u8s8"), model)
        cache = tmp / "ranges.ort.json"
        data = {k: TensorData(lowest=_f32(lo), highest=_f32(hi)) for k, (lo, hi) in ranges.ranges.items()}
        save_tensors_data(TensorsData(method, data), cache)
        raw = tmp / "model.qdq.onnx"
        with quiet():
            try:
                quantize_static(
                    str(pre),
                    str(raw),
                    calibration_data_reader=None,
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    activation_type=QuantType.QInt8 if act_type == "int8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(exclude),
                    nodes_to_quantize=list(only) if only else None,
                    calibrate_method=method,
                    calibration_cache_path=str(cache),
                    extra_options=options,
                )
            except Exception as exc:
                raise EdgeDistillError(
                    f"INT8 quantization of {fp32_onnx.name} failed: {_first(exc)}"
                ) from None
        qmodel = onnx.load_model(str(raw))
        copy_metadata(onnx.load_model(str(fp32_onnx), load_external_data=False), qmodel)
        return write_atomic(out, lambda p: onnx.save_model(qmodel, str(p)))


def _form_options(form: str, model: Any) -> tuple[str, dict[str, Any]]:
    """Activation type and ORT quantizer extra_options for a QDQ form (see QDQ_FORMS)."""
    if form not in QDQ_FORMS:
        raise EdgeDistillError(f"QDQ form must be one of {', '.join(QDQ_FORMS)}, not '{form}'")
    if form == "u8s8":
        return "uint8", {"ActivationSymmetric": False, "WeightSymmetric": True}
    if form == "s8s8":
        return "int8", {"ActivationSymmetric": True, "WeightSymmetric": True}
    # xnnpack: XNNPACK's QLinearConvTranspose takes one weight scale: its weights per tensor.
    inits = {t.name for t in model.graph.initializer}
    per_tensor = {
        n.input[1]: [{"symmetric": True}]
        for n in model.graph.node
        if n.op_type == "ConvTranspose" and len(n.input) > 1 and n.input[1] in inits
    }
    options: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if per_tensor:
        options["TensorQuantOverrides"] = per_tensor
    return "int8", options


def _reuse_preprocessed(fp32_onnx: Path, ranges: TensorRanges, tmp: Path) -> Path:
    """The pre-processed model the ranges were measured on when it is still there, else redo it."""
    pre = Path(ranges.preprocessed) if ranges.preprocessed else None
    if pre is not None and pre.is_file() and ranges.source_sha256 == file_sha256(fp32_onnx):
        return pre
    return preprocess(fp32_onnx, tmp / "model.preprocessed.onnx")


# ------------------------------------------------------------------------------------------ helpers
class _Reader:
    """ORT's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._it, None)


def _chunks(calib: CalibrationSet, chunk: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for sample in calib.samples(1):
        batch.append(sample)
        if len(batch) == chunk:
            yield batch
            batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def progress_bar(show: bool, what: str, total: int) -> Iterator[Any]:
    """A transient rich bar on stderr; yields `advance(n)`. Ctrl-C ends it cleanly."""
    if not show:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def _f32(x: float) -> Any:
    import numpy as np

    return np.float32(x)


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
