"""Which ops a target really runs in INT8, read from the runtime wherever it runs here.

- ONNX Runtime (CPU EP): quantize, let ORT optimize with `optimized_model_filepath` set, and read what
  its QDQ fusions left: a Conv that became QLinearConv runs int8; a ConvTranspose still a float
  ConvTranspose between DequantizeLinear and QuantizeLinear runs fp32 (no int8 kernel: onnxruntime
  issue #8988). No hand list: a newer ORT that fuses more shows up here by itself.
- XNNPACK (ORT's ARM/mobile EP): its QDQ conv kernels take qu8 (uint8 activations and weights),
  qs8 (int8 activations, int8 weights with zero point 0, per tensor) or qc8 (int8 activations,
  per-channel int8 weights with zero point 0); ConvTranspose only per tensor (com.microsoft
  QLinearConvTranspose). Anything else stays on the CPU EP. The rules are read off the QDQ model.
- OpenVINO: the compiled model's execution graph (`compiled.get_runtime_model()`) names each
  layer's runtime precision and the original layers fused into it.
- TensorRT: its documented INT8 layers (no GPU here to ask).

The latency model (search/latency.py) measures what runs, so a fallback is costed as what it is;
this module says why and which ops, for reports and for targets measured elsewhere.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgedistill.core.errors import EdgeDistillError

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# ORT kernels that compute on 8-bit integers (CPU EP contrib ops included)
ORT_INT8_KERNELS = (
    "QLinearConv", "NhwcQLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm",
    "QLinearConvTranspose", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearSigmoid",
    "QLinearLeakyRelu", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSoftmax",
    "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
)  # fmt: skip
# TensorRT's INT8 layers with explicit Q/DQ (TensorRT Developer Guide, "Working with Quantized
# Types": Q/DQ fuse into convolution, deconvolution, fully-connected/matmul; pooling, element-wise,
# concatenation, resize, padding and activations commute with or fuse into them). Normalization
# layers and tanh run in fp16/fp32.
TENSORRT_INT8 = (
    "Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "Add",
    "Concat", "Resize", "Pad", "Relu", "LeakyRelu", "Clip", "DepthToSpace", "Transpose", "Reshape",
)  # fmt: skip


@dataclass
class Placement:
    """Where one op of the model runs: the kernel and its precision."""

    node: str
    op_type: str
    runs_as: str
    precision: str  # int8 | fp32 | ...
    note: str = ""

    def to_dict(self) -> dict[str, str]:
        return vars(self).copy()


# ------------------------------------------------------------------------------------------ ORT
def ort_placements(
    qdq_onnx: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",), arm: bool = False
) -> list[Placement]:
    """Each op of a QDQ model after ORT's optimizations: the kernel it became and its precision.

    `arm`: fuse as ORT on ARM does. ORT fuses QDQ ops with int8 (signed) activations only where
    MLAS has s8s8 kernels, i.e. on ARM (`QDQIsInt8Allowed()`); the session option
    `session.qdqisint8allowed` asks an x86 build for the same graph."""
    import onnx
    import onnxruntime as ort

    src = onnx.load_model(str(qdq_onnx))
    with tempfile.TemporaryDirectory(prefix="edgedistill-deploy-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        so.intra_op_num_threads = 1
        if arm:
            so.add_session_config_entry("session.qdqisint8allowed", "1")
        try:
            ort.InferenceSession(str(qdq_onnx), so, providers=list(providers))
        except Exception as exc:
            raise EdgeDistillError(
                f"{qdq_onnx}: onnxruntime cannot load it ({str(exc).splitlines()[0]})"
            ) from None
        opt = onnx.load_model(so.optimized_model_filepath)
    types = _tensor_types(opt)
    placed = []
    for node in src.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        matches = [
            n for n in opt.graph.node if n.name == node.name or n.name.startswith(node.name + "_token")
        ]
        if not matches:  # fused into a neighbour (e.g. Relu into QLinearConv)
            placed.append(Placement(node.name, node.op_type, "fused", "-"))
            continue
        ran = matches[0]
        int8 = ran.op_type in ORT_INT8_KERNELS or any(
            types.get(t) in ("int8", "uint8") for t in ran.input[:1]
        )
        note = ""
        if not int8 and any(p.op_type == "DequantizeLinear" for p in _producers(opt, ran)):
            note = "DequantizeLinear -> fp32 -> QuantizeLinear: no int8 kernel in this runtime"
        placed.append(Placement(node.name, node.op_type, ran.op_type, "int8" if int8 else "fp32", note))
    return placed


@lru_cache(maxsize=4)
def ort_int8_ops(form: str = "u8s8", arm: bool = False) -> dict[str, str]:
    """{op: "int8" | "fp32"} as this onnxruntime runs a QDQ model of `form` on the CPU EP (as on ARM
    with `arm`), derived by quantizing one small model holding each generator op and reading ORT's
    optimized graph."""
    import numpy as np

    from edgedistill.core.calibset import CalibrationSet
    from edgedistill.onnxtools.qdq import compute_ranges, quantize_qdq

    with tempfile.TemporaryDirectory(prefix="edgedistill-deploy-ops-") as tmp_str:
        tmp = Path(tmp_str)
        fp32 = tmp / "ops.onnx"
        _write_op_zoo(fp32)
        x = np.random.default_rng(0).standard_normal((4, 8, 16, 16)).astype(np.float32)
        ranges = compute_ranges(fp32, CalibrationSet({"x": x}), tmp / "work", threads=1, progress=False)
        qdq = quantize_qdq(fp32, tmp / "ops.qdq.onnx", ranges, form=form)
        placed = ort_placements(qdq, arm=arm)
    out: dict[str, str] = {}
    for p in placed:
        label = p.node.split("__")[0]  # zoo nodes are named "<what>__<op>"
        if p.precision != "-":
            out[label] = p.precision
    return out


def _write_op_zoo(path: Path) -> None:
    """One graph with each op a generator uses, named by what it stands for."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> Any:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.1, name)

    inits = [
        w("w_conv", 8, 8, 3, 3), w("w_dw", 8, 1, 3, 3), w("w_ct", 8, 8, 3, 3), w("w_ps", 32, 8, 3, 3),
        w("w_rc", 8, 8, 3, 3), w("in_s", 8), w("in_b", 8),
        numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales"),
    ]  # fmt: skip
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w_conv"], ["c"], name="Conv__Conv", pads=[1, 1, 1, 1]),
        n("Conv", ["c", "w_dw"], ["d"], name="DepthwiseConv__Conv", pads=[1, 1, 1, 1], group=8),
        n("InstanceNormalization", ["d", "in_s", "in_b"], ["i"], name="InstanceNormalization__IN"),
        n("Relu", ["i"], ["r"], name="Relu__Relu"),
        n("Add", ["r", "c"], ["a"], name="Add__Add"),
        n(
            "ConvTranspose",
            ["a", "w_ct"],
            ["t"],
            name="ConvTranspose__ConvTranspose",
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            output_padding=[1, 1],
        ),
        n("Conv", ["a", "w_ps"], ["p"], name="PixelShuffleConv__Conv", pads=[1, 1, 1, 1]),
        n("DepthToSpace", ["p"], ["s"], name="DepthToSpace__DepthToSpace", blocksize=2, mode="CRD"),
        n("Resize", ["a", "", "scales"], ["u"], name="Resize__Resize", mode="nearest"),
        n("Conv", ["u", "w_rc"], ["v"], name="ResizeConv__Conv", pads=[1, 1, 1, 1]),
        n("Resize", ["a", "", "scales"], ["b"], name="ResizeBilinear__Resize", mode="linear"),
        n("Concat", ["t", "s", "v", "b"], ["cat"], name="Concat__Concat", axis=1),
        n("Tanh", ["cat"], ["y"], name="Tanh__Tanh"),
    ]
    graph = helper.make_graph(
        nodes, "zoo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))


def _tensor_types(model: Any) -> dict[str, str]:
    """Element type of every tensor, propagated: Q outputs 8-bit, DQ outputs float, others as input 0."""
    from onnx import TensorProto

    names = {TensorProto.INT8: "int8", TensorProto.UINT8: "uint8", TensorProto.FLOAT: "float"}
    types = {t.name: names.get(t.data_type, "other") for t in model.graph.initializer}
    for vi in [*model.graph.input, *model.graph.value_info]:
        types[vi.name] = names.get(vi.type.tensor_type.elem_type, "other")
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            zp = node.input[2] if len(node.input) > 2 else ""
            kind = types.get(zp, "uint8")
        elif node.op_type == "DequantizeLinear":
            kind = "float"
        elif node.op_type in ORT_INT8_KERNELS and node.op_type not in (
            "MatMulIntegerToFloat",
            "DynamicQuantizeMatMul",
        ):
            kind = types.get(node.input[0], "uint8")
        else:
            kind = types.get(node.input[0], "float") if node.input else "float"
        for o in node.output:
            types.setdefault(o, kind)
    return types


def _producers(model: Any, node: Any) -> list[Any]:
    made = {o: n for n in model.graph.node for o in n.output}
    return [made[t] for t in node.input if t in made]


# ------------------------------------------------------------------------------------------ XNNPACK
def xnnpack_conv_forms(qdq_onnx: str | Path) -> list[Placement]:
    """Each QDQ Conv/ConvTranspose as XNNPACK would take it: qc8 / qs8 / qu8, or CPU EP (why)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load_model(str(qdq_onnx))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    out = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        act, wgt = made.get(node.input[0]), made.get(node.input[1])
        if (
            act is None
            or wgt is None
            or act.op_type != "DequantizeLinear"
            or wgt.op_type != "DequantizeLinear"
        ):
            out.append(Placement(node.name, node.op_type, "CPU EP", "fp32", "not quantized"))
            continue
        a_zp = inits.get(act.input[2]) if len(act.input) > 2 else None
        w_q = inits.get(wgt.input[0])
        if w_q is None and wgt.input[0] in made:  # weights quantized by a Q node at run time
            w_q = inits.get(made[wgt.input[0]].input[2]) if len(made[wgt.input[0]].input) > 2 else None
        w_zp = inits.get(wgt.input[2]) if len(wgt.input) > 2 else None
        w_scale = inits.get(wgt.input[1])
        a_signed = a_zp is not None and a_zp.dtype == np.int8
        w_signed = w_q is not None and w_q.dtype == np.int8
        w_zero = w_zp is None or not np.any(w_zp)
        per_channel = w_scale is not None and w_scale.size > 1
        if (
            a_zp is not None
            and a_zp.dtype == np.uint8
            and w_q is not None
            and w_q.dtype == np.uint8
            and not per_channel
        ):
            kind, why = "qu8", ""
        elif a_signed and w_signed and w_zero:
            if node.op_type == "ConvTranspose" and per_channel:
                kind, why = "", "QLinearConvTranspose takes per-tensor weights only"
            else:
                kind, why = ("qc8" if per_channel else "qs8"), ""
        elif not a_signed and w_signed:
            kind, why = "", "uint8 activations with int8 weights (u8s8): no XNNPACK kernel"
        else:
            kind, why = "", "weights not symmetric int8 (zero point must be 0)"
        out.append(
            Placement(
                node.name,
                node.op_type,
                f"XNNPACK {kind}" if kind else "CPU EP",
                "int8" if kind else "CPU EP",
                why,
            )
        )
    return out


# ------------------------------------------------------------------------------------------ OpenVINO
def openvino_placements(model_xml: str | Path, threads: int | None = None) -> list[Placement]:
    """Each layer of the compiled model's execution graph: type, runtime precision, what it fused."""
    import openvino as ov

    from edgedistill.backends.openvino import rt_text

    core = ov.Core()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(str(model_xml)), "CPU", config)
    out = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        layer = rt_text(rt, "layerType") or op.get_type_name()
        if layer in ("Parameter", "Result", "Input", "Output", "Const"):
            continue
        prec = rt_text(rt, "runtimePrecision")
        fused = rt_text(rt, "originalLayersNames")
        p = prec.lower()
        out.append(
            Placement(op.get_friendly_name(), layer, prec, "int8" if ("i8" in p or "u8" in p) else p, fused)
        )
    return out


