"""`edgedistill.distill(...)`: teacher in, a student run directory out (contract 2 in docs/architecture.md).

runs/NAME/  student.safetensors (or student.pt2) + model.json, config.json,
            checkpoints/last.pt, metrics.jsonl, samples/*.png, metrics.json
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.data.sources import DataSource, make_source
from edgedistill.distiller.batchnorm import (
    CALIBRATION_BATCHES,
    CALIBRATION_STEP,
    freeze_batch_norm,
    recalibrate_batch_norm,
)
from edgedistill.distiller.config import DistillConfig
from edgedistill.distiller.evaluate import evaluate_student
from edgedistill.distiller.features import feature_channels, kd_layer_names
from edgedistill.distiller.losses import FeatureKD
from edgedistill.distiller.pruned import save_pt2
from edgedistill.distiller.student import make_student, make_student_from_arch
from edgedistill.distiller.trainer import Parts, Trainer
from edgedistill.metrics.feature_distance import FeatureNet, load_feature_net
from edgedistill.models.embedded import embedded_teachers
from edgedistill.models.loading import LoadedGenerator, load_generator
from edgedistill.models.registry import create
from edgedistill.models.weights import save_weights

BUILT_IN = ("resnet", "unet", "dcgan")


def distill(
    cfg: DistillConfig | None = None,
    *,
    resume: bool = False,
    source: DataSource | None = None,
    **options: Any,
) -> Path:
    """Distill `cfg.teacher` into a student; returns the run directory.

    Options may be given as a DistillConfig or as keywords (`distill(teacher="photo-restore", width=0.25)`).
    `source` overrides the data source (any object with `batch(step, size)` and `heldout()`).
    """
    cfg = cfg or DistillConfig(**options)
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world = _init_distributed()
    teacher = load_generator(cfg.teacher, kwargs=cfg.model_kwargs, weights=cfg.weights)
    cfg = cfg.with_defaults(teacher.spec.kind)
    if cfg.gan_loss is None:
        cfg = replace(cfg, gan_loss=teacher_d_loss(cfg, teacher) or "lsgan")
    run_dir = Path(cfg.out)
    _check_run_dir(run_dir, resume)
    torch.manual_seed(cfg.seed)
    parts = build_parts(cfg, teacher, rank, source)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.json", cfg.to_json())
    trainer = Trainer(cfg, parts, run_dir, rank, world)
    if resume:
        trainer.resume()
    started = time.perf_counter()
    trainer.train()
    if rank == 0:
        finish_run(cfg, teacher, parts, trainer, run_dir, time.perf_counter() - started)
        if cfg.qat_steps:  # a final quantization-aware phase on the saved EMA student
            from edgedistill.distiller.qat import qat_phase

            qat_phase(cfg, teacher.module, parts, trainer, run_dir, resume)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return run_dir


def build_parts(cfg: DistillConfig, teacher: LoadedGenerator, rank: int, source: DataSource | None) -> Parts:
    spec = teacher.spec
    t_net = teacher.module
    t_net.requires_grad_(False)
    example = spec.example_inputs(size=(cfg.patch, cfg.patch) if spec.kind == "image" else None)
    if cfg.arch:
        student, student_spec = make_student_from_arch(t_net, spec, cfg.arch, cfg.init)
    else:
        student, student_spec = make_student(t_net, spec, cfg.width, cfg.init, cfg.student_norm, example)
    source = source or make_source(
        cfg.teacher,
        spec,
        Path(cfg.data) if cfg.data else None,
        cfg.seed,
        cfg.patch,
        rank,
        val_data=Path(cfg.val_data) if cfg.val_data else None,
        eval_count=cfg.eval_samples,
        colour_aug=cfg.colour_aug,
    )
    student.train()
    if cfg.bn_stats == "frozen":  # statistics of the student's own activations, then fixed
        recalibrate_batch_norm(
            student, (source.batch(CALIBRATION_STEP - i, cfg.batch).args for i in range(CALIBRATION_BATCHES))
        )
        freeze_batch_norm(student)
    parts = Parts(teacher=t_net, student=student, spec=student_spec, source=source)
    if cfg.lambda_adv or cfg.lambda_dfeat:
        parts.discriminator = make_discriminator(cfg, teacher)
        first = next(m for m in parts.discriminator.modules() if isinstance(m, nn.Conv2d))
        in_c, out_c = spec.input_shape()[1], spec.outputs[0].shape[1]
        parts.conditional_d = spec.kind == "image" and first.in_channels == in_c + out_c
    if cfg.lambda_feat:
        parts.layers = kd_layer_names(t_net, student, example, family=spec.family)
        if parts.layers:
            s_ch = feature_channels(student, parts.layers, example)
            t_ch = feature_channels(t_net, parts.layers, example)
            parts.feature_kd = FeatureKD(s_ch, t_ch, cfg.feat_mode)
    return move_parts(parts, resolve_device(cfg.device))


def resolve_device(name: str) -> torch.device:
    """auto: the first CUDA GPU torch sees, else the CPU; a named device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EdgeDistillError(
            f"--device {name}: this torch sees no CUDA GPU ({torch.__version__}); use --device cpu"
        )
    return device


