"""A generator's fp32 ONNX graph cut into blocks: one weighted op with what feeds and follows it.

Why the ONNX graph and not the torch modules: it is what every backend compiles, so a block is
exactly the ops the runtime sees (ReflectionPad as Pad, PixelShuffle as DepthToSpace, nearest
upsampling as Resize), whatever family or module structure produced it.

A block is one anchor (Conv, ConvTranspose, Gemm, MatMul), the Pad/Resize ops that only feed it,
and the ops that follow it (norm, activation, residual Add, Concat, DepthToSpace, Tanh) up to the
next anchor. Blocks with the same ops, attributes, weight shapes, input shapes and precision are
the same block (a ResNet trunk is one block repeated), so each is measured once.

A block is timed in a carrier (`block_model`): between identity 1x1 convs that stand in for the
layers before and after it. Alone, a block pays for standing alone: its input arrives in the plain
layout (ORT's NHWC transposes, OpenVINO's reorders), cold in cache, on a thread pool just woken,
none of which happens inside a model. On 256x256 photo-restore students a depthwise 3x3 timed alone
at 2x its cost inside the model and a resize+conv at 1.5-1.7x (ORT int8), and the sums of a model's
blocks ran 0.94-1.7x the model; between stand-ins they summed to 1.02-1.03x (ORT int8) and
0.98-1.12x (OpenVINO int8) of the same blocks' kernels inside the model (block_timing.summarize
counts only the block's own kernels).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ANCHORS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
PRE_OPS = ("Pad", "Resize", "Upsample")  # belong to the anchor they feed (fused into it by runtimes)
SHAPING_OPS = ("Resize", "Upsample", "Pad", "Reshape", "Expand", "Tile", "Slice")
SMALL_CONST = 64  # initializers up to this many elements are part of a block's identity (pads, scales)
CARRIER = "edgedistill_carrier"  # the stand-in convs' names and their inputs' and outputs' (block_model)


@dataclass
class Block:
    """One block of a model: its nodes (by name), boundary tensors and identity."""

    key: str  # hash of the signature: equal keys measure the same
    desc: str  # e.g. "Conv 3x3 64->64 s1 @64x64 +InstanceNormalization+Relu+Add [int8]"
    nodes: list[str]
    inputs: list[str]  # tensors from outside (other blocks, the model input)
    outputs: list[str]  # tensors used outside (other blocks, the model output)
    fp32_nodes: list[str] = field(default_factory=list)  # weighted nodes export keeps in fp32
    macs: int = 0
    tensors: list[str] = field(default_factory=list)  # every tensor its nodes write (kernels name them)


def constants_to_initializers(model: Any) -> Any:
    """Constant nodes become initializers, so a block carries the constants it reads."""
    from onnx import numpy_helper

    keep = []
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.output) == 1 and node.attribute:
            attr = node.attribute[0]
            if attr.name == "value":
                t = numpy_helper.to_array(attr.t)
                model.graph.initializer.append(numpy_helper.from_array(np.asarray(t), node.output[0]))
                continue
        keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def partition(model: Any, fp32_nodes: Sequence[str], shapes: dict[str, tuple[int, ...]]) -> list[Block]:
    """Cut `model` (constants as initializers, topologically sorted) into blocks; `shapes` gives
    every activation tensor's static shape, `fp32_nodes` the nodes export keeps at fp32."""
    nodes = list(model.graph.node)
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            consumers.setdefault(t, []).append(i)
    block_of: dict[int, int] = {}
    anchors = [i for i, n in enumerate(nodes) if n.op_type in ANCHORS]
    for b, i in enumerate(anchors):
        block_of[i] = b
    # pre-ops (reverse order: a chain Pad -> Resize -> Conv resolves from the anchor back)
    for i in reversed(range(len(nodes))):
        if nodes[i].op_type in PRE_OPS and i not in block_of:
            users = {block_of.get(c) for o in nodes[i].output for c in consumers.get(o, [])}
            if len(users) == 1 and None not in users:
                block_of[i] = users.pop()  # type: ignore[assignment]
    # the rest: the latest block among the producers of its inputs (Add(skip, x) joins x's block)
    pending = []
    for i, n in enumerate(nodes):
        if i in block_of:
            continue
        owners = [block_of[producer[t]] for t in n.input if t in producer and producer[t] in block_of]
        if owners:
            block_of[i] = max(owners)
        else:
            pending.append(i)
    for i in reversed(pending):  # reads only the model input: joins the block it feeds
        users = [block_of[c] for o in nodes[i].output for c in consumers.get(o, []) if c in block_of]
        block_of[i] = min(users) if users else 0
    if not anchors:
        anchors = [0]
    graph_outputs = {o.name for o in model.graph.output}
    fp32 = set(fp32_nodes)
    blocks: list[Block] = []
    for b in range(len(anchors)):
        members = [i for i in range(len(nodes)) if block_of.get(i) == b]
        if not members:
            continue
        inside = {o for i in members for o in nodes[i].output}
        ins = list(
            dict.fromkeys(
                t for i in members for t in nodes[i].input if t and t not in inside and t not in inits
            )
        )
        outs = [
            o
            for i in members
            for o in nodes[i].output
            if o in graph_outputs or any(block_of.get(c) != b for c in consumers.get(o, []))
        ]
        names = [nodes[i].name for i in members]
        kept = [n for n in names if n in fp32]
        sig = _signature([nodes[i] for i in members], ins, inits, shapes, kept)
        blocks.append(
            Block(
                hashlib.sha1(sig.encode()).hexdigest()[:16],
                _describe([nodes[i] for i in members], ins, inits, shapes, kept),
                names,
                ins,
                outs,
                kept,
                sum(_macs(nodes[i], inits, shapes) for i in members),
                sorted(inside),
            )
        )
    return blocks


