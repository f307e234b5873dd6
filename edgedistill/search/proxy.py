"""Quality proxy: rank candidate students without distilling each one fully.

Each candidate inherits the teacher's weights (`make_student_from_arch`), has its BatchNorm statistics
re-estimated on a shared pool of inputs, trains for a few pixel-KD steps on the teacher's outputs for
that pool, and is scored by PSNR vs the teacher on validation inputs. BatchNorm trains as distillation
will train it (distiller/config.py DEFAULT_BN_STATS: image students keep the re-estimated statistics
frozen; noise students normalise by the batch and are re-estimated after): the proxy ranks the
function the distilled student will become. Why short KD from inherited weights and not a
once-for-all supernet: the per-candidate cost is seconds at 64 px, there is nothing to train up
front, and operator choices (upsampling, depthwise blocks) that a shared-weight supernet cannot
share are scored on their own weights. `benchmarks/search_proxy.py` measures the rank correlation
of this proxy (and of its zero-step variant) with fully distilled quality.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edgedistill.core.quality import psnr
from edgedistill.core.spec import GeneratorSpec
from edgedistill.data.sources import Batch, DataSource
from edgedistill.distiller.batchnorm import BN_STATS, freeze_batch_norm, recalibrate_batch_norm
from edgedistill.distiller.config import DEFAULT_BN_STATS
from edgedistill.distiller.student import make_student_from_arch


@dataclass
class ProxyData:
    """Teacher outputs computed once and shared by every candidate."""

    train: Batch
    train_out: torch.Tensor
    val: Batch
    val_out: torch.Tensor
    output_range: tuple[float, float]


@dataclass
class ProxyScore:
    psnr: float  # after the short KD, vs the teacher on validation inputs
    psnr_inherited: float  # before any step (BN re-estimated): the zero-cost variant
    seconds: float


def proxy_data(
    teacher: nn.Module, spec: GeneratorSpec, source: DataSource, pool: int = 128, val: int = 32
) -> ProxyData:
    teacher.eval()
    chunks = [source.batch(-1 - i, min(16, pool - 16 * i)) for i in range((pool + 15) // 16)]
    train = _cat(chunks)
    v = source.validation()
    v = v.rows(slice(0, min(val, v.inputs.shape[0])))
    with torch.no_grad():
        train_out = _run(teacher, train)
        val_out = _run(teacher, v)
    lo, hi = spec.output_range
    return ProxyData(train, train_out, v, val_out, (float(lo), float(hi)))


def score(
    teacher: nn.Module,
    spec: GeneratorSpec,
    arch: dict[str, Any],
    data: ProxyData,
    steps: int = 300,
    batch: int = 8,
    lr: float = 2e-4,
    seed: int = 0,
    decay: bool = True,
    bn_stats: str | None = None,
) -> ProxyScore:
    """Short pixel-KD fine-tune of the candidate from inherited weights, then PSNR vs the teacher.

    It trains as distillation will: BatchNorm frozen for an image student (`bn_stats`: batch | frozen;
    None: distillation's default for the kind), at distillation's learning rate, decayed linearly to 0
    so the last steps end where the run was heading. Spearman vs 1000-step distillation of 7 photo
    students (benchmarks/search_proxy.py --rescore): 0.29 at 120 steps of 1e-3 with frozen BN, 0.46
    with batch BN, 0.82 at 120 steps of 2e-4 frozen, 0.93 at 300 (the default); the inherited weights
    alone 0.79. At 1e-3 the freshly initialised convs of depthwise/PixelShuffle candidates caught up
    in 120 steps as they do not in distillation, and those candidates were ranked first."""
    return scored_student(teacher, spec, arch, data, steps, batch, lr, seed, decay, bn_stats)[1]


def scored_student(
    teacher: nn.Module,
    spec: GeneratorSpec,
    arch: dict[str, Any],
    data: ProxyData,
    steps: int = 300,
    batch: int = 8,
    lr: float = 2e-4,
    seed: int = 0,
    decay: bool = True,
    bn_stats: str | None = None,
) -> tuple[nn.Module, ProxyScore]:
    """score(), and the fine-tuned student it scored (benchmarks/search_texture.py measures more of it)."""
    bn_stats = bn_stats or DEFAULT_BN_STATS.get(spec.kind, "batch")
    if bn_stats not in BN_STATS:
        raise ValueError(f"bn_stats {bn_stats!r}: expected one of {', '.join(BN_STATS)}")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    student, _ = make_student_from_arch(teacher, spec, arch)
    student.train()
    _recalibrate(student, data.train)
    zero = _psnr(student, data)
    if steps <= 0:
        return student, ProxyScore(zero, zero, time.perf_counter() - t0)
    fine_tune(student, data, steps, batch, lr, seed, decay, bn_stats)
    return student, ProxyScore(_psnr(student, data), zero, time.perf_counter() - t0)


def fine_tune(
    student: nn.Module,
    data: ProxyData,
    steps: int,
    batch: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    decay: bool = True,
    bn_stats: str = "frozen",
) -> None:
    """`steps` of pixel KD on the pool, BatchNorm frozen at its current statistics or normalising by
    the batch (and re-estimated after: the running statistics drifted with the batches)."""
    opt = torch.optim.Adam(student.parameters(), lr=lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    n = data.train.inputs.shape[0]
    student.train()
    if bn_stats == "frozen":
        freeze_batch_norm(student)
    for step in range(steps):
        if decay:
            for g in opt.param_groups:
                g["lr"] = lr * (1 - step / steps)
        idx = torch.randint(n, (min(batch, n),), generator=gen)
        loss = F.l1_loss(student(*data.train.rows(idx).args), data.train_out[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if bn_stats == "batch":
        _recalibrate(student, data.train)


def _psnr(student: nn.Module, data: ProxyData) -> float:
    student.eval()
    with torch.no_grad():
        out = _run(student, data.val)
    lo, hi = data.output_range
    return float(psnr(out.numpy(), data.val_out.numpy(), data_range=hi - lo))


def _recalibrate(net: nn.Module, train: Batch, chunk: int = 32) -> None:
    """Re-estimate BatchNorm running statistics as a plain average over the pool: inherited stats
    belong to the teacher's channels and inputs, and a few steps of momentum do not fix them."""
    n = train.inputs.shape[0]
    recalibrate_batch_norm(net, (train.rows(slice(i, i + chunk)).args for i in range(0, n, chunk)))


def _run(net: nn.Module, b: Batch, chunk: int = 16) -> torch.Tensor:
    outs = [net(*b.rows(slice(i, i + chunk)).args) for i in range(0, b.inputs.shape[0], chunk)]
    return torch.cat([o[0] if isinstance(o, (tuple, list)) else o for o in outs]).float()


def _cat(batches: list[Batch]) -> Batch:
    labels = [b.labels for b in batches if b.labels is not None]
    return Batch(torch.cat([b.inputs for b in batches]), None, torch.cat(labels) if labels else None)
