"""The #12 recipe's parts, each against what it is for: the colour term sees a cast, the evaluation's
intervals and colour shift, the refreshed teacher cache, best-checkpoint validation, the time budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import _compute_fid

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.quality import channel_shift, psnr, psnr_per_image
from edgedistill.data.sources import NoiseSource
from edgedistill.distiller.api import distill, resolve_device
from edgedistill.distiller.budget import PROBE_STEPS, PROBE_WARMUP, REFIT_UNTIL, BudgetFitter
from edgedistill.distiller.config import DistillConfig
from edgedistill.distiller.losses import colour_kd, d_feature_layers, d_feature_match, pixel_kd
from edgedistill.distiller.teacher_cache import TeacherCache
from edgedistill.metrics.bootstrap import frechet_ci, frechet_distance, frechet_ratio_ci, mean_ci
from edgedistill.models import create
from edgedistill.models.loading import load_generator

TINY = {"teacher": "digits-dcgan", "width": 0.25, "batch": 4, "log_every": 1, "sample_every": 10**6,
        "ema": 0.9, "threads": 1, "eval_samples": 64}  # fmt: skip


def test_colour_term_sees_a_cast_that_pixel_l1_barely_weighs():
    """A 2 % shift of one channel under per-pixel errors of 10 % of the range: the pixel L1 grows by
    under 1 % of itself, the colour term (whose cells average the errors away) by over a third."""
    torch.manual_seed(0)
    target = torch.rand(4, 3, 64, 64) * 2 - 1
    noisy = target + 0.2 * torch.randn_like(target)
    cast = noisy.clone()
    cast[:, 0] += 0.04  # 2 % of the [-1, 1] range
    assert pixel_kd(cast, target) / pixel_kd(noisy, target) - 1 < 0.01
    assert colour_kd(cast, target) / colour_kd(noisy, target) - 1 > 0.3
    assert colour_kd(target, target) == 0
    with pytest.raises(EdgeDistillError, match="differ"):
        colour_kd(target, target[:, :1])


def test_channel_shift_and_per_image_psnr():
    a = np.full((2, 3, 8, 8), 0.5)
    b = a.copy()
    b[:, 2] += 0.02
    assert channel_shift(b, a) == pytest.approx([0.0, 0.0, 0.02])
    per = psnr_per_image(b, a)
    assert per.shape == (2,) and per.mean() == pytest.approx(psnr(b, a))


def test_frechet_distance_matches_torchmetrics_and_its_interval_holds_it():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(600, 16)), rng.normal(size=(500, 16)) * 1.3 + 0.2
    mu1, mu2 = torch.tensor(real.mean(0)), torch.tensor(fake.mean(0))
    s1, s2 = torch.tensor(np.cov(real, rowvar=False)), torch.tensor(np.cov(fake, rowvar=False))
    reference = float(_compute_fid(mu1, s1, mu2, s2))
    assert frechet_distance(real, fake) == pytest.approx(reference, rel=1e-6)
    lo, hi = frechet_ci(real, fake, resamples=40)
    assert lo < reference < hi


def test_ratio_interval_resamples_student_and_teacher_together():
    """Student outputs a little off the teacher's, on the same inputs: their distances to the data
    move together from draw to draw, so the ratio is known far better than either distance."""
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 8))
    teacher = real + rng.normal(size=real.shape) * 0.8  # the pairs share their inputs
    student = teacher * 1.05 + rng.normal(size=real.shape) * 0.2
    ratio = frechet_distance(real, student) / frechet_distance(real, teacher)
    lo, hi = frechet_ratio_ci(real, student, teacher, paired_real=True, resamples=60)
    assert lo < ratio < hi
    s_lo, s_hi = frechet_ci(real, student, resamples=60)
    t_lo, t_hi = frechet_ci(real, teacher, resamples=60)
    naive = (s_hi / t_lo) - (s_lo / t_hi)  # the ratio's range if the two intervals were independent
    assert hi - lo < naive / 3
    same = frechet_ratio_ci(real, teacher, teacher, paired_real=False, resamples=20)
    assert same == pytest.approx([1.0, 1.0])


def test_mean_interval_holds_the_mean_and_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    small, large = rng.normal(size=50), rng.normal(size=2000)
    lo_s, hi_s = mean_ci(small)
    lo_l, hi_l = mean_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3


def test_d_feature_matching_reads_every_activation_of_the_patchgan():
    disc = create("patchgan", input_nc=3, ndf=8, n_layers=2)
    layers = d_feature_layers(disc)
    assert len(layers) >= 3
    x = torch.randn(2, 4, 8, 8)
    assert d_feature_match([x], [x]) == 0
    with pytest.raises(EdgeDistillError, match="feature maps"):
        d_feature_match([x], [])


def test_refreshed_cache_holds_the_teachers_outputs_on_fresh_inputs():
    teacher = load_generator("digits-dcgan")
    net = teacher.module.eval()
    cache = TeacherCache(net, NoiseSource(teacher.spec, seed=0), size=16, layers=[], seed=0, refresh=4)
    before = cache.inputs.clone()
    cache.batch(step=0, size=4)
    changed = (cache.inputs != before).flatten(1).any(1)
    assert int(changed.sum()) == 4  # four entries renewed, the rest kept
    with torch.no_grad():
        assert torch.allclose(cache.outputs[changed], net(cache.inputs[changed]), atol=1e-5)


def test_validation_keeps_the_best_ema_and_the_time_budget_fits_the_steps(tmp_path):
    run = distill(DistillConfig(**TINY, steps=400, time_budget_s=1e-3, val_every=7, out=str(tmp_path / "r")))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    fitted = [r for r in rows if r.get("event") == "time_budget"]
    assert fitted and fitted[0]["steps"] == 21  # the smallest run a budget allows: 20 timed steps + 1
    assert [r["step"] for r in rows if "val_psnr_vs_teacher" in r] == [7, 14, 21]
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    scores = {r["step"]: r["val_psnr_vs_teacher"] for r in rows if "val_psnr_vs_teacher" in r}
    assert best["step"] == max(scores, key=scores.get)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 21 and metrics["eval_inputs"] == 64
    for key in ("psnr_vs_teacher_ci", "channel_shift_pct", "max_channel_shift_pct", "feature_distance_ci"):
        assert key in metrics, key


def test_the_time_budget_probe_leaves_out_warm_up_and_refits_until_the_decay():
    fitter, wall, due = BudgetFitter(step=0, wall_s=0.0), 0.0, []
    for step in range(1, 1001):
        wall += 1.0 if step <= PROBE_WARMUP else 0.1  # a slow start: allocator, cuDNN, a cold cache
        if fitter.due(step, wall, planned=1000):
            due.append(step)
            assert fitter.seconds_per_step(step, wall) == pytest.approx(0.1)
    assert due[0] == PROBE_STEPS and due == list(range(PROBE_STEPS, int(REFIT_UNTIL * 1000), 100))


def test_a_time_budget_never_runs_past_the_step_cap(tmp_path):
    run = distill(DistillConfig(**TINY, steps=30, time_budget_s=1e4, val_every=0, out=str(tmp_path / "r")))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["steps"] for r in rows if r.get("event") == "time_budget"] == [30]
    assert json.loads((run / "metrics.json").read_text())["steps"] == 30


def test_a_gpu_asked_for_where_there_is_none_is_one_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(EdgeDistillError, match="--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
