"""Students: slimmed copies of built-in teachers and torch-pruned custom modules (tiny, real torch)."""

import math

import pytest
import torch
from torch import nn

from edgedistill.core.errors import EdgeDistillError
from edgedistill.distiller.pruned import save_pt2
from edgedistill.distiller.student import make_student
from edgedistill.models import GeneratorSpec, TensorSpec, create, spec_for_family
from edgedistill.models.loading import load_generator

TEACHERS = {
    "resnet-instance": ("resnet", {"ngf": 8, "n_blocks": 2, "norm": "instance"}),
    "resnet-batch": ("resnet", {"ngf": 8, "n_blocks": 2, "norm": "batch"}),
    "unet": ("unet", {"ngf": 4, "num_downs": 5}),
    "dcgan": ("dcgan", {"nz": 8, "ngf": 8, "nc": 1, "image_size": 32}),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convs run far slower on 2 threads when another job holds the cores (spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _input(family: str, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 8, 1, 1) if family == "dcgan" else torch.rand(batch, 3, 32, 32) * 2 - 1


def _teacher(name: str) -> tuple[nn.Module, GeneratorSpec, torch.Tensor]:
    """A teacher in eval mode whose BatchNorm stats are not the defaults."""
    family, kwargs = TEACHERS[name]
    net = create(family, **kwargs).train()
    with torch.no_grad():
        for _ in range(2):
            net(_input(family, batch=4))
    spec = spec_for_family(family, kwargs)
    spec.provenance = {"sha256": "abc"}
    return net.eval(), spec, _input(family)


def _run(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(x)


@pytest.mark.parametrize("name", list(TEACHERS))
def test_width_one_inherits_the_teacher_exactly(name):
    teacher, spec, x = _teacher(name)
    student, new_spec = make_student(teacher, spec, 1.0)
    assert student is not teacher
    assert torch.allclose(_run(student, x), _run(teacher, x), atol=1e-6)
    assert new_spec.kwargs == spec.kwargs
    assert new_spec.provenance == {
        "teacher": "abc",
        "width": 1.0,
        "init": "inherit",
        "method": "slimmed copy",
    }


@pytest.mark.parametrize("name", ["resnet-batch", "unet", "dcgan"])
@pytest.mark.parametrize(("width", "ngf"), [(0.5, 4), (0.25, 2)])
def test_slim_students_fit_the_family_at_the_new_width(name, width, ngf):
    family, kwargs = TEACHERS[name]
    teacher, spec, x = _teacher(name)
    ngf = ngf // 2 if family == "unet" else ngf  # the unet teacher has ngf 4
    for init in ("inherit", "scratch"):
        student, new_spec = make_student(teacher, spec, width, init=init)
        assert new_spec.family == family and new_spec.kwargs == {**kwargs, "ngf": ngf}
        assert new_spec.inputs == spec.inputs and new_spec.outputs == spec.outputs
        fresh = create(family, **new_spec.kwargs)
        fresh.load_state_dict(student.state_dict())  # strict: same keys and shapes
        assert _run(student, x).shape == _run(teacher, x).shape
        assert new_spec.provenance["init"] == init
        # the first layer sees every input channel, so an inherited filter is one of the teacher's
        kept, theirs = _first_filters(student), _first_filters(teacher)
        assert len(kept) == round(len(theirs) * width)
        matches = (kept[:, None] == theirs[None]).all(-1).any(1)
        assert matches.all() if init == "inherit" else not matches.any()


def _first_filters(net: nn.Module) -> torch.Tensor:
    """The first weighted layer's filters, one flattened row per output channel."""
    layer = next(m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d))
    w = layer.weight if isinstance(layer, nn.Conv2d) else layer.weight.transpose(0, 1)
    return w.detach().flatten(1)


def _plant_dead_channels(net: nn.Module, shared: set[str]) -> None:
    """Zero half the output channels of every conv but the last (and the BatchNorm after it).

    The convs named in `shared` add into one residual trunk, so they lose the same channels. A
    student that keeps exactly the live channels everywhere computes the teacher's output.
    """
    modules = dict(net.named_modules())
    convs = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][:-1]
    trunk_dead = None
    with torch.no_grad():
        for name in convs:
            conv = modules[name]
            out_dim = 0 if isinstance(conv, nn.Conv2d) else 1
            size = conv.weight.shape[out_dim]
            dead = torch.randperm(size)[: size // 2]
            if name in shared:
                trunk_dead = dead if trunk_dead is None else trunk_dead
                dead = trunk_dead
            conv.weight.index_fill_(out_dim, dead, 0.0)
            if conv.bias is not None:
                conv.bias[dead] = 0.0
            parent, _, index = name.rpartition(".")
            norm = modules.get(f"{parent}.{int(index) + 1}")
            if isinstance(norm, nn.BatchNorm2d):
                norm.weight[dead] = 0.0
                norm.bias[dead] = 0.0


@pytest.mark.parametrize("name", ["resnet-batch", "resnet-instance", "unet"])
def test_inherit_keeps_the_strongest_channels_through_residuals_and_skips(name):
    teacher, spec, x = _teacher(name)
    shared = (
        {"model.7"} | {f"model.{10 + b}.conv_block.5" for b in range(2)}
        if name.startswith("resnet")
        else set()
    )
    _plant_dead_channels(teacher, shared)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    inherited, _ = make_student(teacher, spec, 0.5)
    scratch, _ = make_student(teacher, spec, 0.5, init="scratch")
    want = _run(teacher, x)
    assert torch.allclose(_run(inherited, x), want, atol=1e-5)
    assert not torch.allclose(_run(scratch, x), want, atol=1e-2)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # teacher untouched


def test_residual_trunk_is_cut_at_one_index_set():
    """Stem, residual outputs and trunk consumers keep the same channels, chosen by summed L1."""
    teacher, spec, _ = _teacher("resnet-batch")
    tags = torch.arange(32.0)
    with torch.no_grad():
        teacher.model[7].weight[:16] *= 3  # the stem alone prefers channels 0-15 ...
        for b in (10, 11):
            teacher.model[b].conv_block[5].weight[16:] *= 3  # ... the two blocks prefer 16-31
            teacher.model[b].conv_block[6].running_mean.copy_(tags)  # channel ids ride along
            teacher.model[b].conv_block[1].weight.copy_(tags[None, :, None, None].expand(32, 32, 3, 3))
        teacher.model[8].running_mean.copy_(tags)
        teacher.model[12].weight.copy_(tags[:, None, None, None].expand(32, 16, 3, 3))
    s = make_student(teacher, spec, 0.5)[0].model
    want = list(range(16, 32))
    kept = [s[8].running_mean, s[12].weight[:, 0, 0, 0]]
    for b in (10, 11):
        kept += [s[b].conv_block[6].running_mean, s[b].conv_block[1].weight[0, :, 0, 0]]
    assert all(k.tolist() == want for k in kept)


def test_norm_change_drops_or_zeroes_conv_biases():
    teacher, spec, x = _teacher("resnet-instance")
    batch, batch_spec = make_student(teacher, spec, 1.0, norm="batch")
    assert batch_spec.kwargs["norm"] == "batch"
    state, old = batch.state_dict(), teacher.state_dict()
    assert "model.1.bias" not in state and "model.2.running_mean" in state
    assert torch.equal(state["model.10.conv_block.1.weight"], old["model.10.conv_block.1.weight"])
    assert _run(batch, x).shape == x.shape

    back, back_spec = make_student(batch, batch_spec, 0.5, norm="instance")
    state = back.state_dict()
    assert back_spec.kwargs == {**spec.kwargs, "ngf": 4}
    assert "model.2.running_mean" not in state and torch.count_nonzero(state["model.1.bias"]) == 0
    assert torch.isfinite(_run(back, x)).all()


class TinySR(nn.Module):
    """An ESPCN-like 2x super-resolution net: PReLU features, PixelShuffle output."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.PReLU(c), nn.Conv2d(c, c, 3, padding=1), nn.PReLU(c)
        )
        self.tail = nn.Conv2d(c, 3 * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.tail(self.body(x)))


class TinyResidual(nn.Module):
    """Residual features and a global skip from the input image."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.block = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1)
        )
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return x + torch.tanh(self.out(h + self.block(h)))


def _custom_spec() -> GeneratorSpec:
    io = ["N", 3, "H", "W"]
    return GeneratorSpec(
        kind="image",
        inputs=[TensorSpec("image", io)],
        outputs=[TensorSpec("output", io)],
        default_size=(32, 32),
        provenance={"source": "user.py"},
    )


def _params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("cls", [TinySR, TinyResidual])
def test_custom_modules_are_pruned_and_round_trip_through_pt2(cls, tmp_path):
    teacher = cls().eval()
    x = torch.rand(1, 3, 32, 32)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student, spec = make_student(teacher, _custom_spec(), 0.5, example_inputs=(x,))
    assert _params(student) < 0.5 * _params(teacher)
    assert _run(student, x).shape == _run(teacher, x).shape
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert spec.family is None and spec.kwargs == {}
    assert spec.provenance == {
        "teacher": "user.py",
        "width": 0.5,
        "init": "inherit",
        "method": "torch-pruning",
    }

    path = save_pt2(student, (x,), tmp_path / "student.pt2")
    assert [p.name for p in tmp_path.iterdir()] == ["student.pt2"]  # no temp file left behind
    loaded = load_generator(path)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), _run(student, x), atol=1e-6)
        other = torch.rand(1, 3, 24, 40)  # dynamic H/W
        assert torch.allclose(loaded.module(other), _run(student, other), atol=1e-6)


