"""Distillation losses, feature taps and the choice of feature-KD layers, on tiny real models."""

import math

import pytest
import torch
from torch import nn

from edgedistill.core.errors import EdgeDistillError
from edgedistill.distiller.features import FeatureTap, feature_channels, kd_layer_names
from edgedistill.distiller.losses import LOSS_KINDS, FeatureKD, d_loss, g_loss, kernel_alignment, pixel_kd
from edgedistill.models import create


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: one thread is faster, and never stalls behind a busy CPU's spinning peers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_pixel_kd_is_zero_for_identical_outputs(kind):
    y = torch.randn(2, 3, 8, 8)
    assert pixel_kd(y.clone(), y, kind).item() == 0.0


def test_pixel_kd_known_values_and_teacher_gets_no_gradient():
    student = torch.tensor([0.0, 2.0], requires_grad=True)
    teacher = torch.tensor([1.0, 0.0], requires_grad=True)
    assert pixel_kd(student, teacher, "l1").item() == pytest.approx(1.5)
    loss = pixel_kd(student, teacher, "l2")
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    assert teacher.grad is None
    assert student.grad.tolist() == pytest.approx([-1.0, 2.0])  # d/ds mean((s - t)^2) = (s - t)


def test_pixel_kd_rejects_shape_mismatch():
    with pytest.raises(EdgeDistillError, match="differ in shape"):
        pixel_kd(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 4, 4))


def test_kernel_alignment_is_one_for_itself_and_a_scaled_copy():
    a = torch.randn(4, 6, 5, 5)
    assert kernel_alignment(a, a).item() == pytest.approx(1.0, abs=1e-6)
    assert kernel_alignment(a, 3.5 * a).item() == pytest.approx(1.0, abs=1e-6)


def test_kernel_alignment_known_value_for_orthogonal_samples():
    # a: 4 mutually orthogonal samples (K_a = I); b: 4 identical samples (K_b = all ones), with
    # another channel count. <I, J> / (||I|| ||J||) = 4 / (2 * 4) = 0.5.
    a = torch.eye(4).reshape(4, 4, 1, 1)
    b = torch.ones(4, 2, 3, 3)
    assert kernel_alignment(a, b).item() == pytest.approx(0.5, abs=1e-6)


def test_kernel_alignment_in_unit_interval_for_different_channel_counts():
    a, b = torch.randn(3, 8, 4, 4), torch.randn(3, 5, 4, 4)
    value = kernel_alignment(a, b).item()
    assert 0.0 <= value < 1.0


def test_feature_kd_adapter_trains_adapters_and_student_features():
    kd = FeatureKD([3, 2], [5, 4], mode="adapter")
    assert sum(p.numel() for p in kd.parameters()) == (3 * 5 + 5) + (2 * 4 + 4)
    s_feats = [torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 2, 2, 2, requires_grad=True)]
    t_feats = [torch.randn(2, 5, 4, 4, requires_grad=True), torch.randn(2, 4, 2, 2, requires_grad=True)]
    kd(s_feats, t_feats).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in kd.parameters())
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in s_feats)
    assert all(t.grad is None for t in t_feats)

    # a toy problem the adapters can solve: the teacher's features are a channel mix of the student's
    mixes = [torch.randn(5, 3), torch.randn(4, 2)]
    t_feats = [torch.einsum("oc,nchw->nohw", m, s.detach()) for m, s in zip(mixes, s_feats, strict=True)]
    params = [*kd.parameters(), *s_feats]
    losses = []
    for _ in range(5):  # plain SGD by hand (building torch.optim.SGD costs seconds of imports)
        loss = kd(s_feats, t_feats)
        losses.append(loss.item())
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= 1.0 * g
    assert losses[-1] < 0.5 * losses[0]


def test_feature_kd_kernel_alignment_has_no_parameters_and_zero_loss_for_identical_features():
    kd = FeatureKD([4, 8], [4, 8], mode="kernel_alignment")
    assert list(kd.parameters()) == []
    feats = [torch.randn(3, 4, 6, 6), torch.randn(3, 8, 3, 3)]
    assert kd(feats, [f.clone() for f in feats]).item() == pytest.approx(0.0, abs=1e-6)
    student = [torch.randn(3, 2, 6, 6, requires_grad=True), torch.randn(3, 3, 3, 3, requires_grad=True)]
    loss = kd(student, feats)
    assert 0.0 < loss.item() <= 1.0
    loss.backward()
    assert all(s.grad is not None for s in student)


