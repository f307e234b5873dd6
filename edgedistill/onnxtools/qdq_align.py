"""Give int8 convs the channel counts ONNX Runtime's fast x86 kernel takes.

ORT's CPU provider runs a QDQ conv (uint8 activations, int8 weights with zero point 0) on MLAS's
indirect "symmetric" conv kernel only when its channels line up: input channels a multiple of 4,
output channels at least 16 and a multiple of 8 on AVX2 (4 with AVX-512; `MlasConvSymPackWSize`).
Anything else falls back to im2col + a generic int8 GEMM, which on a generator's narrow
high-resolution layers is slower than fp32: in a 256x256 student the 3 -> 32 first conv and the
16 -> 3 last conv took 4 of its 8 ms, where the aligned kernel takes 1.

Zero channels fix it, exactly, three ways:
- widen: a conv (or ConvTranspose) gets zero filters for the outputs it lacks, and the convs that
  read them (through Relu, spatial Pad, Resize, Q/DQ: ops that treat channels alike) get zero
  weights for them; the extra channels are zeros that nothing counts;
- slice: the last conv, whose output leaves int8 for the model output, gets zero filters and a
  Slice of its int8 output back to the real channels;
- pad: a conv reading the model input (3 colour channels) gets zero weights for one more channel
  and a Pad of its int8 input; the input is still NCHW there, so the pad is one cheap copy (in the
  middle of the graph ORT runs NHWC, where a channel pad costs a slow strided pass).
Depthwise convs (16-channel groups) are left as they are. "slice" and "pad" touch the model's edges
only and are what export does by default; "widen" (opt-in, target option align_int8_channels =
"widen") also makes narrow middles faster (18-21 % on two of seven students measured), but the search's
blocks, timed in carriers whose stand-in convs can always be widened, then price whole models wrong
(20 random students: 45 % within 10 % of their measured latency, against 90 % for the edges alone;
benchmarks/results/latency_model_align_{edges,widen}.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

INPUT_ALIGN = 4  # KernelInputChannelAlignment
MIN_OUTPUTS = 16  # FilterOutputChannelPackCount: fewer output channels take the slow path
OUTPUT_ALIGN = 8  # KernelOutputChannelAlignment on AVX2 (AVX-512 takes 4): 8 suits every x86 CPU
CHANNELWISE = {"Relu", "LeakyRelu", "Clip"}  # as they are; Q/DQ, Pad, Resize and norms: _channelwise
# norms: their per-channel parameters grow with the channels (copies of the first: the extra channels
# only need finite values, since the convs reading them weigh them by zero); how many inputs are such
PER_CHANNEL = {"InstanceNormalization": 2, "BatchNormalization": 4}
TO_OUTPUT = {"DequantizeLinear", "Tanh", "Sigmoid", "Relu", "Clip", "Identity"}


def _up(n: int, align: int) -> int:
    return -(-n // align) * align


def aligned_outputs(cout: int) -> int:
    return max(MIN_OUTPUTS, _up(cout, OUTPUT_ALIGN))


@dataclass(frozen=True)
class Aligned:
    """One conv's (input, output) channels before and after."""

    node: str
    cin: tuple[int, int]
    cout: tuple[int, int]

    def text(self) -> str:
        parts = [f"{what} {a} -> {b}" for what, (a, b) in (("in", self.cin), ("out", self.cout)) if a != b]
        return f"{self.node}: {', '.join(parts)}"