def test_custom_module_width_one_and_scratch():
    teacher, x = TinySR().eval(), torch.rand(1, 3, 16, 16)
    same, _ = make_student(teacher, _custom_spec(), 1.0, example_inputs=(x,))
    assert torch.equal(_run(same, x), _run(teacher, x))
    fresh, spec = make_student(teacher, _custom_spec(), 0.5, init="scratch", example_inputs=(x,))
    assert spec.provenance["init"] == "scratch"
    kept = fresh.body[0].weight.shape[0]
    assert not torch.equal(fresh.body[0].weight, teacher.body[0].weight[:kept])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0.0}, "width"),
        ({"width": 1.5}, "width"),
        ({"width": math.nan}, "width"),
        ({"width": 0.5, "init": "random"}, "init"),
        ({"width": 0.5, "norm": "group"}, "norm"),
    ],
)
def test_bad_arguments_are_one_clear_error(kwargs, message):
    teacher, spec, _ = _teacher("unet")
    with pytest.raises(EdgeDistillError, match=message):
        make_student(teacher, spec, **kwargs)


def test_custom_module_needs_example_inputs_and_dcgan_takes_no_norm():
    with pytest.raises(EdgeDistillError, match="example_inputs"):
        make_student(TinySR(), _custom_spec(), 0.5)
    teacher, spec, _ = _teacher("dcgan")
    with pytest.raises(EdgeDistillError, match="norm"):
        make_student(teacher, spec, 0.5, norm="batch")
    with pytest.raises(EdgeDistillError, match="example_inputs of shape"):
        make_student(TinySR(), _custom_spec(), 0.5, example_inputs=(torch.rand(1, 4, 8, 8),))


