"""Quantization-aware distillation: a short KD fine-tune of the trained student with fake-quantization on
(the exporter's INT8 quantizer, as `distiller/fakequant.py` models it): weights and activation ranges
learn together.

The run directory keeps the result: `student.safetensors` becomes the QAT student (its pre-QAT
weights stay in `student.pre_qat.safetensors`) and `qat.json` holds the trained activation scales by
module, which export turns into the QDQ model's scales (`exporter/qat_export.py`).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
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
from edgedistill.distiller.fakequant import QatStudent, quant_point, student_topology
from edgedistill.distiller.interrupt import stop_on_sigint
from edgedistill.onnxtools.qdq_trained import ACT_QMAX, ACT_QMIN, Topology

QAT_FILE = "qat.json"
PRE_QAT_WEIGHTS = "student.pre_qat.safetensors"
CKPT = "qat.pt"
CALIB_BATCHES = 8
# compress's default QAT phase for INT8 targets (benchmarks/qat_int8.py: chosen to fit CPU time)
QAT_STEPS = 200


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
        "levels": {
            quant_point(k): q.levels for k, q in model.quants.items() if q.levels != ACT_QMAX - ACT_QMIN
        },
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
