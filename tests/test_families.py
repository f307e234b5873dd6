"""Every family runs at two sizes and keeps the reference checkpoints' key layout and sizes."""

import pytest
import torch

from edgedistill.models import create, list_families

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@pytest.mark.parametrize(
    ("family", "kwargs", "shapes", "out_channels"),
    [
        ("resnet", {"ngf": 8, "n_blocks": 2}, [(1, 3, 64, 64), (2, 3, 96, 80)], 3),
        (
            "resnet",
            {"ngf": 8, "n_blocks": 1, "norm": "batch", "dropout": True},
            [(2, 3, 32, 32), (1, 3, 48, 48)],
            3,
        ),
        ("unet", {"ngf": 8, "num_downs": 6}, [(2, 3, 64, 64), (1, 3, 128, 128)], 3),
        (
            "unet",
            {"ngf": 4, "num_downs": 5, "norm": "instance", "output_nc": 1},
            [(1, 3, 32, 32), (1, 3, 64, 96)],
            1,
        ),
    ],
)
def test_image_generators_run_at_two_sizes(family, kwargs, shapes, out_channels):
    net = create(family, **kwargs).eval()
    for shape in shapes:
        with torch.no_grad():
            y = net(torch.rand(shape) * 2 - 1)
        assert y.shape == (shape[0], out_channels, shape[2], shape[3])
        assert y.abs().max() <= 1.0


@pytest.mark.parametrize("size", [32, 64])
def test_dcgan_generator_and_discriminator_at_both_sizes(size):
    g = create("dcgan", nz=16, ngf=8, nc=1, image_size=size).eval()
    d = create("dcgan_d", nc=1, ndf=8, image_size=size).eval()
    with torch.no_grad():
        img = g(torch.randn(3, 16, 1, 1))
        score = d(img)
    assert img.shape == (3, 1, size, size)
    assert score.shape == (3,) and ((score >= 0) & (score <= 1)).all()


@pytest.mark.parametrize(("n_layers", "size", "out"), [(3, 64, 6), (3, 128, 14), (2, 64, 14)])
def test_patchgan_output_grid(n_layers, size, out):
    d = create("patchgan", input_nc=6, ndf=8, n_layers=n_layers)
    assert d(torch.randn(1, 6, size, size)).shape == (1, 1, out, out)


def test_registry_lists_families():
    assert {"resnet", "unet", "dcgan", "dcgan_d", "patchgan"} <= set(list_families())


def test_width_shrinks_the_same_class():
    big, small = create("resnet", ngf=64, n_blocks=6), create("resnet", ngf=16, n_blocks=6)
    assert type(big) is type(small)
    assert list(big.state_dict()) == list(small.state_dict())
    assert small.state_dict()["model.1.weight"].shape == (16, 3, 7, 7)


# --- reference layouts of pytorch-CycleGAN-and-pix2pix and of the PyTorch DCGAN example ---------
def test_resnet_9blocks_keys_match_cyclegan_checkpoints():
    state = create("resnet", ngf=64, n_blocks=9, norm="instance").state_dict()
    expected = [f"model.{i}.{p}" for i in (1, 4, 7) for p in ("weight", "bias")]
    expected += [
        f"model.{b}.conv_block.{c}.{p}" for b in range(10, 19) for c in (1, 5) for p in ("weight", "bias")
    ]
    expected += [f"model.{i}.{p}" for i in (19, 22, 26) for p in ("weight", "bias")]
    assert list(state) == expected
    assert state["model.10.conv_block.1.weight"].shape == (256, 256, 3, 3)
    assert state["model.19.weight"].shape == (256, 128, 3, 3)  # ConvTranspose2d: (in, out, k, k)
    assert state["model.26.weight"].shape == (3, 64, 7, 7)
    assert sum(v.numel() for v in state.values()) == 11_378_179


def test_resnet_dropout_and_batchnorm_keys():
    state = create("resnet", ngf=8, n_blocks=1, norm="batch", dropout=True).state_dict()
    assert "model.1.bias" not in state  # no conv bias before BatchNorm, as in the reference
    assert {f"model.2.{p}" for p in BN} <= set(state)
    assert "model.10.conv_block.6.weight" in state  # dropout shifts the second conv to index 6


def test_unet_256_keys_match_pix2pix_checkpoints():
    state = create("unet", ngf=64, num_downs=8, norm="batch").state_dict()
    expected = {"model.model.0.weight", "model.model.3.weight", "model.model.3.bias"}
    for level in range(2, 9):
        p = "model.model.1" + ".model.3" * (level - 2)
        expected.add(f"{p}.model.1.weight")
        if level < 8:
            expected |= (
                {f"{p}.model.2.{b}" for b in BN} | {f"{p}.model.5.weight"} | {f"{p}.model.6.{b}" for b in BN}
            )
        else:
            expected |= {f"{p}.model.3.weight"} | {f"{p}.model.4.{b}" for b in BN}
    assert set(state) == expected
    assert state["model.model.0.weight"].shape == (64, 3, 4, 4)
    assert state["model.model.3.weight"].shape == (128, 3, 4, 4)
    params = sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)
    assert params == 54_413_955  # pix2pix prints "54.414 M"


