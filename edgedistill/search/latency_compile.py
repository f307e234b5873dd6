"""A model cut into blocks and compiled as export compiles it: what the latency table times.

A candidate is exported to fp32 ONNX exactly as `export` does, cut into blocks (search/blocks.py),
and each block is compiled by the target's backend with the same quantizer and settings as export
(the target's first/last layers kept fp32 where its policy says so), so a block runs the kernels it
runs inside the exported model. The whole model is compiled the same way to be measured whole.

A student distilled quantization-aware (compress's default for INT8) is exported otherwise
(exporter/qat_export.py): no layer is kept fp32, and OpenVINO converts the QDQ ONNX instead of
running NNCF. `as_qat_export(tgt)` marks a target so that its latency table is kept apart (the mark
is one of the target's options, in the table's key) and compiles that way:
- ONNX Runtime (and TensorRT, which also take ranges): blocks and whole models with no layer kept.
  Compiled as calibration would, two photo-restore students measured +10 % and -8 % off their
  exports, compiled the QAT way within 1 % (benchmarks/qat_form.py, Zen4);
- OpenVINO: blocks and whole models as its export does, the QDQ ONNX converted (the NNCF form measured
  2-7 % fast against the export, the uniform 0.1 student 7 %). On 20 photo-restore candidates (Zen4,
  int8, benchmarks/results/latency_model_space_ov_qat.md) the QDQ-converted blocks, in their carriers,
  predicted the QDQ-converted whole within 10 % for 90 % (median error 3.5 %), NNCF blocks for 75 %
  (5.8 %). Timed alone, before carriers, QDQ-converted blocks had run at up to 10x their share of the
  whole model (a 3x3 conv at 258x258: 20 ms inside a 7.5 ms model).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.core.targets import Target
from edgedistill.search.blocks import ANCHORS, Block, block_model, constants_to_initializers, partition

if TYPE_CHECKING:
    import torch

OPSET = 17
QAT_FORM = "int8_from_qat"  # target option: compile INT8 as a QAT student's export does
CALIB_SAMPLES = 2  # block activation ranges: the scales' values do not change the kernels that run


@dataclass
class CutModel:
    """A model's fp32 export and its blocks, with what compiling a block needs."""

    proto: Any  # the fp32 ONNX, constants as initializers
    blocks: list[Block]
    shapes: dict[str, tuple[int, ...]]
    feeds: list[dict[str, np.ndarray]]  # the model inputs the block activations are taken from


def as_qat_export(tgt: Target) -> Target:
    """`tgt` marked to compile INT8 as the export of a quantization-aware student does: no layer kept
    fp32, and on a backend that calibrates itself (OpenVINO) from QDQ ONNX (module docstring)."""
    if tgt.precision != "int8" or tgt.options.get(QAT_FORM):
        return tgt
    return replace(tgt, options={**tgt.options, QAT_FORM: True})


def cut_model(
    model: torch.nn.Module, spec: GeneratorSpec, tgt: Target, size: tuple[int, int] | None, work: Path
) -> CutModel:
    """Export as `export` does, infer static shapes at `size`, cut into blocks."""
    import onnx

    from edgedistill.exporter.onnx_export import export_onnx

    work.mkdir(parents=True, exist_ok=True)
    path = work / "model.fp32.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        export_onnx(model, spec, path, size=size, dynamic=tgt.dynamic_shape, opset=OPSET)
    proto = constants_to_initializers(onnx.load_model(str(path)))
    feeds = [spec.example_arrays(size=size, batch=1, seed=s) for s in range(CALIB_SAMPLES)]
    shapes = _static_shapes(proto, feeds[0])
    fp32 = _kept_fp32(proto, tgt)
    return CutModel(proto, partition(proto, fp32, shapes), shapes, feeds)


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
    """The block in its carrier (blocks.block_model), compiled by the target's backend into `out/art`."""
    import onnx

    out.mkdir(parents=True, exist_ok=True)
    path = out / "block.onnx"
    proto, feeds = block_model(cut.proto, block, cut.shapes, OPSET)
    onnx.save_model(proto, str(path))
    calib = CalibrationSet({name: acts[t] for name, t in feeds.items()}, source="block activations")
    feed = {
        name: {"shape": list(acts[t].shape[1:]), "mean": float(acts[t].mean()), "std": float(acts[t].std())}
        for name, t in feeds.items()
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


def _compile(
    onnx_path: Path,
    tgt: Target,
    calib: CalibrationSet,
    out: Path,
    keep: Sequence[str],
    spec: GeneratorSpec | None,
) -> None:
    """backend.compile as export calls it (for a QAT-marked backend that calibrates itself: from QDQ
    ONNX, as exporter/qat_export.py does), then a manifest so the artifact loads anywhere."""
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
        if tgt.options.get(QAT_FORM) and not backend.takes_ranges:
            # the trained scales' values do not change the kernels: ranges calibrated on the samples
            from edgedistill.exporter.qat_export import compile_openvino_qdq
            from edgedistill.onnxtools.qdq import compute_ranges

            ranges = compute_ranges(onnx_path, calib, out.parent / "ranges", progress=False)
            result = compile_openvino_qdq(onnx_path, tgt, ranges, out, list(keep))
        else:
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
    weighted layers with keep_io_layers, unless the student was trained quantized); the quality gate
    may keep more, which no table can know."""
    if tgt.precision != "int8" or not tgt.options.get("keep_io_layers") or tgt.options.get(QAT_FORM):
        return []
    names = [n.name for n in proto.graph.node if n.op_type in ANCHORS]
    return list(dict.fromkeys([names[0], names[-1]])) if names else []
