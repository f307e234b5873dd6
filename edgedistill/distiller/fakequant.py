"""The fake-quantized student QAT trains: ONNX Runtime's INT8 arithmetic, placed where its quantizer places it.

- BatchNorm folded into the conv before it (as the ONNX export folds it), from frozen statistics;
- weights: symmetric per output channel, int8 in [-127, 127], scale max|w| / 127 (ONNX Runtime's
  rule, so re-quantizing the trained weights at export gives the same int8 values);
- biases: int32 at the input's scale times the weight's (ONNX Runtime's QDQ Conv);
- activations: per tensor, uint8 asymmetric, at the tensors ONNX Runtime's quantizer picks
  (`onnxtools.qdq_trained.topology`: the graph input, each Relu / residual Add / un-activated conv
  output); a reflect Pad copies values, so its input's quantizer covers it. Ranges start from
  min/max over calibration inputs and are then learned (LSQ+: scale and zero point by gradient).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.models.ops import SepConv
from edgedistill.onnxtools.qdq_trained import ACT_QMAX, ACT_QMIN, INPUT, Topology, topology

W_QMAX = 127
# The graph input's quantizer spans 126 steps (uint8 values 0..126), fixed after calibration. x86
# CPUs without VNNI (AVX2, AVX-512F) multiply uint8 x int8 pairs into int16 (vpmaddubsw), which
# saturates above 32767: 2 x 255 x 127 does, 2 x 126 x 127 does not. Measured on Zen3 (AVX2): a tiny
# ResNet's first conv, which sees the full-range image, lost ~2 output steps per pixel in ONNX
# Runtime's default int8 kernels; inner layers see learned, mostly small, ranges. NNCF narrows the
# first layer's weights to 7 bits for the same reason (its overflow fix); narrowing the input keeps
# the exporter's own weight quantizer (8-bit) unchanged.
INPUT_LEVELS = 126
_BN = nn.modules.batchnorm._BatchNorm


# ------------------------------------------------------------------------------------------ quantizers
class ActQuant(nn.Module):
    """Per-tensor uint8 fake-quantizer with learned scale and zero point (LSQ+); while `observing`
    it passes values through and records their min/max instead."""

    def __init__(self, levels: int = ACT_QMAX - ACT_QMIN) -> None:
        super().__init__()
        self.levels = levels  # steps its calibrated range spans (fewer than 255: see INPUT_LEVELS)
        self.scale = nn.Parameter(torch.tensor([1.0]))
        self.zero_point = nn.Parameter(torch.tensor([0.0]))
        self.register_buffer("lo", torch.tensor(math.inf))
        self.register_buffer("hi", torch.tensor(-math.inf))
        self.observing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.lo = torch.minimum(self.lo, x.detach().min())
            self.hi = torch.maximum(self.hi, x.detach().max())
            return x
        with torch.no_grad():  # keep the learned values valid: scale > 0, zero point in range
            self.scale.clamp_(min=1e-8)
            self.zero_point.clamp_(ACT_QMIN, ACT_QMAX)
        return self._fake(x)

    def again(self, x: torch.Tensor) -> torch.Tensor:
        """A second rounding with these levels in the same forward (a bilinear resize of the tensor
        this quantizes): no in-place clamp, which would break the first use's gradient; nothing
        observed, since the resized values lie within the range the first use saw."""
        return x if self.observing else self._fake(x)

    def _fake(self, x: torch.Tensor) -> torch.Tensor:
        grad_factor = 1.0 / math.sqrt(x[0].numel() * ACT_QMAX)  # LSQ's step-size gradient scale
        return torch._fake_quantize_learnable_per_tensor_affine(
            x, self.scale, self.zero_point, ACT_QMIN, ACT_QMAX, grad_factor
        )

    @torch.no_grad()
    def init_from_observed(self) -> None:
        """ONNX Runtime's scale/zero point for the observed range (which it widens to hold 0)."""
        lo, hi = min(float(self.lo), 0.0), max(float(self.hi), 0.0)
        scale = (hi - lo) / self.levels if hi > lo else 1.0
        self.scale.fill_(scale)
        self.zero_point.fill_(round(ACT_QMIN - lo / scale))

    def exported(self) -> tuple[float, int]:
        """(scale, zero point) as the int8 model stores them: float32 scale, integer zero point."""
        zp = int(torch.round(self.zero_point.detach().clamp(ACT_QMIN, ACT_QMAX)).item())
        return float(self.scale.detach().clamp(min=1e-8).float().item()), zp

    def current_scale(self) -> torch.Tensor:
        return self.scale.detach().clamp(min=1e-8)


