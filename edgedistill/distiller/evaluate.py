"""The run's final scores: student vs teacher on held-out inputs, and both vs real data.

Written to metrics.json; export and profile reuse `evaluate_outputs` for their quality gate.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgedistill.core.quality import psnr, ssim
from edgedistill.core.spec import GeneratorSpec
from edgedistill.data.sources import Batch, DataSource
from edgedistill.metrics.complexity import measure_complexity
from edgedistill.metrics.feature_distance import FeatureNet, feature_distance


@torch.no_grad()
def run_batched(net: nn.Module, x: torch.Tensor | Batch, chunk: int = 16) -> torch.Tensor:
    """`net` on `x` (or on a batch's inputs and labels) `chunk` samples at a time."""
    args = x.args if isinstance(x, Batch) else (x,)
    return torch.cat([net(*parts) for parts in zip(*(a.split(chunk) for a in args), strict=True)])


def evaluate_outputs(
    spec: GeneratorSpec,
    teacher_out: torch.Tensor,
    student_out: torch.Tensor,
    real: torch.Tensor | None,
    feature_net: FeatureNet | None,
) -> dict[str, Any]:
    """PSNR/SSIM vs teacher; vs ground truth when the data has pairs; feature distances to real data
    (or to the teacher's outputs when there is none) for student and teacher alike."""
    t_px, s_px = spec.to_pixels(teacher_out), spec.to_pixels(student_out)
    m: dict[str, Any] = {
        "psnr_vs_teacher": round(psnr(s_px, t_px), 3),
        "ssim_vs_teacher": round(ssim(s_px, t_px), 4),
    }
    paired = real is not None and spec.kind == "image" and real.shape == teacher_out.shape
    if paired:
        gt = spec.to_pixels(real)
        m.update(
            psnr_vs_target=round(psnr(s_px, gt), 3),
            ssim_vs_target=round(ssim(s_px, gt), 4),
            teacher_psnr_vs_target=round(psnr(t_px, gt), 3),
            teacher_ssim_vs_target=round(ssim(t_px, gt), 4),
        )
    if feature_net is not None:
        reference = spec.to_pixels(real) if real is not None else t_px
        fd = feature_distance(feature_net, reference, s_px)
        m.update(feature_distance=round(fd["fid"], 4), kid=round(fd["kid"], 5), feature_net=fd["net"])
        m["feature_distance_reference"] = "real data" if real is not None else "teacher outputs"
        if real is not None:
            m["feature_distance_teacher"] = round(feature_distance(feature_net, reference, t_px)["fid"], 4)
    return m


def evaluate_student(
    teacher: nn.Module,
    student: nn.Module,
    spec: GeneratorSpec,
    source: DataSource,
    feature_net: FeatureNet | None,
    size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    held = source.heldout()
    y_t, y_s = run_batched(teacher, held), run_batched(student, held)
    metrics = evaluate_outputs(spec, y_t, y_s, held.real, feature_net)
    probe = spec.example_inputs(size=size)
    t_cost, s_cost = measure_complexity(teacher, probe), measure_complexity(student, probe)
    metrics.update(
        macs_teacher=t_cost.macs,
        macs_student=s_cost.macs,
        params_teacher=t_cost.params,
        params_student=s_cost.params,
        macs_ratio=round(t_cost.macs / max(s_cost.macs, 1), 2),
        macs_input_shape=list(probe[0].shape),
        eval_inputs=int(held.inputs.shape[0]),
    )
    return metrics