def test_teacher_that_does_not_fit_its_spec_is_one_clear_error():
    teacher, spec, _ = _teacher("resnet-batch")
    wrong = spec_for_family("resnet", {**spec.kwargs, "n_blocks": 3})
    with pytest.raises(EdgeDistillError, match="do not fit its spec"):
        make_student(torch.jit.script(teacher), wrong, 0.5)


# ------------------------------------------------------------------ students from an architecture
def test_arch_student_with_the_teachers_arch_is_the_teacher():
    from edgedistill.distiller.student import make_student_from_arch

    teacher, spec, x = _teacher("resnet-batch")
    student, new_spec = make_student_from_arch(teacher, spec, {"widths": [8, 16, 32, 16, 8], "n_blocks": 2})
    assert torch.equal(_run(student, x), _run(teacher, x))
    assert new_spec.provenance["arch"]["n_blocks"] == 2


@pytest.mark.parametrize("name", ["resnet-batch", "resnet-instance", "unet", "dcgan"])
def test_per_stage_widths_inherit_the_teachers_strongest_channels(name):
    """Per-stage widths slice each stage's own channel group: the kept stem filters are the
    teacher's strongest, in order, and every kept tensor equals the teacher's slice."""
    from edgedistill.distiller.student import make_student_from_arch

    teacher, spec, x = _teacher(name)
    widths = {"resnet": [4, 8, 16, 8, 8], "unet": [2, 8, 4, 8, 16], "dcgan": [16, 8, 4]}[spec.family]
    student, new_spec = make_student_from_arch(teacher, spec, {"widths": widths})
    assert new_spec.kwargs["widths"] == widths and _run(student, x).shape == _run(teacher, x).shape
    rebuilt = create(spec.family, **new_spec.kwargs)
    rebuilt.load_state_dict(student.state_dict())  # the spec alone rebuilds it
    first = next(k for k, v in teacher.state_dict().items() if v.ndim == 4)
    t_w, s_w = teacher.state_dict()[first], student.state_dict()[first]
    cout = 1 if spec.family == "dcgan" else 0
    l1 = t_w.abs().sum(dim=[d for d in range(4) if d != cout])
    kept = l1.topk(s_w.shape[cout]).indices.sort().values
    assert torch.equal(s_w, t_w.index_select(cout, kept))