def test_feature_kd_kernel_alignment_refuses_batch_of_one():
    kd = FeatureKD([4], [4], mode="kernel_alignment")
    with pytest.raises(EdgeDistillError, match="batch"):
        kd([torch.randn(1, 4, 2, 2)], [torch.randn(1, 4, 2, 2)])


def test_feature_kd_rejects_mismatched_layers():
    with pytest.raises(EdgeDistillError, match="2 student layers but 1 teacher"):
        FeatureKD([3, 3], [5])
    kd = FeatureKD([3], [5])
    with pytest.raises(EdgeDistillError, match="built for 1 layers"):
        kd([torch.randn(1, 3, 4, 4)] * 2, [torch.randn(1, 5, 4, 4)] * 2)
    with pytest.raises(EdgeDistillError, match="layer 0: expected"):
        kd([torch.randn(1, 4, 4, 4)], [torch.randn(1, 5, 4, 4)])
    with pytest.raises(EdgeDistillError, match="spatial"):
        kd([torch.randn(1, 3, 4, 4)], [torch.randn(1, 5, 2, 2)])


def _t(value: float) -> torch.Tensor:
    return torch.full((2, 1, 3, 3), value)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    ("kind", "real", "fake", "expected"),
    [
        ("lsgan", 1.0, 0.0, 0.0),
        ("lsgan", 0.0, 1.0, 2.0),
        ("lsgan", 0.5, 0.5, 0.5),
        ("hinge", 2.0, -2.0, 0.0),
        ("hinge", 0.0, 0.0, 2.0),
        ("hinge", 0.5, -3.0, 0.5),
        ("nonsat", 0.0, 0.0, 2 * math.log(2)),
        ("nonsat", 2.0, -1.0, _softplus(-2.0) + _softplus(-1.0)),
    ],
)
def test_d_loss_known_values(kind, real, fake, expected):
    assert d_loss(_t(real), _t(fake), kind).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    ("kind", "fake", "expected"),
    [
        ("lsgan", 1.0, 0.0),
        ("lsgan", -1.0, 4.0),
        ("hinge", 3.0, -3.0),
        ("nonsat", 0.0, math.log(2)),
        ("nonsat", 1.5, _softplus(-1.5)),
    ],
)
def test_g_loss_known_values(kind, fake, expected):
    assert g_loss(_t(fake), kind).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_adversarial_losses_push_outputs_the_right_way(kind):
    real, fake = torch.full((4,), 0.5, requires_grad=True), torch.full((4,), 0.5, requires_grad=True)
    d_loss(real, fake, kind).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()  # D raises real, lowers fake
    fake_g = torch.full((4,), 0.5, requires_grad=True)
    g_loss(fake_g, kind).backward()
    assert (fake_g.grad < 0).all()  # G raises D's score of its samples


@pytest.mark.parametrize(
    ("call", "valid"),
    [
        (lambda: pixel_kd(_t(0), _t(0), "l3"), "l1, l2"),
        (lambda: d_loss(_t(0), _t(0), "wgan"), "hinge, lsgan, nonsat"),
        (lambda: g_loss(_t(0), "vanilla"), "hinge, lsgan, nonsat"),
        (lambda: FeatureKD([1], [1], mode="attention"), "adapter, kernel_alignment"),
    ],
)
def test_unknown_kind_is_one_clear_line(call, valid):
    with pytest.raises(EdgeDistillError) as info:
        call()
    message = str(info.value)
    assert "unknown" in message and valid in message and "\n" not in message


def _toy_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1))


def test_feature_tap_records_in_order_refreshes_and_removes_hooks():
    net = _toy_net()
    x1, x2 = torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5)
    with FeatureTap(net, ["2", "0"]) as tap:
        net(x1)
        last, conv = tap.features
        assert last.shape == (1, 2, 5, 5) and conv.shape == (1, 4, 5, 5)
        # recorded before the in-place ReLU overwrote it
        torch.testing.assert_close(conv, net[0](x1))
        assert (conv < 0).any()
        net(x2)
        torch.testing.assert_close(tap.features[1], net[0](x2))
    assert not net._forward_pre_hooks and all(not m._forward_hooks for m in net.modules())
    net(x1)  # no longer recorded
    torch.testing.assert_close(tap.features[1], net[0](x2))