def test_dcgan_keys_match_pytorch_example():
    g = create("dcgan", nz=100, ngf=64, nc=3, image_size=64).state_dict()
    assert [k for k in g if k.endswith("weight")] == [
        f"main.{i}.weight" for i in (0, 1, 3, 4, 6, 7, 9, 10, 12)
    ]
    assert g["main.0.weight"].shape == (100, 512, 4, 4)
    assert sum(v.numel() for k, v in g.items() if "running" not in k and "num_batches" not in k) == 3_576_704
    d = create("dcgan_d", nc=3, ndf=64, image_size=64).state_dict()
    assert [k for k in d if k.endswith("weight")] == [f"main.{i}.weight" for i in (0, 2, 3, 5, 6, 8, 9, 11)]
    assert sum(v.numel() for k, v in d.items() if "running" not in k and "num_batches" not in k) == 2_765_568


def test_patchgan_keys_match_pix2pix():
    d = create("patchgan", input_nc=6, ndf=64, n_layers=3, norm="batch").state_dict()
    assert [k for k in d if k.endswith("weight")] == [f"model.{i}.weight" for i in (0, 2, 3, 5, 6, 8, 9, 11)]
    assert sum(v.numel() for k, v in d.items() if "running" not in k and "num_batches" not in k) == 2_768_705


# ------------------------------------------------------------------ searched-architecture variants
ARCH_VARIANTS = [
    (
        "resnet",
        {"ngf": 8, "n_blocks": 2, "norm": "batch", "widths": [8, 16, 24, 16, 8], "upsample": "nearest"},
    ),
    (
        "resnet",
        {"ngf": 8, "n_blocks": 1, "norm": "instance", "upsample": "bilinear", "kernel": 3, "block": "dwsep"},
    ),
    (
        "resnet",
        {"ngf": 8, "n_blocks": 2, "norm": "batch", "upsample": "pixelshuffle", "widths": [8, 8, 16, 8, 16]},
    ),
    ("unet", {"ngf": 4, "num_downs": 5, "widths": [4, 8, 8, 16, 8], "upsample": "nearest", "block": "dwsep"}),
    ("unet", {"ngf": 4, "num_downs": 5, "upsample": "pixelshuffle"}),
    ("dcgan", {"nz": 8, "ngf": 8, "nc": 1, "image_size": 32, "widths": [16, 8, 8], "upsample": "bilinear"}),
    ("dcgan", {"nz": 8, "ngf": 8, "nc": 3, "image_size": 64, "upsample": "pixelshuffle"}),
]


@pytest.mark.parametrize(("family", "kwargs"), ARCH_VARIANTS)
def test_arch_variants_export_to_onnx_and_match_torch(family, kwargs, tmp_path):
    """Every searched operator runs under ONNX Runtime as in torch (1e-4), rebuilt from its kwargs."""
    import numpy as np
    import onnxruntime as ort

    from edgedistill.core.spec import spec_for_family
    from edgedistill.exporter.onnx_export import export_onnx

    torch.manual_seed(0)
    net = create(family, **kwargs).eval()
    spec = spec_for_family(family, kwargs, **({} if family == "dcgan" else {"default_size": (32, 32)}))
    path = tmp_path / "m.onnx"
    export_onnx(net, spec, path, size=(32, 32) if family != "dcgan" else None, slim=False)
    x = spec.example_inputs(size=(32, 32) if family != "dcgan" else None, batch=2, seed=1)[0]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = net(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    again = create(family, **spec.kwargs)
    again.load_state_dict(net.state_dict())  # the spec's kwargs alone rebuild the architecture


def test_default_kwargs_keep_the_reference_layout():
    """Spelling out the defaults changes neither the layers nor the keys."""
    plain = create("resnet", ngf=8, n_blocks=2)
    spelled = create(
        "resnet", ngf=8, n_blocks=2, widths=[8, 16, 32, 16, 8], upsample="convtranspose", kernel=7
    )
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in spelled.state_dict().items()
    }
    unet = create("unet", ngf=4, num_downs=6)
    assert {k: v.shape for k, v in unet.state_dict().items()} == {
        k: v.shape
        for k, v in create("unet", ngf=4, num_downs=6, widths=[4, 8, 16, 32, 32, 32]).state_dict().items()
    }
    with pytest.raises(ValueError, match="widths must be 5"):
        create("resnet", widths=[8, 8])
    with pytest.raises(ValueError, match="upsample must be"):
        create("resnet", upsample="deconv")