@pytest.mark.parametrize("name", ["resnet-batch", "resnet-instance", "unet", "dcgan"])
def test_a_pixelshuffle_student_inherits_the_teachers_conv_transposes_exactly(name):
    """A stride-2 ConvTranspose is a conv + PixelShuffle with some taps zero: the student swapping
    one for the other (int8 on ONNX Runtime, where ConvTranspose runs fp32) starts as the student
    that kept it (resnet/unet 3x3 and 4x4 kernels, dcgan's 4x4), not from fresh weights."""
    from edgedistill.distiller.student import make_student_from_arch
    from edgedistill.models.ops import PixelShuffleUp

    teacher, spec, x = _teacher(name)
    widths = {"resnet": [4, 8, 16, 8, 8], "unet": [2, 8, 4, 8, 16], "dcgan": [16, 8, 4]}[spec.family]
    kept, _ = make_student_from_arch(teacher, spec, {"widths": widths})
    swapped, new_spec = make_student_from_arch(teacher, spec, {"widths": widths, "upsample": "pixelshuffle"})
    assert any(isinstance(m, PixelShuffleUp) for m in swapped.modules())
    assert torch.allclose(_run(swapped, x), _run(kept, x), atol=1e-5)
    rebuilt = create(spec.family, **new_spec.kwargs)
    rebuilt.load_state_dict(swapped.state_dict())  # the spec alone rebuilds it
    # the conv holds the transposed kernel's taps, zeros where an output phase has none
    up = next(m for m in swapped.modules() if isinstance(m, PixelShuffleUp))
    assert 0 < int((up.conv.weight != 0).sum()) < up.conv.weight.numel()
    # a BatchNorm after it sits before the shuffle, per phase, holding the teacher's stats
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in teacher.modules())  # all but resnet-instance
    assert isinstance(up.norm, nn.BatchNorm2d) == has_bn
    if has_bn:
        assert not torch.allclose(up.norm.running_var, torch.ones_like(up.norm.running_var))