def test_feature_tap_errors_name_the_layer():
    net = _toy_net()
    with pytest.raises(EdgeDistillError, match="no submodule 'nope'"):
        FeatureTap(net, ["nope"])
    with FeatureTap(net, ["0"]) as tap, pytest.raises(EdgeDistillError, match="'0' did not run"):
        _ = tap.features


def _check_pairs(teacher, student, names, x):
    t_names = {n for n, _ in teacher.named_modules()}
    s_names = {n for n, _ in student.named_modules()}
    assert names and all(n in t_names and n in s_names for n in names)
    with FeatureTap(teacher, names) as t_tap, FeatureTap(student, names) as s_tap, torch.no_grad():
        t_out, s_out = teacher(*x), student(*x)
    for t, s in zip(t_tap.features, s_tap.features, strict=True):
        assert t.ndim == s.ndim == 4 and t.shape[2:] == s.shape[2:]
        assert t.shape != t_out.shape  # never the output layer
    assert s_out.shape == t_out.shape


def test_kd_layer_names_resnet_by_role():
    teacher, student = create("resnet", ngf=8, n_blocks=4), create("resnet", ngf=4, n_blocks=4)
    x = (torch.rand(1, 3, 16, 16),)
    names = kd_layer_names(teacher, student, x)
    # ReLU after the 2nd downsampling, blocks 3 and 4 of 4, ReLU after the first upsampling
    assert names == ["model.9", "model.12", "model.13", "model.16"]
    _check_pairs(teacher, student, names, x)
    t_ch, s_ch = feature_channels(teacher, names, x), feature_channels(student, names, x)
    assert t_ch == [32, 32, 32, 16] and s_ch == [16, 16, 16, 8]

    kd = FeatureKD(s_ch, t_ch)
    with FeatureTap(teacher, names) as t_tap, FeatureTap(student, names) as s_tap:
        with torch.no_grad():
            teacher(*x)
        student(*x)
        kd(s_tap.features, t_tap.features).backward()
    assert student.model[1].weight.grad is not None


def test_kd_layer_names_leaves_train_mode_and_batchnorm_stats_alone():
    teacher, student = (
        create("resnet", ngf=8, n_blocks=2, norm="batch"),
        create("resnet", ngf=4, n_blocks=2, norm="batch"),
    )
    before = teacher.model[2].running_mean.clone()
    kd_layer_names(teacher, student, (torch.rand(2, 3, 16, 16),))
    assert teacher.training and student.training
    torch.testing.assert_close(teacher.model[2].running_mean, before)


def test_kd_layer_names_unet_and_dcgan():
    teacher, student = create("unet", ngf=8, num_downs=5), create("unet", ngf=4, num_downs=5)
    x = (torch.rand(2, 3, 32, 32),)
    names = kd_layer_names(teacher, student, x, max_layers=2)
    assert sorted(names) == ["model.model.1", "model.model.1.model.3"]
    _check_pairs(teacher, student, names, x)

    teacher, student = (
        create("dcgan", nz=8, ngf=8, image_size=32),
        create("dcgan", nz=8, ngf=4, image_size=32),
    )
    z = (torch.randn(2, 8, 1, 1),)
    names = kd_layer_names(teacher, student, z)
    assert names == ["main.2", "main.5", "main.8"]
    _check_pairs(teacher, student, names, z)


def _generic(width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(width, 3, 3, padding=1), nn.Tanh(),
    )  # fmt: skip


def test_kd_layer_names_generic_sequential():
    teacher, student = _generic(8), _generic(4)
    x = (torch.rand(1, 3, 16, 16),)
    names = kd_layer_names(teacher, student, x)
    assert len(names) == 4
    assert "8" not in names and "9" not in names  # the output conv and tanh
    _check_pairs(teacher, student, names, x)
    assert len(kd_layer_names(teacher, student, x, max_layers=2)) == 2


def test_kd_layer_names_unknown_family():
    with pytest.raises(EdgeDistillError, match="resnet, unet, dcgan, generic"):
        kd_layer_names(_generic(2), _generic(2), (torch.rand(1, 3, 8, 8),), family="stylegan")
