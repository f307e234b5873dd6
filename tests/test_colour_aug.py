"""Colour augmentation of training crops (data/colour_aug.py): exact for per-channel tasks, applied to
input and target alike, never to held-out data, refused where it would break the task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import spec_for_family
from edgedistill.data.bundled import degrade
from edgedistill.data.colour_aug import apply_colour, channel_permutations, colour_transforms, hue_turns
from edgedistill.data.sources import make_source
from edgedistill.models.loading import load_generator


def permute_channels(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return apply_colour(x, torch.eye(3)[order])


def test_permutation_commutes_with_the_restoration_degradation():
    """Blur + noise act on each channel alike: degrade(permute(x)) is permute(degrade(x)) up to which
    noise sample lands on which channel (same law), so the permuted clean crop stays the right target.
    Checked exactly by taking the noise out: degrading a flat grey image draws the same noise alone."""
    clean = 0.2 + 0.6 * torch.rand(6, 3, 32, 32)  # away from the clamp at 0 and 1
    order = channel_permutations(6, torch.Generator().manual_seed(1))
    assert (order != torch.tensor([0, 1, 2])).any()
    seeded = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    noise = degrade(torch.full_like(clean, 0.5), seeded()) - 0.5
    a = degrade(permute_channels(clean, order), seeded()) - noise
    b = permute_channels(degrade(clean, seeded()) - noise, order)
    assert torch.allclose(a, b, atol=1e-5)


def test_permute_reorders_each_sample_by_its_own_row():
    x = torch.zeros(2, 3, 2, 2)
    x[:, 0], x[:, 1], x[:, 2] = 0.1, 0.2, 0.3
    out = permute_channels(x, torch.tensor([[2, 0, 1], [0, 1, 2]]))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.3, 0.1, 0.2]))
    assert torch.allclose(out[1, :, 0, 0], torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="3 channels"):
        apply_colour(x[:, :1], torch.eye(3).expand(2, 3, 3))


def test_hue_turns_keep_grey_and_luminance_and_reach_every_hue():
    gen = torch.Generator().manual_seed(0)
    turns = hue_turns(64, gen)
    assert torch.allclose(turns @ turns.transpose(1, 2), torch.eye(3).expand(64, 3, 3), atol=1e-6)
    assert torch.allclose(turns @ torch.ones(3), torch.ones(64, 3), atol=1e-6)  # grey stays grey
    red = torch.zeros(4000, 3, 1, 1)
    red[:, 0] = 0.6
    out = apply_colour(red + 0.2, colour_transforms("hue", 4000, gen))[:, :, 0, 0]
    assert torch.allclose(out.mean(1), torch.full((4000,), 0.4), atol=1e-5)  # inside the cube: luminance kept
    hue = torch.atan2(3**0.5 * (out[:, 1] - out[:, 2]), 2 * out[:, 0] - out[:, 1] - out[:, 2])
    counts = torch.histc(hue, bins=12, min=-torch.pi, max=torch.pi)
    assert counts.min() > 4000 / 12 * 0.6, counts  # every 30-degree sector of the hue circle is met


def test_bundled_photos_augment_training_crops_only():
    spec = load_generator("photo-restore").spec
    plain = make_source("photo-restore", spec, None, 0, 32, eval_count=8, colour_aug="none")
    aug = make_source("photo-restore", spec, None, 0, 32, eval_count=8)  # default: permute
    a, b = plain.batch(3, 32), aug.batch(3, 32)
    assert a.real is not None and b.real is not None
    # same crops, reordered channels: per-sample sorted channel means agree, raw ones do not all
    ma, mb = a.real.mean((2, 3)), b.real.mean((2, 3))
    assert not torch.allclose(ma, mb)
    assert torch.allclose(ma.sort(1).values, mb.sort(1).values, atol=1e-5)
    assert torch.equal(plain.heldout().inputs, aug.heldout().inputs)  # judged on the same untouched crops
    turned = make_source("photo-restore", spec, None, 0, 32, eval_count=8, colour_aug="hue")
    d = turned.batch(3, 32)
    assert d.real is not None and d.real.shape == a.real.shape and not torch.allclose(d.real, b.real)
    assert torch.equal(turned.heldout().real, plain.heldout().real)


def _pairs(root: Path, n: int) -> Path:
    """A/ inputs (r, g, b) = (i, 100, 200), B/ targets (i+10, 110, 210): a permutation shows in both."""
    for i in range(n):
        for side, off in (("A", 0), ("B", 10)):
            (root / side).mkdir(parents=True, exist_ok=True)
            px = np.empty((20, 20, 3), np.uint8)
            px[..., 0], px[..., 1], px[..., 2] = 20 + i + off, 100 + off, 200 + off
            Image.fromarray(px).save(root / side / f"{i:03d}.png")
    return root


def test_folder_pairs_permute_input_and_target_alike(tmp_path):
    spec = spec_for_family("resnet", {"ngf": 4, "n_blocks": 1})
    src = make_source("resnet:t", spec, _pairs(tmp_path / "d", 20), 0, 16, colour_aug="permute")
    b = src.batch(0, 24)
    assert b.real is not None
    x = ((b.inputs.mean((2, 3)) + 1) / 2 * 255).round()
    y = ((b.real.mean((2, 3)) + 1) / 2 * 255).round()
    assert torch.allclose(y - x, torch.full_like(x, 10.0), atol=1.0), "target channels follow input's"
    assert (x.argmax(1) != 2).any(), "some samples were reordered"
    assert torch.all(
        (make_source("resnet:t", spec, tmp_path / "d", 0, 16).batch(0, 24).inputs.mean((2, 3))).diff(dim=1)
        > 0
    )


def test_colour_aug_is_refused_where_it_would_break_the_task(tmp_path):
    gray_to_rgb = spec_for_family("resnet", {"ngf": 4, "n_blocks": 1, "input_nc": 1})
    data = tmp_path / "gray"
    data.mkdir()
    for i in range(4):
        Image.fromarray(np.full((20, 20), 50 + i, np.uint8)).save(data / f"{i}.png")
    with pytest.raises(EdgeDistillError, match="colour-aug none"):
        make_source("resnet:t", gray_to_rgb, data, 0, 16, colour_aug="permute")
    with pytest.raises(EdgeDistillError, match="one of none, permute, hue"):
        make_source("resnet:t", gray_to_rgb, data, 0, 16, colour_aug="sepia")
    noise = load_generator("digits-dcgan").spec
    with pytest.raises(EdgeDistillError, match="image-to-image"):
        make_source("digits-dcgan", noise, None, 0, 0, colour_aug="permute")


def test_evaluation_says_whose_colour_is_off_when_there_is_ground_truth():
    """A student that matches the truth where the teacher is 2 % short in red: vs the teacher it shows
    +2 %, vs the truth 0, and the teacher's own -2 % is reported next to it."""
    from edgedistill.distiller.evaluate import evaluate_outputs

    spec = spec_for_family("resnet", {"ngf": 4, "n_blocks": 1})
    truth = torch.rand(8, 3, 16, 16) * 1.6 - 0.8
    teacher = truth.clone()
    teacher[:, 0] -= 0.04  # 2 % of the [-1, 1] range
    m = evaluate_outputs(spec, teacher, truth.clone(), truth, feature_net=None)
    assert m["channel_shift_pct"] == pytest.approx([2.0, 0.0, 0.0], abs=1e-3)
    assert m["channel_shift_vs_target_pct"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-3)
    assert m["teacher_channel_shift_vs_target_pct"] == pytest.approx([-2.0, 0.0, 0.0], abs=1e-3)