@pytest.mark.parametrize("family", ["resnet", "dcgan"])
def test_a_pixelshuffle_teacher_slims_by_whole_phases(family):
    """Output channel c of a PixelShuffle upsampler is its conv's (and norm's) channels 4c..4c+3: a
    narrower student keeps whole phase groups of the teacher's, not a fresh upsampler."""
    from edgedistill.models.ops import PixelShuffleUp

    kwargs = {"resnet": {"ngf": 8, "n_blocks": 2, "norm": "batch"}, "dcgan": {"nz": 8, "ngf": 8, "nc": 1}}
    teacher = create(family, **kwargs[family], upsample="pixelshuffle").train()
    with torch.no_grad():
        for _ in range(2):
            teacher(_input(family, batch=4))
    teacher.eval()
    student, _ = make_student(
        teacher, spec_for_family(family, {**kwargs[family], "upsample": "pixelshuffle"}), 0.5
    )
    pairs = [
        (t, s)
        for t, s in zip(teacher.modules(), student.modules(), strict=True)
        if isinstance(t, PixelShuffleUp)
    ]
    assert pairs
    for t_up, s_up in pairs[:-1] if family == "dcgan" else pairs:  # dcgan's last one makes the image
        t_rows, s_rows = t_up.norm.running_mean.view(-1, 4), s_up.norm.running_mean.view(-1, 4)
        assert len(s_rows) < len(t_rows)
        kept = [int((t_rows == row).all(1).nonzero()) for row in s_rows]  # each row a whole teacher row
        assert kept == sorted(kept)
        t_w = t_up.conv.weight.view(len(t_rows), 4, t_up.conv.in_channels, 9)
        s_w = s_up.conv.weight.view(len(s_rows), 4, s_up.conv.in_channels, 9)
        for i, k in enumerate(kept):  # its filters are the teacher's, on the kept input channels
            assert all((t_w[k] == s_w[i, :, [j]]).all((0, 2)).any() for j in range(s_w.shape[2]))


def test_arch_student_changed_ops_start_fresh_and_blocks_are_dropped_evenly():
    from edgedistill.distiller.student import make_student_from_arch

    family, kwargs = "resnet", {"ngf": 8, "n_blocks": 4, "norm": "batch"}
    teacher = create(family, **kwargs).eval()
    spec = spec_for_family(family, kwargs)
    arch = {"n_blocks": 2, "kernel": 3, "upsample": "nearest", "block": "dwsep"}
    student, _ = make_student_from_arch(teacher, spec, arch)
    t, s = teacher.state_dict(), student.state_dict()
    # stem 7x7 -> 3x3 keeps the center taps; the head (after 2 dropped blocks) too
    assert torch.equal(s["model.1.weight"], t["model.1.weight"][:, :, 2:5, 2:5])
    assert torch.equal(s["model.19.weight"], t["model.21.weight"][:, :, 2:5, 2:5])
    assert torch.equal(s["model.19.bias"], t["model.21.bias"])
    # blocks 0 and 3 of 4 are kept (evenly spaced); their norms come from the teacher's blocks
    assert torch.equal(s["model.11.conv_block.2.weight"], t["model.13.conv_block.2.weight"])
    # fresh depthwise blocks start as the identity: their closing BatchNorm's scale and shift are zero,
    # not the conv before it, which would leave that BN a variance of 0 to be frozen at
    assert (
        s["model.10.conv_block.6.weight"].abs().sum() == 0
        and s["model.10.conv_block.6.bias"].abs().sum() == 0
    )
    assert s["model.10.conv_block.5.pw.weight"].abs().sum() > 0
    x = torch.rand(4, 3, 32, 32)
    assert _run(student, x).shape == (4, 3, 32, 32)
    from edgedistill.distiller.batchnorm import recalibrate_batch_norm

    recalibrate_batch_norm(student, [(x,)])
    block = student.model[10].eval()
    h = torch.rand(2, block.conv_block[1].dw.in_channels, 8, 8)
    assert torch.equal(block(h), h)
    norms = [m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert min(float(m.running_var.min()) for m in norms) > 1e-4
    # without an affine norm (pix2pix's InstanceNorm) the last conv is the one zeroed
    kwargs = {"ngf": 8, "n_blocks": 2, "norm": "instance"}
    plain, _ = make_student_from_arch(
        create("resnet", **kwargs).eval(), spec_for_family("resnet", kwargs), {"block": "dwsep"}
    )
    assert plain.state_dict()["model.10.conv_block.5.pw.weight"].abs().sum() == 0
    with pytest.raises(EdgeDistillError, match="not depth"):
        make_student_from_arch(teacher, spec, {"depth": 3})
    with pytest.raises(EdgeDistillError, match="bad resnet architecture"):
        make_student_from_arch(teacher, spec, {"upsample": "deconv"})