class FoldedConv(nn.Module):
    """A Conv/ConvTranspose with the BatchNorm after it folded in, weights and bias fake-quantized.

    Holds the original modules (their parameters train in place) so the student's structure and
    state-dict keys come back unchanged after QAT."""

    def __init__(self, conv: nn.Module, bn: nn.Module | None, input_quant: ActQuant | None) -> None:
        super().__init__()
        self.conv, self.bn = conv, bn
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        if self.transposed and conv.groups != 1:
            raise EdgeDistillError("QAT folds ConvTranspose2d with groups=1 only")
        self.input_quant = [input_quant]  # a list: not a submodule of this one

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        conv, bn = self.conv, self.bn
        w = conv.weight
        out_axis = 1 if self.transposed else 0
        n_out = w.shape[out_axis]
        b = conv.bias if conv.bias is not None else torch.zeros(n_out, dtype=w.dtype, device=w.device)
        if bn is not None:
            s = (
                bn.weight / torch.sqrt(bn.running_var + bn.eps)
                if bn.affine
                else 1 / torch.sqrt(bn.running_var + bn.eps)
            )
            shape = [1] * w.dim()
            shape[out_axis] = n_out
            w = w * s.reshape(shape)
            b = (b - bn.running_mean) * s + (bn.bias if bn.affine else 0)
        return w, b

    def quantized(self) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = self.folded()
        axis = 1 if self.transposed else 0
        dims = [d for d in range(w.dim()) if d != axis]
        w_scale = (w.detach().abs().amax(dim=dims) / W_QMAX).clamp(min=1e-12)
        zeros = torch.zeros(w_scale.shape, dtype=torch.int32, device=w.device)
        wq = torch.fake_quantize_per_channel_affine(w, w_scale, zeros, axis, -W_QMAX, W_QMAX)
        quant = self.input_quant[0]
        if quant is not None and not quant.observing:
            b_scale = quant.current_scale() * w_scale
            b = b + (torch.round(b / b_scale) * b_scale - b).detach()  # int32: straight-through
        return wq, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quant = self.input_quant[0]
        w, b = self.folded() if quant is None or quant.observing else self.quantized()
        conv = self.conv
        if self.transposed:
            return F.conv_transpose2d(
                x, w, b, conv.stride, conv.padding, conv.output_padding, conv.groups, conv.dilation
            )
        return conv._conv_forward(x, w, b)


