"""Make ONNX Runtime's QDQ model into the explicit-quantization ONNX TensorRT parses.

ONNX Runtime's quantizer stores weights as int8 initializers and biases as int32 initializers, each
behind a DequantizeLinear. TensorRT's parser dequantizes activations only: an int32 bias DQ fails
with "only activation types allowed as input to this layer" (onnx/onnx-tensorrt#850,
NVIDIA/TensorRT#3360), and TensorRT 8.x rejects the int8-weight DQ the same way. NVIDIA's own
tools (pytorch-quantization, ModelOpt) write float biases and float weights behind a Q/DQ pair,
which every TensorRT from 8.x parses. This rewrites to that form; the arithmetic is unchanged
(weights re-quantize to the same int8 values), so ONNX Runtime computes the same outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.core.atomic import write_atomic
from edgedistill.core.errors import EdgeDistillError


def prepare_for_tensorrt(path: Path) -> dict[str, int]:
    """Rewrite `path` in place: float biases, float weights + Q/DQ pairs, unused opset domains dropped."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    new_inits: list[Any] = []
    drop_inits: set[str] = set()
    nodes: list[Any] = []
    counts = {"float_biases": 0, "weight_qdq_pairs": 0}
    for node in graph.node:
        src = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if (
            src is None
            or src.data_type not in (onnx.TensorProto.INT32, onnx.TensorProto.INT8)
            or uses[src.name] != 1
        ):
            nodes.append(node)
            continue
        value = _dequantize(node, inits)
        if src.data_type == onnx.TensorProto.INT32:  # a bias: plain float, the DQ goes
            new_inits.append(numpy_helper.from_array(value, node.output[0]))
            drop_inits.add(src.name)
            counts["float_biases"] += 1
            continue
        float_name = f"{src.name}_float"  # a weight: float initializer -> Q -> (the same int8) -> DQ
        new_inits.append(numpy_helper.from_array(value, float_name))
        drop_inits.add(src.name)
        axis = [a for a in node.attribute if a.name == "axis"]
        quant = helper.make_node(
            "QuantizeLinear", [float_name, *node.input[1:]], [src.name], name=f"{node.name}_weight_quantize"
        )
        quant.attribute.extend(axis)
        nodes.extend([quant, node])
        counts["weight_qdq_pairs"] += 1
    left = [n.name for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].data_type == onnx.TensorProto.INT32 and n.input[0] not in drop_inits]  # fmt: skip
    if left:
        raise EdgeDistillError(
            f"{path.name}: int32 DequantizeLinear '{left[0]}' (a shared bias?) TensorRT cannot parse"
        )
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name not in drop_inits]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    still_used = {n.input[i] for n in graph.node for i in range(len(n.input))}
    unused = [t for t in graph.initializer if t.name not in still_used and t.name not in _outputs(graph)]
    for t in unused:  # scales/zero points only the removed bias DQs read
        graph.initializer.remove(t)
    domains = {n.domain for n in graph.node} | {""}
    opsets = [o for o in model.opset_import if o.domain in domains or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    write_atomic(path, lambda p: onnx.save_model(model, str(p)))
    return counts


def _outputs(graph: Any) -> set[str]:
    return {o.name for o in graph.output}


def _dequantize(node: Any, inits: dict[str, Any]) -> np.ndarray:
    """(q - zero_point) * scale for a DequantizeLinear whose inputs are all initializers."""
    from onnx import numpy_helper

    q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    zp_name = node.input[2] if len(node.input) > 2 else ""
    zp = (
        numpy_helper.to_array(inits[zp_name]).astype(np.float64) if zp_name in inits else np.zeros_like(scale)
    )
    if scale.size > 1:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale).astype(np.float32)


def check_symmetric_qdq(path: Path) -> dict[str, int]:
    """Every Q/DQ must be int8 with zero point 0 (TensorRT rejects uint8 and non-zero zero points)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {t.name: t for t in proto.graph.initializer}
    consts = {
        n.output[0]: a.t
        for n in proto.graph.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value"
    }
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0, "per_channel": 0}
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts[node.op_type] += 1
        zp_name = node.input[2] if len(node.input) > 2 else ""
        zp = inits.get(zp_name) or consts.get(zp_name)
        if zp is None:
            raise EdgeDistillError(
                f"{path.name}: {node.op_type} '{node.name}' has no constant zero point (ONNX then means uint8): "
                "TensorRT needs int8 Q/DQ with zero point 0"
            )
        values = numpy_helper.to_array(zp)
        if zp.data_type != onnx.TensorProto.INT8 or np.any(values != 0):
            raise EdgeDistillError(
                f"{path.name}: {node.op_type} '{node.name}' is {onnx.TensorProto.DataType.Name(zp.data_type)} "
                f"with zero point {values.ravel()[:4].tolist()}: TensorRT needs symmetric int8 (zero point 0)"
            )
        counts["per_channel"] += int(values.size > 1)
    if not counts["QuantizeLinear"]:
        raise EdgeDistillError(f"{path.name}: no QuantizeLinear node: nothing was quantized")
    return counts
