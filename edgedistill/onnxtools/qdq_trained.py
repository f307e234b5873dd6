"""Where ONNX Runtime's QDQ quantizer puts int8, by torch module, and QDQ models with trained scales.

Quantization-aware distillation trains fake-quantization at exactly the tensors the exporter's INT8
path quantizes. Rather than restate ONNX Runtime's rules (it drops a Relu after a Conv and quantizes
the Relu's output, gives a Pad's output the same scale as its input, quantizes a residual Add's
inputs and output), `topology` asks the quantizer itself: it quantizes the model with placeholder
ranges and reads back which activation tensors got a QuantizeLinear. The legacy torch exporter names
nodes after the module scope they come from (`/model/model.10/conv_block/conv_block.5/Conv`), so
each such tensor maps back to the torch module whose output it is: the point where training puts
its fake-quantizer.

`trained_ranges` goes the other way at export: the trained (scale, zero point) of each point become
the ranges the same quantizer is handed, so the QDQ model carries the trained scales rather than
freshly calibrated ones. No torch here.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.hashing import file_sha256
from edgedistill.onnxtools.checks import load_onnx_checked
from edgedistill.onnxtools.qdq import TensorRanges, preprocess, quantize_qdq

INPUT = ""  # the point of a graph input: the model's own input
ACT_QMIN, ACT_QMAX = 0, 255  # ONNX Runtime's default activations: uint8, asymmetric
# ops whose output ONNX Runtime's QDQ quantizer gives its input's scale (QDQDirect8BitOp, QDQPad, QDQResize),
# and the permutations DepthToSpace / SpaceToDepth: calibrated, their output spans their input's range;
# trained with a quantizer of its own, it would not, and ORT would run them DQ -> fp32 -> Q
_PASS_VALUES = ("Pad", "Resize", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice",
                "MaxPool", "AveragePool", "DepthToSpace", "SpaceToDepth")  # fmt: skip
# of them, those whose output falls between the input's levels: the int8 model rounds it again
_REQUANTIZING = ("Resize", "AveragePool")


@dataclass
class Topology:
    """The quantized activations of one ONNX model, as torch module points."""

    points: dict[str, str]  # tensor (in the pre-processed model) -> module path ("" = graph input)
    aliases: dict[str, str] = field(default_factory=dict)  # a Pad's output -> the tensor it copies
    # module whose output is rounded again with another tensor's scale (a bilinear Resize) -> that tensor
    shared: dict[str, str] = field(default_factory=dict)
    weighted_inputs: dict[str, str] = field(default_factory=dict)  # Conv module -> its input's point
    preprocessed: str | None = None

    def point_of(self, tensor: str) -> str:
        while tensor in self.aliases:
            tensor = self.aliases[tensor]
        return self.points[tensor]


def topology(fp32_onnx: str | Path, work_dir: str | Path | None = None) -> Topology:
    """Quantize `fp32_onnx` with placeholder ranges and map each quantized activation to a module."""
    import onnx

    fp32_onnx = Path(fp32_onnx)
    with tempfile.TemporaryDirectory(prefix="edgedistill-qdq-topology-") as tmp_str:
        tmp = Path(work_dir) if work_dir else Path(tmp_str)
        tmp.mkdir(parents=True, exist_ok=True)
        pre = preprocess(fp32_onnx, tmp / "model.preprocessed.onnx")
        model = onnx.load_model(str(pre), load_external_data=False)
        ranges = TensorRanges("minmax", 99.99, _placeholder_ranges(model), file_sha256(fp32_onnx), str(pre))
        qdq = onnx.load_model(str(quantize_qdq(fp32_onnx, tmp / "topology.qdq.onnx", ranges)))
        inputs = {i.name for i in model.graph.input}
        producer = {o: n for n in model.graph.node for o in n.output}
        order = {n.name: i for i, n in enumerate(model.graph.node)}
        initializers = {i.name for i in qdq.graph.initializer}
        quantized = [
            n.input[0]
            for n in qdq.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in initializers
        ]
        topo = Topology({}, preprocessed=str(pre) if work_dir else None)
        for tensor in dict.fromkeys(quantized):
            if tensor in inputs:
                topo.points[tensor] = INPUT
                continue
            node = producer.get(tensor)
            if node is None:
                raise EdgeDistillError(f"quantized tensor {tensor} has no producer in {fp32_onnx.name}")
            if node.op_type in _PASS_VALUES and node.input[0] in producer.keys() | inputs:
                topo.aliases[tensor] = node.input[0]
                if node.op_type in _REQUANTIZING:
                    # a resize that is not its own module's output stays unrounded (exact for nearest)
                    with contextlib.suppress(EdgeDistillError):
                        topo.shared[_module_of(node, model, order)] = node.input[0]
                continue
            topo.points[tensor] = _module_of(node, model, order)
        # which point feeds each weighted layer (its bias is quantized with that scale)
        q_producer = {o: n for n in qdq.graph.node for o in n.output}
        for n in qdq.graph.node:
            if n.op_type not in ("Conv", "ConvTranspose"):
                continue
            dq = q_producer.get(n.input[0])
            q = q_producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear":
                continue
            src = q.input[0]
            module = module_path(n.name)
            if module is not None:
                topo.weighted_inputs[module] = topo.point_of(src)
    for tensor, point in topo.points.items():
        if point is None:
            raise EdgeDistillError(f"cannot tell which module makes {tensor}")
    return topo


def module_path(node_name: str) -> str | None:
    """'/model/model.10/conv_block/conv_block.5/Conv' -> 'model.10.conv_block.5' (the legacy
    exporter's scope: a child of a Sequential shows as 'parent.index')."""
    segments = [s for s in node_name.split("/") if s][:-1]
    if not node_name.startswith("/") or not segments:
        return None
    path, leaf = segments[0], segments[0]
    for seg in segments[1:]:
        child = seg[len(leaf) + 1 :] if seg.startswith(leaf + ".") else seg
        path, leaf = f"{path}.{child}", seg
    return path


def _module_of(node: Any, model: Any, order: dict[str, int]) -> str:
    """The module whose output `node` makes: its scope, provided it is that scope's last node."""
    path = module_path(node.name)
    if path is None:
        raise EdgeDistillError(
            f"node {node.name!r} carries no module scope: quantization-aware training needs the model "
            "exported by torch's legacy exporter (edgedistill's own export)"
        )
    scope = node.name.rsplit("/", 1)[0] + "/"
    last = max((order[n.name] for n in model.graph.node if n.name.startswith(scope)), default=-1)
    if order[node.name] != last:
        raise EdgeDistillError(
            f"quantized tensor {node.output[0]} is made inside module {path}, not at its output: "
            "quantization-aware training supports models whose quantized tensors are module outputs"
        )
    return path


def _placeholder_ranges(model: Any) -> dict[str, tuple[float, float]]:
    """A range for every tensor; non-negative where a Relu made it (the quantizer removes a Relu
    only when its range allows)."""
    out: dict[str, tuple[float, float]] = {i.name: (-1.0, 1.0) for i in model.graph.input}
    for n in model.graph.node:
        for o in n.output:
            out[o] = (0.0, 1.0) if n.op_type == "Relu" else (-1.0, 1.0)
    return out


# ------------------------------------------------------------------------------------------ export
def point_range(scale: float, zero_point: int) -> tuple[float, float]:
    """The float32 (min, max) from which ONNX Runtime's quantizer (`compute_scale_zp`: float64
    arithmetic on the float32 range, scale stored as float32) recomputes exactly this float32 scale
    and zero point. The nearest range can miss the scale by an ulp, which flips rounding ties; so the
    max is nudged an ulp at a time until it reproduces it."""
    import numpy as np

    s32 = np.float32(scale)
    lo = np.float32(float(ACT_QMIN - zero_point) * float(s32))
    hi = np.float32(float(ACT_QMAX - zero_point) * float(s32))
    for _ in range(64):
        got = np.float32((np.float64(max(hi, 0)) - np.float64(min(lo, 0))) / float(ACT_QMAX - ACT_QMIN))
        if got == s32:
            break
        hi = np.nextafter(hi, np.float32(np.inf if got < s32 else -np.inf))
    return float(lo), float(hi)


def trained_ranges(
    fp32_onnx: str | Path,
    scales: Mapping[str, tuple[float, int]],
    work_dir: str | Path,
    *,
    levels: Mapping[str, int] | None = None,
    symmetric: bool = False,
) -> tuple[TensorRanges, Topology]:
    """TensorRanges for `fp32_onnx` whose quantized tensors carry the trained `scales` (module point ->
    (scale, zero point)); every other tensor gets a placeholder the quantizer never uses.

    `symmetric` (TensorRT's int8 with zero point 0) cannot hold an asymmetric scale: each tensor gets
    the range its trained quantizer really spans (`levels` steps from its zero point), and the
    quantizer symmetrizes that."""
    import onnx

    fp32_onnx, work_dir = Path(fp32_onnx), Path(work_dir)
    topo = topology(fp32_onnx, work_dir)
    pre = Path(topo.preprocessed or "")
    model = onnx.load_model(str(pre), load_external_data=False)
    ranges = _placeholder_ranges(model)
    missing = []
    for tensor in [*topo.points, *topo.aliases]:
        point = topo.point_of(tensor)
        if point not in scales:
            missing.append(f"{tensor} ({point or 'input'})")
            continue
        scale, zp = scales[point]
        if symmetric:
            steps = (levels or {}).get(point, ACT_QMAX - ACT_QMIN)
            ranges[tensor] = (-zp * scale, (steps - zp) * scale)
        else:
            ranges[tensor] = point_range(scale, zp)
    if missing:
        raise EdgeDistillError(
            f"the trained quantization scales lack {len(missing)} tensor(s) this export quantizes "
            f"(e.g. {missing[0]}): the student changed since its QAT phase; re-run it (--qat-steps)"
        )
    meta = {"qat": True, "points": len(topo.points), "symmetric": symmetric}
    tr = TensorRanges("minmax", 99.99, ranges, file_sha256(fp32_onnx), str(pre), meta=meta)
    return tr, topo


def read_activation_scales(qdq_onnx: str | Path) -> dict[str, tuple[float, int]]:
    """(scale, zero point) of every quantized activation of a QDQ model, by the tensor it quantizes."""
    from onnx import numpy_helper

    model = load_onnx_checked(qdq_onnx, check=False)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out: dict[str, tuple[float, int]] = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            zp = int(inits[n.input[2]].reshape(-1)[0]) if len(n.input) > 2 and n.input[2] else 0
            out[n.input[0]] = (float(inits[n.input[1]].reshape(-1)[0]), zp)
    return out
