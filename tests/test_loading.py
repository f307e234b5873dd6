"""load_generator: every source kind, and one clear error for every bad input."""

import os
import pickle
import shlex
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from edgedistill.core.errors import EdgeDistillError
from edgedistill.models import create
from edgedistill.models.loading import load_generator


def _same_output(a, b, shape=(1, 3, 32, 32)):
    x = torch.rand(shape) * 2 - 1
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-5)


@pytest.fixture
def small_resnet():
    net = create("resnet", ngf=8, n_blocks=3, norm="instance").eval()
    return net


def test_family_path_pth_infers_kwargs(tmp_path, small_resnet):
    path = tmp_path / "latest_net_G.pth"
    torch.save(small_resnet.state_dict(), path)
    loaded = load_generator(f"resnet:{path}")
    assert loaded.spec.kwargs == {
        "input_nc": 3,
        "output_nc": 3,
        "ngf": 8,
        "n_blocks": 3,
        "norm": "instance",
        "dropout": False,
    }
    assert loaded.spec.kind == "image" and loaded.spec.provenance["sha256"]
    assert _same_output(loaded.module, small_resnet)


def test_bare_checkpoint_family_is_recognised(tmp_path):
    cases = [
        ("resnet", {"ngf": 4, "n_blocks": 2, "norm": "batch"}, (1, 3, 32, 32)),
        ("unet", {"ngf": 4, "num_downs": 5, "norm": "batch"}, (1, 3, 32, 32)),
        ("dcgan", {"nz": 16, "ngf": 8, "nc": 1, "image_size": 32}, (2, 16, 1, 1)),
    ]
    for family, kwargs, shape in cases:
        net = create(family, **kwargs).eval()
        path = tmp_path / f"{family}.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
        loaded = load_generator(path)
        assert loaded.spec.family == family
        assert {k: loaded.spec.kwargs[k] for k in kwargs} == kwargs
        assert _same_output(loaded.module, net, shape)


def test_wrapped_and_dataparallel_checkpoints(tmp_path, small_resnet):
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "netG": {f"module.{k}": v for k, v in small_resnet.state_dict().items()}}, path)
    assert _same_output(load_generator(path).module, small_resnet)


def test_old_cyclegan_instancenorm_stats_are_dropped(tmp_path, small_resnet):
    state = dict(small_resnet.state_dict())
    state["model.2.running_mean"] = torch.zeros(8)
    state["model.2.running_var"] = torch.ones(8)
    path = tmp_path / "old.pth"
    torch.save(state, path)
    assert _same_output(load_generator(f"resnet:{path}").module, small_resnet)


