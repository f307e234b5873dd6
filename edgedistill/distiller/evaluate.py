"""The run's final scores: student vs teacher on held-out inputs, and both vs real data.

Written to metrics.json; export and profile reuse `evaluate_outputs` for their quality gate.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgedistill.core.quality import channel_shift, psnr_per_image, ssim
from edgedistill.core.spec import GeneratorSpec
from edgedistill.data.sources import Batch, DataSource
from edgedistill.metrics.bootstrap import frechet_ci, frechet_ratio_ci, mean_ci
from edgedistill.metrics.complexity import measure_complexity
from edgedistill.metrics.feature_distance import FeatureNet, distance_from_features, embed_all


@torch.no_grad()
def run_batched(net: nn.Module, x: torch.Tensor | Batch, chunk: int = 64) -> torch.Tensor:
    """`net` on `x` (or on a batch's inputs and labels) `chunk` samples at a time."""
    args = x.args if isinstance(x, Batch) else (x,)
    device = _device(net)
    return torch.cat(
        [
            net(*(a.to(device) for a in parts)).cpu()
            for parts in zip(*(a.split(chunk) for a in args), strict=True)
        ]
    )


def evaluate_outputs(
    spec: GeneratorSpec,
    teacher_out: torch.Tensor,
    student_out: torch.Tensor,
    real: torch.Tensor | None,
    feature_net: FeatureNet | None,
    intervals: bool = False,
) -> dict[str, Any]:
    """PSNR/SSIM vs teacher; vs ground truth when the data has pairs; feature distances to real data
    (or to the teacher's outputs when there is none) for student and teacher alike; the colour
    shift vs the teacher (mean per channel, % of range). `intervals`: 95 % bootstrap intervals too."""
    t_px, s_px = spec.to_pixels(teacher_out), spec.to_pixels(student_out)
    vs_teacher = psnr_per_image(s_px, t_px)
    m: dict[str, Any] = {
        "psnr_vs_teacher": round(float(vs_teacher.mean()), 3),
        "ssim_vs_teacher": round(ssim(s_px, t_px), 4),
    }
    shifts = [round(100 * v, 3) for v in channel_shift(s_px, t_px)]
    m.update(channel_shift_pct=shifts, max_channel_shift_pct=max(abs(v) for v in shifts))
    if intervals:
        m["psnr_vs_teacher_ci"] = [round(v, 3) for v in mean_ci(vs_teacher)]
    paired = real is not None and spec.kind == "image" and real.shape == teacher_out.shape
    if paired:
        gt = spec.to_pixels(real)
        vs_gt, t_vs_gt = psnr_per_image(s_px, gt), psnr_per_image(t_px, gt)
        m.update(
            psnr_vs_target=round(float(vs_gt.mean()), 3),
            ssim_vs_target=round(ssim(s_px, gt), 4),
            teacher_psnr_vs_target=round(float(t_vs_gt.mean()), 3),
            teacher_ssim_vs_target=round(ssim(t_px, gt), 4),
            # a shift vs the teacher may be the teacher's own cast: the truth tells which side is off
            channel_shift_vs_target_pct=[round(100 * v, 3) for v in channel_shift(s_px, gt)],
            teacher_channel_shift_vs_target_pct=[round(100 * v, 3) for v in channel_shift(t_px, gt)],
        )
        if intervals:
            m["psnr_vs_target_ci"] = [round(v, 3) for v in mean_ci(vs_gt)]
            m["psnr_vs_target_minus_teacher_ci"] = [round(v, 3) for v in mean_ci(vs_gt - t_vs_gt)]
    if feature_net is not None:
        reference = spec.to_pixels(real) if real is not None else t_px
        ref_f, s_f = embed_all(feature_net, reference), embed_all(feature_net, s_px)
        fd = distance_from_features(feature_net.name, ref_f, s_f)
        m.update(feature_distance=round(fd["fid"], 4), kid=round(fd["kid"], 5), feature_net=fd["net"])
        m["feature_distance_reference"] = "real data" if real is not None else "teacher outputs"
        t_f = embed_all(feature_net, t_px) if real is not None else None
        if t_f is not None:
            m["feature_distance_teacher"] = round(
                distance_from_features(feature_net.name, ref_f, t_f)["fid"], 4
            )
            if m["feature_distance_teacher"] > 0:  # a teacher that matches the data exactly has no unit
                m["feature_distance_ratio"] = round(m["feature_distance"] / m["feature_distance_teacher"], 4)
        if intervals:
            m["feature_distance_ci"] = [round(v, 4) for v in frechet_ci(ref_f.numpy(), s_f.numpy())]
            if t_f is not None:
                m["feature_distance_teacher_ci"] = [
                    round(v, 4) for v in frechet_ci(ref_f.numpy(), t_f.numpy())
                ]
            if "feature_distance_ratio" in m:  # set only when there are teacher features
                ratio_ci = frechet_ratio_ci(ref_f.numpy(), s_f.numpy(), t_f.numpy(), paired_real=paired)
                m["feature_distance_ratio_ci"] = [round(v, 4) for v in ratio_ci]
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
    metrics = evaluate_outputs(spec, y_t, y_s, held.real, feature_net, intervals=True)
    probe = spec.example_inputs(size=size)
    t_cost = measure_complexity(teacher, tuple(a.to(_device(teacher)) for a in probe))
    s_cost = measure_complexity(student, tuple(a.to(_device(student)) for a in probe))
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


def _device(net: nn.Module) -> torch.device:
    return next((p.device for p in net.parameters()), torch.device("cpu"))