class _Graph:
    """Lookups over a model's graph, kept current by the rewrite."""

    def __init__(self, model: Any) -> None:
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.users: dict[str, list[Any]] = {}
        for n in self.graph.node:
            for i in n.input:
                self.users.setdefault(i, []).append(n)
        self.outputs = {o.name for o in self.graph.output}
        self.inputs = {i.name for i in self.graph.input}

    def array(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def set_array(self, name: str, value: np.ndarray) -> None:
        from onnx import numpy_helper

        self.inits[name].CopyFrom(numpy_helper.from_array(value, name))

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.inits[name] = self.graph.initializer[-1]
        return name

    def insert(self, anchor: Any, node: Any, after: bool) -> None:
        at = next(i for i, n in enumerate(self.graph.node) if n is anchor) + int(after)
        self.graph.node.insert(at, node)
        for o in node.output:
            self.producer[o] = node
        for i in node.input:
            self.users.setdefault(i, []).append(node)

    def rewire(self, old: str, new: str) -> None:
        """Every reader of `old` reads `new` instead."""
        moved = self.users.pop(old, [])
        for user in moved:
            user.input[:] = [new if t == old else t for t in user.input]
        self.users.setdefault(new, []).extend(moved)

    def per_tensor(self, qdq: Any) -> bool:
        scale = self.array(qdq.input[1]) if len(qdq.input) > 1 else None
        return scale is not None and scale.size == 1


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _grow(a: np.ndarray, axis: int, to: int, fill: Any = 0) -> np.ndarray:
    shape = list(a.shape)
    shape[axis] = to - a.shape[axis]
    return np.concatenate([a, np.full(shape, fill, a.dtype)], axis=axis)


class _Weighted:
    """A QDQ Conv / ConvTranspose whose int8 weights (zero point 0) are its own."""

    def __init__(self, g: _Graph, node: Any) -> None:
        self.g, self.node = g, node
        self.w_dq = g.producer[node.input[1]]
        self.out_axis = 1 if node.op_type == "ConvTranspose" else 0

    @staticmethod
    def of(g: _Graph, node: Any) -> _Weighted | None:
        if (
            node.op_type not in ("Conv", "ConvTranspose")
            or len(node.input) < 2
            or _attr(node, "group", 1) != 1
        ):
            return None
        x_dq, w_dq = g.producer.get(node.input[0]), g.producer.get(node.input[1])
        if x_dq is None or w_dq is None or {x_dq.op_type, w_dq.op_type} != {"DequantizeLinear"}:
            return None
        w = g.array(w_dq.input[0])
        zp = g.array(w_dq.input[2]) if len(w_dq.input) > 2 else np.zeros(1, np.int8)
        if w is None or w.dtype != np.int8 or w.ndim != 4 or zp is None or np.any(zp):
            return None
        if len(g.users.get(node.input[1], [])) != 1 or len(g.users.get(w_dq.input[0], [])) != 1:
            return None
        return _Weighted(g, node)

    @property
    def weights(self) -> np.ndarray:
        return self.g.array(self.w_dq.input[0])

    @property
    def cin(self) -> int:
        return int(self.weights.shape[1 - self.out_axis])

    @property
    def cout(self) -> int:
        return int(self.weights.shape[self.out_axis])

    def grow_inputs(self, to: int) -> None:
        self.g.set_array(self.w_dq.input[0], _grow(self.weights, 1 - self.out_axis, to))

    def grow_outputs(self, to: int) -> None:
        """Zero filters up to `to` outputs; per-channel scales copy the first (zeros stay zeros)."""
        g, cout = self.g, self.cout
        axis = int(_attr(self.w_dq, "axis", 1))
        for i, is_scale in ((1, True), (2, False)):
            a = g.array(self.w_dq.input[i]) if len(self.w_dq.input) > i else None
            if a is not None and a.ndim == 1 and a.size == cout and a.size > 1 and axis == self.out_axis:
                g.set_array(self.w_dq.input[i], _grow(a, 0, to, a[0] if is_scale else 0))
        g.set_array(self.w_dq.input[0], _grow(self.weights, self.out_axis, to))
        if len(self.node.input) > 2 and self.node.input[2]:
            b_dq = g.producer.get(self.node.input[2])
            names = list(b_dq.input) if b_dq is not None else [self.node.input[2]]
            for i, name in enumerate(names):
                a = g.array(name)
                if a is not None and a.ndim == 1 and a.size == cout:
                    g.set_array(name, _grow(a, 0, to, a[0] if i == 1 else 0))


def _output_q(g: _Graph, node: Any) -> Any | None:
    """The per-tensor QuantizeLinear that alone reads `node`'s output, else None."""
    users = g.users.get(node.output[0], [])
    if len(users) != 1 or users[0].op_type != "QuantizeLinear" or node.output[0] in g.outputs:
        return None
    return users[0] if g.per_tensor(users[0]) and users[0].output[0] not in g.outputs else None


def _channelwise(g: _Graph, node: Any) -> bool:
    """Does `node` treat every channel alike (so zero channels pass through, uncounted)?"""
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        return g.per_tensor(node)
    if node.op_type == "Pad":
        pads = g.array(node.input[1]) if len(node.input) > 1 else None
        axes = node.input[3] if len(node.input) > 3 else ""
        return pads is not None and not axes and pads.size == 8 and pads[1] == 0 and pads[5] == 0
    if node.op_type == "Resize":
        scales = g.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        sizes = node.input[3] if len(node.input) > 3 else ""
        return scales is not None and not sizes and scales.size == 4 and scales[1] == 1
    if node.op_type in PER_CHANNEL:
        return _norm_params(g, node)
    return node.op_type in CHANNELWISE


def _norm_params(g: _Graph, norm: Any) -> bool:
    """Are a norm's per-channel parameters constants (initializers, or a DequantizeLinear of
    them), which the rewrite can copy grown for it alone?"""
    for p in norm.input[1 : 1 + PER_CHANNEL[norm.op_type]]:
        dq = g.producer.get(p)
        if dq is None and g.array(p) is None:
            return False
        if dq is not None and (dq.op_type != "DequantizeLinear" or any(g.array(i) is None for i in dq.input)):
            return False
    return True


def _grow_norm(g: _Graph, norm: Any, to: int) -> None:
    """Give `norm` its own copies of its per-channel parameters, grown to `to` channels (copies of
    the first: the extra channels need only finite values, as the convs reading them weigh them
    by zero). Copies, because the exporter shares one constant between norms of one width."""
    from onnx import helper

    def grown(name: str) -> str:
        a = g.array(name)
        if a is None or a.ndim != 1 or a.size <= 1:
            return name
        return g.constant(f"{name}_align{to}_{norm.name}", _grow(a, 0, to, a[0]))

    for i in range(1, 1 + PER_CHANNEL[norm.op_type]):
        dq = g.producer.get(norm.input[i])
        if dq is None:
            norm.input[i] = grown(norm.input[i])
            continue
        out = f"{norm.input[i]}_align{to}_{norm.name}"
        g.insert(norm, helper.make_node("DequantizeLinear", [grown(n) for n in dq.input], [out],
                                        name=out, axis=_attr(dq, "axis", 1)), after=False)  # fmt: skip
        norm.input[i] = out


@dataclass
class _Readers:
    """What widening a tensor's channels touches: the convs that read it, the norms on the way."""

    convs: list[_Weighted]
    norms: list[Any]

    def grow(self, g: _Graph, cout: int, to: int) -> None:
        for r in self.convs:
            r.grow_inputs(r.cin + to - cout)
        for norm in self.norms:
            _grow_norm(g, norm, to)


def _readers(g: _Graph, tensor: str) -> _Readers | None:
    """The Convs reading `tensor` through channel-wise ops; None if anything else reads it."""
    found = _Readers([], [])
    todo, seen = [tensor], set()
    while todo:
        t = todo.pop()
        if t in g.outputs:
            return None
        for user in g.users.get(t, []):
            if id(user) in seen:
                continue
            seen.add(id(user))
            if user.op_type in ("Conv", "ConvTranspose"):
                return None  # a conv reading it without a DequantizeLinear of its own
            if user.op_type == "DequantizeLinear" and g.per_tensor(user):
                convs = [u for u in g.users.get(user.output[0], []) if u.op_type == "Conv"]
                others = [u for u in g.users.get(user.output[0], []) if u.op_type != "Conv"]
                for conv in convs:
                    reader = _Weighted.of(g, conv)
                    if reader is None or conv.input[0] != user.output[0] or reader.node.op_type != "Conv":
                        return None
                    found.convs.append(reader)
                for other in others:
                    if not _channelwise(g, other):
                        return None
                    if other.op_type in PER_CHANNEL:
                        found.norms.append(other)
                    todo.extend(other.output)
                continue
            if not _channelwise(g, user):
                return None
            if user.op_type in PER_CHANNEL:
                found.norms.append(user)
            todo.extend(user.output)
    return found


def _leaves_to_output(g: _Graph, tensor: str) -> bool:
    """Is `tensor` read only by element-wise fp32 ops that end in model outputs?"""
    todo = [tensor]
    while todo:
        t = todo.pop()
        users = g.users.get(t, [])
        if not users:
            if t not in g.outputs:
                return False
            continue
        for user in users:
            if user.op_type not in TO_OUTPUT or len(user.output) != 1:
                return False
            todo.append(user.output[0])
    return True


def _slice_channels(g: _Graph, q: Any, keep: int) -> None:
    from onnx import helper

    base = f"{q.output[0]}_align"
    consts = [
        g.constant(f"{base}_{k}", np.array([v], np.int64))
        for k, v in (("starts", 0), ("ends", keep), ("axes", 1))
    ]
    out = f"{base}_sliced"
    g.rewire(q.output[0], out)
    g.insert(q, helper.make_node("Slice", [q.output[0], *consts], [out], name=f"{base}_slice"), after=True)


def _from_model_input(g: _Graph, conv: Any) -> Any | None:
    """The input DQ of `conv` if its int8 tensor comes from a model input's Q (through spatial
    int8 Pads only: still NCHW when ORT runs it), else None."""
    dq = g.producer.get(conv.input[0])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    node = g.producer.get(dq.input[0])
    while node is not None and node.op_type == "Pad" and _channelwise(g, node):
        node = g.producer.get(node.input[0])
    if node is None or node.op_type != "QuantizeLinear" or node.input[0] not in g.inputs:
        return None
    return dq


def _pad_input(g: _Graph, conv: Any, dq: Any, extra: int) -> None:
    from onnx import helper

    base = f"{dq.output[0]}_align"
    pads = g.constant(f"{base}_pads", np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64))
    zp = dq.input[2] if len(dq.input) > 2 else ""
    pad = helper.make_node(
        "Pad", [dq.input[0], pads, zp][: 3 if zp else 2], [f"{base}_int8"], name=f"{base}_pad"
    )
    new_dq = helper.make_node(
        "DequantizeLinear", [f"{base}_int8", *dq.input[1:]], [f"{base}"], name=f"{base}_dq"
    )
    g.insert(conv, pad, after=False)
    g.insert(conv, new_dq, after=False)
    g.users[dq.output[0]] = [u for u in g.users.get(dq.output[0], []) if u is not conv]
    conv.input[0] = base
    g.users.setdefault(base, []).append(conv)


