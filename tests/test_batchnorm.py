"""Frozen BatchNorm while distilling (distiller/batchnorm.py): the student's statistics are its own,
and training then sees exactly the function that is exported."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from edgedistill.core.errors import EdgeDistillError
from edgedistill.distiller.api import distill
from edgedistill.distiller.batchnorm import CALIBRATION_BATCHES, freeze_batch_norm, recalibrate_batch_norm
from edgedistill.distiller.config import DistillConfig
from edgedistill.models.loading import load_generator

TINY = {"teacher": "digits-dcgan", "width": 0.25, "batch": 4, "steps": 12, "log_every": 1, "sample_every": 10**6,
        "ema": 0.9, "threads": 1, "eval_samples": 64, "val_every": 0}  # fmt: skip


def _conv_bn() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net[1].running_mean.fill_(5.0)  # a teacher's statistics, far from this conv's activations
    net[1].running_var.fill_(9.0)
    return net


def test_recalibration_sets_the_statistics_to_the_models_own_activations():
    net = _conv_bn().eval()
    batches = [(torch.randn(2, 3, 8, 8) * (i + 1) + i,) for i in range(3)]
    recalibrate_batch_norm(net, batches)
    with torch.no_grad():
        means = torch.stack([net[0](x).mean((0, 2, 3)) for (x,) in batches])
    assert torch.allclose(net[1].running_mean, means.mean(0), atol=1e-5)  # equal weights, not an EMA
    assert net[1].momentum == 0.1 and not net.training  # the module's settings are back as they were


def test_frozen_batch_norm_computes_in_training_what_is_exported():
    net = _conv_bn()
    recalibrate_batch_norm(net, [(torch.randn(4, 3, 8, 8),)])
    stats = net[1].running_mean.clone()
    net.train()
    assert freeze_batch_norm(net) == 1
    x = torch.randn(4, 3, 8, 8)
    trained = net(x)
    trained.square().mean().backward()
    assert net[1].weight.grad is not None  # the affine part still learns
    assert torch.equal(net[1].running_mean, stats)  # the statistics do not move
    assert torch.allclose(trained, net.eval()(x))


def test_a_frozen_run_trains_on_its_calibrated_statistics(tmp_path):
    """The saved student's BatchNorms counted only the calibration batches, none of the training's;
    in batch mode they count every training step on top of the teacher's count they inherited."""
    run = distill(DistillConfig(**TINY, bn_stats="frozen", out=str(tmp_path / "frozen")))
    assert _counts(run) == {CALIBRATION_BATCHES}
    batch = distill(DistillConfig(**TINY, out=str(tmp_path / "batch")))  # digits' default: batch statistics
    assert _counts(batch) == {teacher_bn_count() + TINY["steps"]}


def _counts(run) -> set[int]:
    state = load_file(run / "student.safetensors")
    return {int(v) for k, v in state.items() if k.endswith("num_batches_tracked")}


def teacher_bn_count() -> int:
    teacher = load_generator("digits-dcgan").module
    (count,) = {int(b) for n, b in teacher.named_buffers() if n.endswith("num_batches_tracked")}
    return count


def test_image_generators_freeze_by_default_and_an_unknown_mode_is_one_clear_error():
    assert DistillConfig(teacher="photo-restore").with_defaults("image").bn_stats == "frozen"
    assert DistillConfig(teacher="digits-dcgan").with_defaults("noise").bn_stats == "batch"
    with pytest.raises(EdgeDistillError, match="--bn-stats"):
        DistillConfig(teacher="digits-dcgan", bn_stats="sync").validate()
