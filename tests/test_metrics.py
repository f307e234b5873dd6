"""PSNR/SSIM known values and FID/KID on pluggable feature nets (real torch + torchmetrics)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.quality import MAX_PSNR, max_abs_err, psnr, ssim
from edgedistill.metrics.feature_distance import feature_distance, load_feature_net
from edgedistill.models import create
from edgedistill.models.embedded import EMBEDDED_DIR


def tiny_net() -> nn.Module:
    """A randomly initialised conv net: random features still separate image statistics.

    N(0, 0.3) weights keep the features O(1); with torch's default init they are ~0.01, where
    KID's cubic kernel (x.y / d + 1)^3 is nearly constant and every KID is lost in its noise.
    """
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip
    for p in net.parameters():
        nn.init.normal_(p, std=0.3)
    return net


def smooth(n: int, size: int = 32) -> torch.Tensor:
    """Low-frequency images: 4x4 random colours blown up bilinearly."""
    return F.interpolate(torch.rand(n, 3, 4, 4), size=(size, size), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------ psnr / ssim
def test_psnr_known_values():
    a = torch.zeros(2, 3, 8, 8)
    b = torch.stack([torch.full((3, 8, 8), 0.1), torch.full((3, 8, 8), 0.01)])
    # per-image MSE 1e-2 -> 20 dB and 1e-4 -> 40 dB; the mean is over images, not over pooled MSE
    assert psnr(a[:1], b[:1]) == pytest.approx(20.0, abs=1e-4)
    assert psnr(a, b) == pytest.approx(30.0, abs=1e-4)
    assert psnr(a * 255, b * 255, data_range=255.0) == pytest.approx(30.0, abs=1e-4)
    assert psnr(b, b) == MAX_PSNR


def test_ssim_known_values():
    x = torch.rand(3, 3, 32, 32)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    assert ssim(x, torch.rand(3, 3, 32, 32)) < 0.2  # independent noise: no shared structure
    assert 0.5 < ssim(x, (x + 0.05 * torch.randn_like(x)).clamp(0, 1)) < 1.0


def test_the_one_definition_agrees_with_torchmetrics():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 40, 52, generator=gen)
    b = (a + 0.08 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    tm_ssim = float(structural_similarity_index_measure(a, b, data_range=1.0, reduction="none").mean())
    tm_psnr = float(peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3)).mean())
    assert ssim(a.numpy(), b.numpy()) == pytest.approx(tm_ssim, abs=1e-3)
    assert psnr(a.numpy(), b.numpy()) == pytest.approx(tm_psnr, abs=1e-3)
    assert psnr(a, b) == psnr(a.numpy(), b.numpy())  # tensors are taken as they are
    gray = a[:, :1]
    assert ssim(gray.numpy(), gray.numpy()) == pytest.approx(1.0, abs=1e-9)
    assert psnr(gray.numpy(), gray.numpy()) == MAX_PSNR
    assert max_abs_err(a.numpy(), b.numpy()) == pytest.approx(float((a - b).abs().max()))
    with pytest.raises(EdgeDistillError, match="smaller than"):
        ssim(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8)))
    with pytest.raises(EdgeDistillError, match="shape"):
        psnr(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 9)))


def test_quality_bad_inputs_are_one_liners():
    with pytest.raises(EdgeDistillError, match="shape"):
        psnr(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 8, 8))
    with pytest.raises(EdgeDistillError, match="window"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


# ------------------------------------------------------------------------------- feature distance
def test_distance_orders_sets():
    net = load_feature_net(tiny_net())
    assert (net.channels, net.size, net.dim) == (3, None, 16)
    a, b = smooth(128), smooth(128)  # two draws of one distribution
    noise = torch.rand(128, 3, 32, 32)
    same = feature_distance(net, a, a, kid_subset=64)
    halves = feature_distance(net, a, b, kid_subset=64)
    apart = feature_distance(net, a, noise, kid_subset=64)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6 * apart["fid"])
    assert apart["fid"] > 10 * halves["fid"] > 0
    # KID is an unbiased estimate averaged over random subsets: judge it against its spread
    assert abs(same["kid"]) < 2 * same["kid_std"]
    assert apart["kid"] > 3 * apart["kid_std"]
    assert apart["kid"] - halves["kid"] > 3 * max(apart["kid_std"], halves["kid_std"])
    assert (apart["n_real"], apart["n_fake"], apart["net"]) == (128, 128, "Sequential")


def test_distance_is_reproducible_and_batch_independent():
    net = load_feature_net(tiny_net())
    a, b = smooth(40), torch.rand(40, 3, 32, 32)
    r1 = feature_distance(net, a, b, batch_size=7)  # kid_subset 100 is capped at the 40 images
    r2 = feature_distance(net, a, b, batch_size=64)
    assert r1["kid_subset"] == 40
    assert r1["fid"] == pytest.approx(r2["fid"], rel=1e-6)
    assert r1["kid"] == pytest.approx(r2["kid"], rel=1e-6)


def test_gray_images_on_a_color_net():
    net = load_feature_net(tiny_net())
    gray = smooth(16).mean(1, keepdim=True)
    # a 1-channel image is repeated to the net's 3 channels: same features as the RGB copy
    assert torch.allclose(net.embed(gray), net.embed(gray.repeat(1, 3, 1, 1)))
    assert feature_distance(net, gray, gray.repeat(1, 3, 1, 1))["fid"] == pytest.approx(0.0, abs=1e-6)


def test_digit_classifier_gets_its_input_convention():
    clf = create("digit_classifier").eval()
    net = load_feature_net(clf)
    assert (net.channels, net.size, net.dim) == (1, (32, 32), 64)
    x = torch.rand(4, 3, 64, 64)
    small = F.interpolate(x.mean(1, keepdim=True), size=(32, 32), mode="bilinear", antialias=True)
    with torch.no_grad():
        expected = clf.features(small * 2 - 1)  # [0, 1] -> the classifier's [-1, 1]
    assert torch.allclose(net.embed(x).float(), expected, atol=1e-5)


def test_bad_images_are_one_liners():
    net = load_feature_net(tiny_net())
    with pytest.raises(EdgeDistillError, match=r"\[0, 1\]"):
        feature_distance(net, torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32))
    with pytest.raises(EdgeDistillError, match="at least 2"):
        feature_distance(net, torch.rand(1, 3, 32, 32), torch.rand(4, 3, 32, 32))


# ---------------------------------------------------------------------------------------- loading
def test_load_torchscript_file(tmp_path):
    module = tiny_net().eval()
    path = tmp_path / "my_inception.pt"
    torch.jit.trace(module, torch.rand(1, 3, 32, 32)).save(str(path))
    net = load_feature_net(path)
    assert (net.name, net.channels, net.dim) == ("my_inception.pt", 3, 16)
    x = torch.rand(5, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(net.embed(x).float(), module(x), atol=1e-6)
    assert load_feature_net(str(path), size=(32, 32)).size == (32, 32)


def test_load_errors_are_one_liners(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(EdgeDistillError, match="not a TorchScript file"):
        load_feature_net(bad)
    with pytest.raises(EdgeDistillError, match="no feature net for 'no-such-teacher'"):
        load_feature_net("no-such-teacher")
    with pytest.raises(EdgeDistillError, match="probe"):
        load_feature_net(tiny_net(), channels=1)  # its first conv wants 3 channels


def test_photo_restore_feature_net():
    from edgedistill.data.bundled import bundled_photos, center_crop

    meta = json.loads((EMBEDDED_DIR / "photo-restore" / "features.json").read_text())
    assert meta["accuracy"] > 0.5  # held-out crops, 18 photos: chance is 0.056
    net = load_feature_net("photo-restore")
    assert (net.name, net.channels, net.size, net.dim) == ("photo-restore:photo_features", 3, None, 128)
    assert net.embed(torch.rand(2, 3, 48, 80)).shape == (2, 128)  # any size >= 32
    crops = torch.stack([center_crop(img, 64) for img in bundled_photos("train")])
    with torch.no_grad():
        pred = net.module.net(crops).argmax(1)
    assert (pred == torch.arange(len(crops))).float().mean() > 0.6


def test_digits_feature_net():
    net = load_feature_net("digits-dcgan")
    assert (net.name, net.channels, net.size) == ("digits-dcgan:digit_classifier", 1, (32, 32))
    assert net.embed(torch.rand(3, 1, 32, 32)).shape == (3, net.dim)