def align_int8_convs(model: Any, widen: bool = True) -> list[Aligned]:
    """Rewrite `model` (a QDQ graph) in place so its int8 convs meet ORT's x86 kernel; what changed.
    widen=False: only the model's edges (the conv reading its input, the one writing its output)."""
    g = _Graph(model)
    weighted = [w for n in g.graph.node if (w := _Weighted.of(g, n)) is not None]
    before = {w.node.name: (w.cin, w.cout) for w in weighted}
    for w in weighted:
        q = _output_q(g, w.node)
        if q is None:
            continue
        cout = w.cout
        readers = _readers(g, q.output[0])
        if (
            widen and readers and readers.convs
        ):  # widen: readers need inputs in fours, a conv its outputs aligned
            want = max(_up(cout, INPUT_ALIGN), aligned_outputs(cout) if w.node.op_type == "Conv" else 0)
            if want != cout:
                w.grow_outputs(want)
                readers.grow(g, cout, want)
        elif (
            w.node.op_type == "Conv"
            and aligned_outputs(cout) != cout
            and w.cin % INPUT_ALIGN == 0  # else the kernel still refuses it
            and _leaves_to_output(g, q.output[0])
        ):
            w.grow_outputs(aligned_outputs(cout))
            _slice_channels(g, q, cout)
    for w in weighted:
        outputs_fit = (
            w.cout >= MIN_OUTPUTS and w.cout % OUTPUT_ALIGN == 0
        )  # else padding its input is for nothing
        dq = (
            _from_model_input(g, w.node)
            if w.node.op_type == "Conv" and w.cin % INPUT_ALIGN and outputs_fit
            else None
        )
        if dq is not None:
            to = _up(w.cin, INPUT_ALIGN)
            _pad_input(g, w.node, dq, to - w.cin)
            w.grow_inputs(to)
    done = [
        Aligned(w.node.name, (before[w.node.name][0], w.cin), (before[w.node.name][1], w.cout))
        for w in weighted
        if (w.cin, w.cout) != before[w.node.name]
    ]
    if done:  # shapes recorded for the grown tensors no longer hold; ORT infers them again
        del g.graph.value_info[:]
    return done
