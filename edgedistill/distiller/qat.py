"""Quantization-aware distillation: a short KD fine-tune of the trained student with fake-quantization on.

The fake-quantizer is the exporter's INT8 quantizer, placed where it places it:
- BatchNorm folded into the conv before it (as the ONNX export folds it), from frozen statistics;
- weights: symmetric per output channel, int8 in [-127, 127], scale max|w| / 127 (ONNX Runtime's
  rule, so re-quantizing the trained weights at export gives the same int8 values);
- biases: int32 at the input's scale times the weight's (ONNX Runtime's QDQ Conv);
- activations: per tensor, uint8 asymmetric, at the tensors ONNX Runtime's quantizer picks
  (`onnxtools.qdq_trained.topology`: the graph input, each Relu / residual Add / un-activated conv
  output); a reflect Pad copies values, so its input's quantizer covers it. Ranges start from
  min/max over calibration inputs and are then learned (LSQ+: scale and zero point by gradient).

The run directory keeps the result: `student.safetensors` becomes the QAT student (its pre-QAT
weights stay in `student.pre_qat.safetensors`) and `qat.json` holds the trained activation scales by
module, which export turns into the QDQ model's scales (`exporter/qat_export.py`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from edgedistill.core.atomic import write_atomic, write_text_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.hashing import file_sha256
from edgedistill.core.spec import GeneratorSpec
from edgedistill.distiller.trainer import stop_on_sigint
from edgedistill.onnxtools.qdq_trained import ACT_QMAX, ACT_QMIN, INPUT, Topology, topology

QAT_FILE = "qat.json"
PRE_QAT_WEIGHTS = "student.pre_qat.safetensors"
CKPT = "qat.pt"
W_QMAX = 127
CALIB_BATCHES = 8
# compress's default QAT phase for INT8 targets (benchmarks/qat_int8.py: chosen to fit CPU time)
QAT_STEPS = 200
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
            {_key(p): ActQuant(INPUT_LEVELS if p == INPUT else ACT_QMAX - ACT_QMIN) for p in points}
        )
        if INPUT in points:  # not learned: it must keep within INPUT_LEVELS
            self.quants[_key(INPUT)].requires_grad_(False)
        modules = dict(student.named_modules())
        unknown = [p for p in points if p != INPUT and p not in modules]
        if unknown:
            raise EdgeDistillError(
                f"quantized tensors map to module(s) {', '.join(unknown[:3])} the student lacks: "
                "QAT needs the student's export scopes to name its modules"
            )
        self._hooks = [
            modules[p].register_forward_hook(self._hook(self.quants[_key(p)])) for p in points if p != INPUT
        ]
        self._swapped: list[tuple[nn.Module, str, nn.Module]] = []
        for parent_name, parent in list(student.named_modules()):
            children = list(parent.named_children())
            for i, (name, child) in enumerate(children):
                if not isinstance(child, (nn.Conv2d, nn.ConvTranspose2d)):
                    continue
                path = f"{parent_name}.{name}" if parent_name else name
                nxt = children[i + 1][1] if i + 1 < len(children) else None
                bn = nxt if isinstance(nxt, _BN) else None
                src = topo.weighted_inputs.get(path)
                folded = FoldedConv(child, bn, self.quants[_key(src)] if src is not None else None)
                self._swap(parent, name, folded)
                if bn is not None:
                    self._swap(parent, children[i + 1][0], nn.Identity())
                    hook_owner = f"{parent_name}.{children[i + 1][0]}" if parent_name else children[i + 1][0]
                    if hook_owner in points:  # export folds BN into the conv: nothing quantized between
                        raise EdgeDistillError(
                            f"the export quantizes the output of {hook_owner} apart from {path}: its "
                            "BatchNorm was not folded, which QAT's fake-quantizer assumes"
                        )
                if path in points:
                    folded.register_forward_hook(self._hook(self.quants[_key(path)]))
        self.input_quant = self.quants[_key(INPUT)] if INPUT in points else None

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
            scale, zp = scales[_point(key)]
            q.scale.fill_(scale)  # type: ignore[union-attr]
            q.zero_point.fill_(zp)  # type: ignore[union-attr]

    def scales(self) -> dict[str, tuple[float, int]]:
        return {_point(k): q.exported() for k, q in self.quants.items()}  # type: ignore[union-attr]


def _key(point: str) -> str:
    return "input" if point == INPUT else "m_" + point.replace(".", "__")


def _point(key: str) -> str:
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


# ------------------------------------------------------------------------------------------ the phase
def run_qat(
    student: nn.Module,
    teacher: nn.Module,
    spec: GeneratorSpec,
    batches: Any,
    run_dir: Path,
    steps: int,
    *,
    lr: float = 2e-5,
    lr_quant: float = 1e-3,
    batch_size: int = 8,
    lambda_gt: float = 0.0,
    resume: bool = False,
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune `student` (in place) with fake-quantization for `steps` steps of pixel L1 to the
    teacher (+ `lambda_gt` x L1 to the data's targets where the data is paired); `batches(step, n)`
    gives (Batch, teacher output). Writes qat.json and the QAT student; returns qat.json's content."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / CKPT
    console = Console(stderr=True)
    topo = student_topology(student, spec)
    device = next((p.device for p in student.parameters()), torch.device("cpu"))
    model = QatStudent(student, topo).to(device).eval()  # eval: BN folded from frozen statistics
    weights = [p for n, p in model.named_parameters() if not n.startswith("quants.")]
    for p in weights:  # the saved EMA student comes frozen: its weights must learn the quantization too
        p.requires_grad_(True)
    opt = torch.optim.Adam(
        [{"params": weights, "lr": lr}, {"params": list(model.quants.parameters()), "lr": lr_quant}]
    )
    ident = json.dumps({"steps": steps, **(identity or {})}, sort_keys=True, default=str)
    step, wall = 0, 0.0
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state["identity"] != ident:
            raise EdgeDistillError(
                f"--resume: {ckpt} holds a QAT phase with other options; delete it to start QAT afresh"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, wall = state["step"], state["wall_s"]
    else:
        _calibrate(model, batches, batch_size)

    def save() -> None:
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "wall_s": wall}
        state["identity"] = ident
        write_atomic(ckpt, lambda p: torch.save(state, p))

    columns = [
        TextColumn("[bold]QAT"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
    ]  # fmt: skip
    with Progress(*columns, console=console) as progress, stop_on_sigint() as stop:
        task = progress.add_task("qat", total=steps, completed=step, info="")
        while step < steps and not stop.is_set():
            t0 = time.perf_counter()
            for group, base in zip(opt.param_groups, (lr, lr_quant), strict=True):
                group["lr"] = base * 0.5 * (1 + math.cos(math.pi * step / steps))  # cosine to 0
            batch, y_t = batches(step, batch_size)
            y_s = model(*batch.args)
            loss = F.l1_loss(y_s, y_t)
            info = f"pix={loss.item():.4f}"
            if lambda_gt > 0 and batch.real is not None and batch.real.shape == y_s.shape:
                gt = F.l1_loss(y_s, batch.real)
                loss = loss + lambda_gt * gt
                info += f" gt={gt.item():.4f}"
            if not math.isfinite(loss.item()):
                raise EdgeDistillError(
                    f"QAT loss became non-finite at step {step}: lower the QAT learning rate"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            wall += time.perf_counter() - t0
            progress.update(task, completed=step, info=f"{info} {step / max(wall, 1e-9):.2f} it/s")
            if step % 100 == 0 or step == steps:
                save()
    if step < steps:
        save()
        raise EdgeDistillError(
            f"QAT interrupted at step {step}: checkpoint saved in {ckpt.parent}; "
            "continue with the same command and --resume"
        )
    return _finish(model, teacher, spec, batches, run_dir, steps, wall, topo)


@torch.no_grad()
def _calibrate(model: QatStudent, batches: Any, batch_size: int) -> None:
    """Min/max of every quantized activation over calibration inputs (the fp32 student's), then
    ONNX Runtime's scale and zero point for them: where learning starts."""
    model.observe(True)
    for i in range(CALIB_BATCHES):
        batch, _ = batches(-1 - i, batch_size)
        model(*batch.args)
    model.observe(False)
    for q in model.quants.values():
        q.init_from_observed()  # type: ignore[operator]


def _finish(
    model: QatStudent,
    teacher: nn.Module,
    spec: GeneratorSpec,
    batches: Any,
    run_dir: Path,
    steps: int,
    wall: float,
    topo: Topology,
) -> dict[str, Any]:
    from edgedistill.models.weights import save_weights

    scales = model.scales()
    metrics = _held_metrics(model, teacher, spec, batches)
    student = model.restore()
    weights = run_dir / "student.safetensors"
    if weights.exists() and not (run_dir / PRE_QAT_WEIGHTS).exists():
        shutil.copy2(weights, run_dir / PRE_QAT_WEIGHTS)
    save_weights(student, weights)
    info = {
        "format": 1,
        "steps": steps,
        "wall_s": round(wall, 1),
        "activations": "uint8 asymmetric, per tensor, learned scale and zero point (LSQ+)",
        "weights": "int8 symmetric per output channel, scale max|w|/127; biases int32; BatchNorm folded",
        "scales": {p: {"scale": s, "zero_point": z} for p, (s, z) in sorted(scales.items())},
        "levels": {_point(k): q.levels for k, q in model.quants.items() if q.levels != ACT_QMAX - ACT_QMIN},
        "points": {t: p for t, p in topo.points.items()},
        "weights_file": weights.name,
        "weights_sha256": file_sha256(weights),
        "metrics": metrics,
    }
    write_text_atomic(run_dir / QAT_FILE, json.dumps(info, indent=1) + "\n")
    return info


@torch.no_grad()
def _held_metrics(
    model: QatStudent, teacher: nn.Module, spec: GeneratorSpec, batches: Any
) -> dict[str, float]:
    """PSNR (dB, [0, 1] pixels) of the fake-quant and the fp32 QAT student vs the teacher on held-out inputs."""
    from edgedistill.core.quality import psnr

    held = getattr(batches, "heldout", None)
    if held is None:
        return {}
    batch = held()
    y_t = spec.to_pixels(teacher(*batch.args)).cpu().numpy()
    y_q = spec.to_pixels(model(*batch.args)).cpu().numpy()
    model.observe(True)  # observing: quantizers pass values through, weights unquantized
    y_f = spec.to_pixels(model(*batch.args)).cpu().numpy()
    model.observe(False)
    return {
        "psnr_fakequant_vs_teacher": round(float(psnr(y_q, y_t, 1.0)), 3),
        "psnr_fp32_vs_teacher": round(float(psnr(y_f, y_t, 1.0)), 3),
        "psnr_fakequant_vs_fp32": round(float(psnr(y_q, y_f, 1.0)), 3),
    }


class TeacherBatches:
    """(Batch, teacher output) by step: the main run's teacher-output cache where it has one, else
    the teacher run on the source's batch. Negative steps (calibration) always come from the source."""

    def __init__(self, teacher: nn.Module, source: Any, cache: Any = None) -> None:
        self.teacher, self.source, self.cache = teacher, source, cache

        self.device = next((p.device for p in teacher.parameters()), torch.device("cpu"))

    @torch.no_grad()
    def __call__(self, step: int, size: int) -> tuple[Any, torch.Tensor]:
        if self.cache is not None and step >= 0:
            batch, y_t, _ = self.cache.batch(step, size)
            return batch.to(self.device), y_t.to(self.device)
        batch = self.source.batch(step, size).to(self.device)
        return batch, self.teacher(*batch.args)

    def heldout(self) -> Any:
        """The source's validation set where it has one (small, apart from the final evaluation's)."""
        held = getattr(self.source, "validation", self.source.heldout)()
        return held.rows(slice(0, 64)).to(self.device)


def qat_phase(
    cfg: Any, teacher: nn.Module, parts: Any, trainer: Any, run_dir: Path, resume: bool
) -> dict[str, Any]:
    """The QAT phase of `distill()`, on the main run's saved (EMA) student and its data."""
    if parts.spec.family not in ("resnet", "unet", "dcgan"):
        raise EdgeDistillError(
            "--qat-steps needs a built-in family student (resnet, unet, dcgan): a pruned module is saved "
            "as a torch.export program, which QAT does not rewrite; export it without --qat-steps"
        )
    device = next((p.device for p in teacher.parameters()), torch.device("cpu"))
    student = trainer.ema.model.to(device)
    identity = {"lr": cfg.lr * 0.1, "lambda_gt": cfg.lambda_gt, "batch": cfg.batch}
    pix = cfg.lambda_pix or 1.0
    return run_qat(
        student,
        teacher,
        parts.spec,
        _deployment_batches(teacher, parts.source, getattr(trainer, "cache", None)),
        run_dir,
        cfg.qat_steps,
        lr=cfg.lr * 0.1,
        batch_size=cfg.batch,
        lambda_gt=cfg.lambda_gt / pix,
        resume=resume,
        identity=identity,
    )


def _deployment_batches(teacher: nn.Module, source: Any, cache: Any) -> TeacherBatches:
    """QAT fits quantization ranges to what the artifact will see, so it trains on crops in their own
    colours: with the main run's colour augmentation (and its cache, which holds augmented crops) the
    demo's INT8 artifact fell from 46.7 to 36.0 dB vs fp32 while the fake-quant check on validation
    crops still read 44.7 dB."""
    if getattr(source, "colour_aug", "none") == "none":
        return TeacherBatches(teacher, source, cache)
    plain = copy.copy(source)
    plain.colour_aug = "none"
    return TeacherBatches(teacher, plain, None)


def read_qat(run_dir: str | Path) -> dict[str, Any] | None:
    """qat.json of a run directory, or None when it has none."""
    path = Path(run_dir) / QAT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
