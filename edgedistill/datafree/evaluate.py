"""What a distilled classifier is worth: top-1 on held-out real images (used only here), agreement
with the teacher, per-class accuracy, the class histogram of the synthetic samples (a generator in
mode collapse leaves classes out), and MACs/params — plus a grid of synthetic samples per class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgedistill.core.spec import GeneratorSpec
from edgedistill.data.imageio import save_grid
from edgedistill.datafree.generator import SampleGenerator
from edgedistill.datafree.supervised import predict
from edgedistill.metrics.complexity import measure_complexity


def heldout_metrics(
    student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor | None, classes: int
) -> dict[str, Any]:
    s = predict(student, x).argmax(1)
    t = predict(teacher, x).argmax(1)
    out: dict[str, Any] = {
        "heldout_n": len(x),
        "agreement_with_teacher": round(float((s == t).float().mean()), 5),
    }
    if y is not None:
        out["student_top1"] = round(float((s == y).float().mean()), 5)
        out["teacher_top1"] = round(float((t == y).float().mean()), 5)
        out["per_class_top1"] = [
            round(float((s[y == k] == k).float().mean()), 4) if bool((y == k).any()) else None
            for k in range(classes)
        ]
    return out


@torch.no_grad()
def synthetic_histogram(
    generator: SampleGenerator, teacher: nn.Module, classes: int, n: int = 1000
) -> dict[str, Any]:
    """The teacher's argmax over `n` synthetic samples: even counts mean the generator covers every class."""
    generator.train()  # batch statistics, as in training: its running ones are never used
    x = generator.sample(n, torch.Generator().manual_seed(1))
    probs = torch.softmax(predict(teacher, x), 1)
    hist = torch.bincount(probs.argmax(1), minlength=classes)
    return {
        "synthetic_class_histogram": hist.tolist(),
        "synthetic_missing_classes": [k for k in range(classes) if hist[k] == 0],
        "synthetic_mean_confidence": round(float(probs.max(1).values.mean()), 4),
    }


def complexity(student: nn.Module, teacher: nn.Module, spec: GeneratorSpec) -> dict[str, Any]:
    (x,) = spec.example_inputs()
    s, t = measure_complexity(student, (x,)), measure_complexity(teacher, (x,))
    return {
        "student_macs": s.macs,
        "student_params": s.params,
        "teacher_macs": t.macs,
        "teacher_params": t.params,
        "macs_ratio": round(t.macs / max(s.macs, 1), 3),
    }


@torch.no_grad()
def sample_grid(
    generator: SampleGenerator, teacher: nn.Module, spec: GeneratorSpec, path: Path, per_class: int = 8
) -> Path:
    """Synthetic samples sorted into one row per class the teacher assigns (empty rows: missing classes)."""
    generator.train()  # batch statistics, as in training: its running ones are never used
    x = generator.sample(64 * (spec.logits or 10), torch.Generator().manual_seed(2))
    labels = predict(teacher, x).argmax(1)
    lo, hi = spec.input_range
    pixels = ((x - lo) / (hi - lo)).clamp(0, 1)
    blank = torch.ones(1, pixels.shape[1], *pixels.shape[2:])
    rows = [
        pixels[labels == k][:per_class] if bool((labels == k).any()) else blank
        for k in range(spec.logits or 10)
    ]
    return save_grid(rows, path)