# ------------------------------------------------------------------------------------------ TensorRT
def tensorrt_int8_ops(ops: Sequence[str]) -> dict[str, str]:
    """{op: "int8" | "fp16/fp32"} by TensorRT's documented INT8 layers."""
    return {op: "int8" if op in TENSORRT_INT8 else "fp16/fp32" for op in ops}


# ------------------------------------------------------------------------------------------ a target
def fallbacks(placements: Sequence[Placement]) -> list[Placement]:
    """The weighted ops (and upsampling ops) a quantized model still runs in floating point."""
    watch = (*WEIGHTED, "Resize", "DepthToSpace", "Add", "Concat")
    return [p for p in placements if p.op_type in watch and p.precision not in ("int8", "-")]


def check_target(qdq_or_ir: str | Path, target: Any) -> list[Placement]:
    """Placements of an INT8 artifact model for `target` (a core.targets.Target)."""
    if target.backend == "openvino":
        return openvino_placements(qdq_or_ir, target.threads)
    if target.backend == "onnxruntime":
        if target.options.get("qdq_form") == "xnnpack":
            return xnnpack_conv_forms(qdq_or_ir)
        return ort_placements(qdq_or_ir, arm=target.arch == "aarch64")
    if target.backend == "tensorrt":
        import onnx

        model = onnx.load_model(str(qdq_or_ir))
        ops = tensorrt_int8_ops([n.op_type for n in model.graph.node])
        return [
            Placement(n.name, n.op_type, n.op_type, ops[n.op_type])
            for n in model.graph.node
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        ]
    raise EdgeDistillError(f"no INT8 deployability rules for backend '{target.backend}'")