def test_a_student_saved_with_its_pixelshuffle_batchnorm_after_the_shuffle_loads_as_the_same_net(tmp_path):
    """Students saved before the BatchNorm moved before the shuffle keep loading: each channel's
    stats repeated for its four phases compute what the BatchNorm after the shuffle computed."""
    from edgedistill.models import spec_for_family

    kwargs = {"ngf": 4, "n_blocks": 1, "norm": "batch", "upsample": "pixelshuffle"}
    net = create("resnet", **kwargs).eval()
    old_state = {}
    for key, value in net.state_dict().items():
        if ".norm." in key:  # model.10.norm.weight -> model.11.weight, one value per channel
            up, _, rest = key.partition(".norm.")
            parent, _, index = up.rpartition(".")
            stat = torch.rand(value.numel() // 4) + 0.5 if value.ndim == 1 else value
            old_state[f"{parent}.{int(index) + 1}.{rest}"] = stat
            value.copy_(stat.repeat_interleave(4) if value.ndim == 1 else stat)
        else:
            old_state[key] = value
    assert len(old_state) == len(net.state_dict()) and old_state.keys() != net.state_dict().keys()
    save_file(old_state, str(tmp_path / "student.safetensors"))
    spec_for_family("resnet", kwargs).save(tmp_path / "model.json")
    assert _same_output(load_generator(tmp_path).module.eval(), net)


def test_module_class_with_kwargs_and_weights(tmp_path, monkeypatch):
    (tmp_path / "usernets.py").write_text(
        textwrap.dedent(
            """
            import torch.nn as nn
            class TinyG(nn.Module):
                def __init__(self, width=4):
                    super().__init__()
                    self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1), nn.Tanh())
                def forward(self, x):
                    return self.body(x)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import usernets

    ref = usernets.TinyG(width=6).eval()
    torch.save(ref.state_dict(), tmp_path / "tiny.pth")
    loaded = load_generator("usernets:TinyG", kwargs={"width": 6}, weights=tmp_path / "tiny.pth")
    assert loaded.spec.kind == "image" and loaded.spec.inputs[0].shape == ["N", 3, "H", "W"]
    assert _same_output(loaded.module, ref)


def test_torchscript_and_torch_export(tmp_path, small_resnet):
    ts = tmp_path / "g.ts"
    torch.jit.trace(small_resnet, torch.rand(1, 3, 32, 32)).save(str(ts))
    assert _same_output(load_generator(ts).module, small_resnet)
    assert load_generator(ts).spec.kind == "image"

    pt2 = tmp_path / "g.pt2"
    torch.export.save(torch.export.export(small_resnet, (torch.rand(1, 3, 32, 32),)), str(pt2))
    assert _same_output(load_generator(pt2).module, small_resnet)


def test_run_directory_with_model_json(tmp_path, small_resnet):
    from edgedistill.models import spec_for_family
    from edgedistill.models.weights import save_weights

    save_weights(small_resnet, tmp_path / "student.safetensors")
    spec_for_family("resnet", {"ngf": 8, "n_blocks": 3}).save(tmp_path / "model.json")
    assert _same_output(load_generator(tmp_path).module, small_resnet)


def test_embedded_teachers_load():
    from edgedistill.models.embedded import EMBEDDED_DIR, WEIGHT_FILES, embedded_teachers
    from edgedistill.models.weights import read_safetensors

    teachers = embedded_teachers()
    assert {"photo-restore", "digits-dcgan", "digits-classifier", "shapes-classifier"} <= set(teachers)
    for name in teachers:
        loaded = load_generator(name)
        weights = next(EMBEDDED_DIR / name / f for f in WEIGHT_FILES if (EMBEDDED_DIR / name / f).exists())
        shipped = read_safetensors(weights)
        state = loaded.module.state_dict()
        assert set(state) == set(shipped), name  # the shipped weights, every one, not a fresh init
        assert all(torch.equal(state[k].float(), v) for k, v in shipped.items()), name
        with torch.no_grad():
            y = loaded.module(
                *loaded.spec.example_inputs(size=(64, 64) if loaded.spec.kind == "image" else None)
            )
        assert torch.isfinite(y).all()
        if loaded.spec.kind != "classifier":  # a generator's tanh output; a classifier's are logits
            assert y.abs().max() <= 1


# ---------------------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(EdgeDistillError, match=r"not found: .*nope.pth"):
        load_generator(f"resnet:{tmp_path / 'nope.pth'}")


def test_keys_that_do_not_match_are_listed(tmp_path):
    path = tmp_path / "unet.pth"
    torch.save(create("unet", ngf=4, num_downs=5).state_dict(), path)
    with pytest.raises(EdgeDistillError, match=r"does not fit resnet.*missing \d+ keys \(model\.1\.weight"):
        load_generator(f"resnet:{path}", kwargs={"ngf": 4, "n_blocks": 2})


def test_shape_mismatch_names_both_shapes(tmp_path, small_resnet):
    path = tmp_path / "g.pth"
    torch.save(small_resnet.state_dict(), path)
    with pytest.raises(
        EdgeDistillError, match=r"'model.1.weight' is \[8, 3, 7, 7\] in the checkpoint but \[16, 3, 7, 7\]"
    ):
        load_generator(f"resnet:{path}", kwargs={"ngf": 16})


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "latest_net_G.pth"
    payload = {"model.1.weight": _Evil(marker)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    for source in (f"resnet:{path}", str(path)):
        with pytest.raises(
            EdgeDistillError,
            match=r"refusing to load .*latest_net_G.pth: unpickling it would run code \((posix|os)\.system",
        ):
            load_generator(source)
    assert not marker.exists()


def test_whole_model_pickle_is_refused(tmp_path, small_resnet):
    path = tmp_path / "model.pth"
    torch.save(small_resnet, path)
    with pytest.raises(EdgeDistillError, match=r"refusing to load .*would run code .*ResnetGenerator"):
        load_generator(path)


def test_corrupt_files(tmp_path, small_resnet):
    good = tmp_path / "g.pth"
    torch.save(small_resnet.state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(EdgeDistillError, match=r"truncated.pth is not a readable PyTorch checkpoint"):
        load_generator(f"resnet:{truncated}")
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 64)
    with pytest.raises(EdgeDistillError, match=r"bad.safetensors is not a readable safetensors file"):
        load_generator(f"resnet:{bad_st}")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_random_bytes_always_give_one_clear_error(tmp_path, suffix, recwarn):
    """Random bytes reach the unpickler's internals (IndexError, KeyError, odd protocols): CI once drew
    an IndexError from os.urandom. 300 seeded draws of three sizes must all end in EdgeDistillError."""
    import random

    from edgedistill.models.checkpoint import read_state_dict

    for seed in range(300):
        rng = random.Random(seed)
        path = tmp_path / f"r{seed}{suffix}"
        path.write_bytes(rng.randbytes(rng.choice([7, 300, 4096])))
        with pytest.raises(EdgeDistillError, match="re-save"):
            read_state_dict(path)
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]  # no second line on stderr


def test_unknown_layout_and_bad_module(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(EdgeDistillError, match=r"cannot tell which generator family"):
        load_generator(path)
    with pytest.raises(EdgeDistillError, match=r"cannot import 'no_such_pkg.nets'"):
        load_generator("no_such_pkg.nets:Gen")