# ------------------------------------------------------------------------------------------ the model
class QatStudent(nn.Module):
    """The student with convs folded and fake-quantized and quantizers on the module outputs
    ONNX Runtime quantizes. `restore()` puts the original modules back into the student."""

    def __init__(self, student: nn.Module, topo: Topology) -> None:
        super().__init__()
        self.student = student
        points = sorted(set(topo.points.values()))
        self.quants = nn.ModuleDict(
            {quant_key(p): ActQuant(INPUT_LEVELS if p == INPUT else ACT_QMAX - ACT_QMIN) for p in points}
        )
        if INPUT in points:  # not learned: it must keep within INPUT_LEVELS
            self.quants[quant_key(INPUT)].requires_grad_(False)
        modules = dict(student.named_modules())
        unknown = [p for p in points if p != INPUT and p not in modules]
        if unknown:
            raise EdgeDistillError(
                f"quantized tensors map to module(s) {', '.join(unknown[:3])} the student lacks: "
                "QAT needs the student's export scopes to name its modules"
            )
        self._hooks = [
            modules[p].register_forward_hook(self._hook(self.quants[quant_key(p)]))
            for p in points
            if p != INPUT
        ]
        for path, tensor in topo.shared.items():  # rounded again with its input's quantizer
            if path in modules:
                quant = self.quants[quant_key(topo.point_of(tensor))]
                self._hooks.append(
                    modules[path].register_forward_hook(lambda _m, _i, out, q=quant: q.again(out))
                )
        self._swapped: list[tuple[nn.Module, str, nn.Module]] = []
        for parent_name, parent in list(student.named_modules()):
            children = list(parent.named_children())
            for i, (name, child) in enumerate(children):
                owner, attr = _output_conv(parent, name, child)
                conv = getattr(owner, attr) if owner is not None else None
                if not isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
                    continue  # not a conv, or folded already (a SepConv's pw, by its parent)
                path = f"{parent_name}.{name}" if parent_name else name
                path = path if owner is parent else f"{path}.{attr}"
                nxt = children[i + 1][1] if i + 1 < len(children) else None
                bn = nxt if isinstance(nxt, _BN) else None
                src = topo.weighted_inputs.get(path)
                folded = FoldedConv(conv, bn, self.quants[quant_key(src)] if src is not None else None)
                self._swap(owner, attr, folded)
                if bn is not None:
                    self._swap(parent, children[i + 1][0], nn.Identity())
                    hook_owner = f"{parent_name}.{children[i + 1][0]}" if parent_name else children[i + 1][0]
                    if hook_owner in points:  # export folds BN into the conv: nothing quantized between
                        raise EdgeDistillError(
                            f"the export quantizes the output of {hook_owner} apart from {path}: its "
                            "BatchNorm was not folded, which QAT's fake-quantizer assumes"
                        )
                if path in points:
                    folded.register_forward_hook(self._hook(self.quants[quant_key(path)]))
        self.input_quant = self.quants[quant_key(INPUT)] if INPUT in points else None

    def _swap(self, parent: nn.Module, name: str, new: nn.Module) -> None:
        self._swapped.append((parent, name, getattr(parent, name)))
        setattr(parent, name, new)

    @staticmethod
    def _hook(quant: ActQuant) -> Any:
        return lambda _m, _inp, out: quant(out)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            args = (self.input_quant(args[0]), *args[1:])
        return self.student(*args)

    def observe(self, on: bool) -> None:
        for q in self.quants.values():
            q.observing = on  # type: ignore[assignment]

    def restore(self) -> nn.Module:
        """The student as it was built (trained weights kept), hooks and folds removed."""
        for h in self._hooks:
            h.remove()
        for parent, name, original in reversed(self._swapped):
            setattr(parent, name, original)
        self._swapped.clear()
        return self.student

    @torch.no_grad()
    def load_scales(self, scales: dict[str, tuple[float, int]]) -> None:
        """Set every quantizer from exported (scale, zero point): the trained model as it ships."""
        for key, q in self.quants.items():
            scale, zp = scales[quant_point(key)]
            q.scale.fill_(scale)  # type: ignore[union-attr]
            q.zero_point.fill_(zp)  # type: ignore[union-attr]

    def scales(self) -> dict[str, tuple[float, int]]:
        return {quant_point(k): q.exported() for k, q in self.quants.items()}  # type: ignore[union-attr]


def _output_conv(parent: nn.Module, name: str, child: nn.Module) -> tuple[nn.Module | None, str]:
    """(module, attribute) of the conv that makes `child`'s output: the child itself, or the pointwise
    conv ending a depthwise-separable one, into which the export folds a BatchNorm that follows it."""
    if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d)):
        return parent, name
    if isinstance(child, SepConv):
        return child, "pw"
    return None, ""


def quant_key(point: str) -> str:
    return "input" if point == INPUT else "m_" + point.replace(".", "__")


def quant_point(key: str) -> str:
    return INPUT if key == "input" else key[2:].replace("__", ".")


# ------------------------------------------------------------------------------------------ topology
def student_topology(student: nn.Module, spec: GeneratorSpec, size: int = 64) -> Topology:
    """Export the student as edgedistill's export does (legacy exporter, BN folded, onnxslim) and ask
    ONNX Runtime's quantizer which activations it quantizes."""
    import io
    import warnings

    import onnx

    if len(spec.inputs) != 1:
        raise EdgeDistillError("QAT supports single-input generators (image or noise) only")
    was_training = student.training
    student.eval()
    example = spec.example_inputs(size=(size, size) if spec.kind == "image" else None)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                student,
                example,
                buf,
                dynamo=False,
                opset_version=17,
                input_names=[t.name for t in spec.inputs],
                output_names=[t.name for t in spec.outputs] or ["output"],
                do_constant_folding=True,
            )
    finally:
        student.train(was_training)
    model = onnx.load_model_from_string(buf.getvalue())
    with contextlib.redirect_stdout(io.StringIO()):
        import onnxslim

        model = onnxslim.slim(model) or model
    with tempfile.TemporaryDirectory(prefix="edgedistill-qat-") as tmp:
        path = Path(tmp) / "student.onnx"
        onnx.save_model(model, str(path))
        return topology(path)