def carrier_names(block: Block) -> list[str]:
    """Every name block_model may give a stand-in conv, its weight, input or output."""
    ins = [f"{CARRIER}/{n}{i}" for i in range(len(block.inputs)) for n in ("in", "conv_in")]
    outs = [f"{CARRIER}/{n}{i}" for i in range(len(block.outputs)) for n in ("out", "conv_out")]
    return [*ins, *outs, *(f"{c}/w" for c in ins + outs if "/conv_" in c)]


def block_model(
    model: Any, block: Block, shapes: dict[str, tuple[int, ...]], opset: int
) -> tuple[Any, dict[str, str]]:
    """`block` as a standalone ONNX model in its carrier, and which block tensor each graph input
    feeds. Each image-like (4-D) input that another layer wrote in the model is written here by an
    identity 1x1 conv from a carrier input, and each 4-D output another layer reads is read by one
    (see the module docstring); the model's own inputs and outputs stay as they are."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    members = set(block.nodes)
    nodes = [n for n in model.graph.node if n.name in members]
    used = {t for n in nodes for t in n.input}
    inits = [t for t in model.graph.initializer if t.name in used]
    model_inputs = {i.name for i in model.graph.input}
    model_outputs = {o.name for o in model.graph.output}
    before, after, ins, outs, feeds = [], [], [], [], {}

    def stand_in(src: str, dst: str, channels: int, name: str) -> Any:
        weight = f"{name}/w"
        eye = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
        inits.append(numpy_helper.from_array(eye, weight))
        return helper.make_node("Conv", [src, weight], [dst], name=name)

    for i, t in enumerate(block.inputs):
        shape = list(shapes[t])
        src = t
        if len(shape) == 4 and t not in model_inputs:
            src = f"{CARRIER}/in{i}"
            before.append(stand_in(src, t, shape[1], f"{CARRIER}/conv_in{i}"))
        ins.append(helper.make_tensor_value_info(src, TensorProto.FLOAT, shape))
        feeds[src] = t
    for i, t in enumerate(block.outputs):
        shape = list(shapes[t])
        dst = t
        if len(shape) == 4 and t not in model_outputs:
            dst = f"{CARRIER}/out{i}"
            after.append(stand_in(t, dst, shape[1], f"{CARRIER}/conv_out{i}"))
        outs.append(helper.make_tensor_value_info(dst, TensorProto.FLOAT, shape))
    graph = helper.make_graph(before + nodes + after, "block", ins, outs, inits)
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    out.ir_version = model.ir_version
    onnx.checker.check_model(out)
    return out, feeds


# ------------------------------------------------------------------------------------------ identity
def _signature(
    nodes: list[Any],
    ins: list[str],
    inits: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    kept: list[str],
) -> str:
    from onnx import numpy_helper

    local = {o: f"n{k}:{j}" for k, n in enumerate(nodes) for j, o in enumerate(n.output)}
    parts = []
    for node in nodes:
        args = []
        for t in node.input:
            if not t:
                args.append("-")
            elif t in local:
                args.append(local[t])
            elif t in inits:
                arr = numpy_helper.to_array(inits[t])
                # values that change the kernels (pads, shapes, scales), never learned weights
                shaping = arr.dtype.kind in "iub" or node.op_type in SHAPING_OPS
                small = (
                    f"={np.round(arr.astype(np.float64), 6).tolist()}"
                    if shaping and arr.size <= SMALL_CONST
                    else ""
                )
                args.append(f"w{list(arr.shape)}{arr.dtype}{small}")
            else:
                args.append(f"in{ins.index(t)}{list(shapes.get(t, ()))}")
        attrs = sorted((a.name, str(_attr(a))) for a in node.attribute)
        parts.append(f"{node.op_type}({','.join(args)}){attrs}{'fp32' if node.name in kept else ''}")
    return ";".join(parts)


def _attr(a: Any) -> Any:
    from onnx import helper

    value = helper.get_attribute_value(a)
    return value.decode() if isinstance(value, bytes) else value


def _describe(
    nodes: list[Any],
    ins: list[str],
    inits: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    kept: list[str],
) -> str:
    """A person's name for the block: the anchor with its geometry, then the other ops."""
    anchor = next((n for n in nodes if n.op_type in ANCHORS), nodes[0])
    head = anchor.op_type
    if anchor.op_type in ("Conv", "ConvTranspose") and len(anchor.input) > 1 and anchor.input[1] in inits:
        w = list(inits[anchor.input[1]].dims)
        cout, cin = (w[0], w[1]) if anchor.op_type == "Conv" else (w[1], w[0])
        attrs = {a.name: _attr(a) for a in anchor.attribute}
        groups = int(attrs.get("group", 1))
        stride = (attrs.get("strides") or [1])[0]
        hw = shapes.get(anchor.input[0], ())[-2:]
        dw = " dw" if groups > 1 and groups == cout else (f" g{groups}" if groups > 1 else "")
        head = (
            f"{anchor.op_type} {w[2]}x{w[3]} {cin * (groups if anchor.op_type == 'Conv' else 1)}->{cout}"
            f" s{stride}{dw} @{'x'.join(map(str, hw))}"
        )
    others = [n.op_type for n in nodes if n is not anchor]
    tail = "".join(f"+{o}" for o in others)
    return f"{head}{tail}{' (kept fp32)' if anchor.name in kept else ''}"


def _macs(node: Any, inits: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> int:
    """Multiply-accumulates of a weighted node (0 for the rest): for the roofline view."""
    if node.op_type not in ANCHORS or len(node.input) < 2 or node.input[1] not in inits:
        return 0
    w = list(inits[node.input[1]].dims)
    out = shapes.get(node.output[0])
    if node.op_type == "Conv" and out is not None:
        return int(np.prod(out)) * int(np.prod(w[1:]))
    if node.op_type == "ConvTranspose":
        inp = shapes.get(node.input[0])
        return int(np.prod(inp)) * int(np.prod(w[1:])) if inp is not None else 0
    out_n = int(np.prod(out)) if out is not None else 0
    return out_n * int(w[0]) if node.op_type in ("Gemm", "MatMul") else 0