def move_parts(parts: Parts, device: torch.device) -> Parts:
    """Teacher, student, D and feature adapters on the training device (the data stays on the CPU)."""
    for module in (parts.teacher, parts.student, parts.discriminator, parts.feature_kd):
        if module is not None:
            module.to(device)
    return parts


def make_discriminator(cfg: DistillConfig, teacher: LoadedGenerator) -> nn.Module:
    """The teacher's own D when it ships one (it already knows the domain), else a small fresh one."""
    embedded = embedded_teachers().get(cfg.teacher)
    if cfg.d_from_teacher and embedded is not None:
        d = embedded.discriminator()
        if d is not None:
            return d.train()
    spec = teacher.spec
    out_c = spec.outputs[0].shape[1]
    if spec.kind == "image":
        in_c = spec.input_shape()[1] + out_c  # conditional, as pix2pix
        return create("patchgan", input_nc=in_c, ndf=cfg.ndf, n_layers=3 if cfg.patch >= 64 else 2)
    size = (spec.default_size or (64, 64))[0]
    if size in (32, 64):
        return create("dcgan_d", nc=out_c, ndf=cfg.ndf, image_size=size, sigmoid=False)
    return create("patchgan", input_nc=out_c, ndf=cfg.ndf, n_layers=3)


def teacher_d_loss(cfg: DistillConfig, teacher: LoadedGenerator) -> str | None:
    """The GAN loss the teacher's shipped D was trained with: its logits are scaled for that loss."""
    if cfg.d_from_teacher and cfg.teacher in embedded_teachers():
        return teacher.spec.provenance.get("discriminator", {}).get("loss")
    return None


def default_feature_net(cfg: DistillConfig) -> FeatureNet | None:
    if cfg.feature_net:
        return load_feature_net(cfg.feature_net)
    embedded = embedded_teachers().get(cfg.teacher)
    if embedded is not None and embedded.feature_net() is not None:
        return load_feature_net(cfg.teacher)
    return None


def finish_run(
    cfg: DistillConfig, teacher: LoadedGenerator, parts: Parts, trainer: Trainer, run_dir: Path, wall: float
) -> None:
    """Save the EMA student with its spec, and score it."""
    student = trainer.ema.model.eval()
    spec = parts.spec
    metrics = evaluate_student(teacher.module, student, spec, parts.source, default_feature_net(cfg))
    student = student.cpu()
    if spec.family in BUILT_IN:
        save_weights(student, run_dir / "student.safetensors")
    else:
        example = spec.example_inputs(size=(cfg.patch, cfg.patch) if spec.kind == "image" else None)
        save_pt2(student, example, run_dir / "student.pt2")
    metrics.update(steps=trainer.step, wall_s=round(trainer.wall_s, 1), run_wall_s=round(wall, 1))
    spec.provenance.update(config=json.loads(cfg.to_json()), metrics=metrics)
    spec.save(run_dir / "model.json")
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    ckpt = run_dir / "checkpoints" / "last.pt"
    if ckpt.exists() and not resume:
        raise EdgeDistillError(
            f"{run_dir} already holds a run: add --resume to continue it, or choose another --out"
        )


def _init_distributed() -> tuple[int, int]:
    """torchrun sets WORLD_SIZE/RANK; gloo on CPU, nccl on GPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world
