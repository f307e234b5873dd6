"""torch -> ONNX export (parity, shapes, metadata) and the safety checks on ONNX files we are handed."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec, TensorSpec, spec_for_family
from edgedistill.exporter.onnx_export import export_onnx, spec_from_onnx
from edgedistill.models.registry import create
from edgedistill.onnxtools.checks import load_onnx_checked, node_for_op

TINY = {
    "resnet-batch": ("resnet", {"ngf": 8, "n_blocks": 2, "norm": "batch"}, (32, 32)),
    "resnet-instance": ("resnet", {"ngf": 8, "n_blocks": 2, "norm": "instance"}, (32, 32)),
    "unet": ("unet", {"ngf": 8, "num_downs": 5}, (32, 32)),
    "dcgan": ("dcgan", {"nz": 16, "ngf": 8, "nc": 1, "image_size": 32}, None),
}


def _randomize_bn(net: nn.Module) -> nn.Module:
    """Non-trivial running stats, so folding BatchNorm at export is really exercised."""
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return net.eval()


def _tiny(key: str) -> tuple[nn.Module, GeneratorSpec, tuple[int, int] | None]:
    family, kwargs, size = TINY[key]
    return _randomize_bn(create(family, **kwargs)), spec_for_family(family, kwargs), size


@pytest.mark.parametrize("key", list(TINY))
def test_export_matches_torch(tmp_path, key):
    net, spec, size = _tiny(key)
    report = export_onnx(net, spec, tmp_path / "m.onnx", size=size)
    assert report.max_abs_err < 1e-4
    assert report.opset == 17 and report.exporter == "legacy"
    assert report.n_nodes == sum(report.op_types.values())
    # onnxslim folded the legacy exporter's shape-op chains and BatchNorm away
    assert not {"BatchNormalization", "Constant", "Shape", "Gather"} & set(report.op_types)
    if key.startswith("resnet"):
        assert report.op_types["Pad"] == 2 + 2 * 2  # ReflectionPad2d stays one Pad per pad layer
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))
    # independently of the report: ORT on fresh inputs agrees with torch
    x = spec.example_inputs(size=size, batch=1, seed=7)[0]
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = net(x).numpy()
    got = sess.run(None, {spec.inputs[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_dynamic_and_static_shapes(tmp_path):
    net, spec, _ = _tiny("resnet-batch")
    dyn = export_onnx(net, spec, tmp_path / "dyn.onnx", size=(32, 32), dynamic=True)
    static = export_onnx(net, spec, tmp_path / "static.onnx", size=(32, 32), dynamic=False)
    assert dyn.input_shapes == {"image": ["N", 3, "H", "W"]} and dyn.dynamic
    assert static.input_shapes == {"image": [1, 3, 32, 32]} and not static.dynamic
    x = spec.example_arrays(size=(64, 48), batch=2)["image"]
    out = ort.InferenceSession(str(tmp_path / "dyn.onnx")).run(None, {"image": x})[0]
    assert out.shape == (2, 3, 64, 48)
    with pytest.raises(Exception, match="dimensions"):
        ort.InferenceSession(str(tmp_path / "static.onnx")).run(None, {"image": x})


def test_noise_generator_keeps_latent_dims_fixed(tmp_path):
    net, spec, _ = _tiny("dcgan")
    report = export_onnx(net, spec, tmp_path / "g.onnx")
    assert report.input_shapes == {"z": ["N", 16, 1, 1]}


def test_spec_metadata_round_trip(tmp_path):
    net, spec, _ = _tiny("resnet-instance")
    spec.provenance = {"teacher": "photo-restore", "metrics": {"psnr": 30.5}}
    export_onnx(net, spec, tmp_path / "m.onnx", size=(48, 40))
    back = spec_from_onnx(tmp_path / "m.onnx")
    assert back is not None
    assert back.to_dict() == {**spec.to_dict(), "default_size": (48, 40)}
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert meta["edgedistill.version"]


def test_spec_from_onnx_without_metadata(tmp_path):
    path = tmp_path / "plain.onnx"
    onnx.save(_relu_model(), str(path))
    assert spec_from_onnx(path) is None


class _TraceTrap(nn.Module):
    """Python control flow on the batch size: tracing bakes in batch 1, so batch 2 disagrees."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.shape[0] == 1 else -x


def test_parity_failure_is_one_clear_error(tmp_path):
    spec = GeneratorSpec(
        "image", [TensorSpec("image", ["N", 3, "H", "W"])], [TensorSpec("output", ["N", 3, "H", "W"])]
    )
    with pytest.raises(EdgeDistillError, match="differs from torch by max"):
        export_onnx(_TraceTrap(), spec, tmp_path / "bad.onnx", size=(8, 8), dynamic=True)
    assert not (tmp_path / "bad.onnx").exists()  # nothing half-right is left behind


def test_opset_is_honoured(tmp_path):
    net, spec, _ = _tiny("dcgan")
    assert export_onnx(net, spec, tmp_path / "g.onnx", opset=18).opset == 18
    ops = {o.domain: o.version for o in onnx.load(str(tmp_path / "g.onnx")).opset_import}
    assert ops.get("", ops.get("ai.onnx")) == 18


# ------------------------------------------------------------------------------------------ checks
def _relu_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = onnx.numpy_helper.from_array(np.arange(1, 5, dtype=np.float32)[None], "w")
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["t"], name="scale"),
        helper.make_node("Relu", ["t"], ["y"], name="act"),
    ]
    return helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)]
    )


def _external(tmp_path, location: str):
    folder = tmp_path / "model"
    folder.mkdir()
    model = _relu_model()
    onnx.save_model(
        model, str(folder / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0
    )
    proto = onnx.load_model(str(folder / "m.onnx"), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save_model(proto, str(folder / "m.onnx"))
    assert (folder / "w.bin").is_file()
    return folder / "m.onnx"


def test_external_data_inside_folder_loads(tmp_path):
    model = load_onnx_checked(_external(tmp_path, "w.bin"))
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(model.graph.initializer[0]), [[1, 2, 3, 4]])


@pytest.mark.parametrize("location", ["../x.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_folder_is_refused(tmp_path, location):
    (tmp_path / "x.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = _external(tmp_path, location)
    with pytest.raises(EdgeDistillError, match=r"tensor 'w' keeps its data at .*outside the model's folder"):
        load_onnx_checked(path)


def test_missing_external_data_is_named(tmp_path):
    path = _external(tmp_path, "w.bin")
    (path.parent / "w.bin").unlink()
    with pytest.raises(EdgeDistillError, match=r"'w\.bin', which is missing"):
        load_onnx_checked(path)


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage\xff\xff not a protobuf" * 3])
def test_corrupt_onnx_is_refused(tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(EdgeDistillError, match=r"broken\.onnx"):
        load_onnx_checked(path)


def test_missing_onnx_is_refused(tmp_path):
    with pytest.raises(EdgeDistillError, match="not found"):
        load_onnx_checked(tmp_path / "nope.onnx")


def test_node_for_op_names_layers(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_relu_model(), str(path))
    assert node_for_op(path, "Relu") == ["act"]
    assert node_for_op(onnx.load(str(path)), "Mul") == ["scale"]
    assert node_for_op(path, "Conv") == []


class _SizeBound(nn.Module):
    """A learned per-pixel bias: torch.export cannot keep H/W free, so its program is fixed at 32x32."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bias = nn.Parameter(torch.full((1, 3, 32, 32), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x + self.conv(x) + self.bias)


def _program(tmp_path, module: nn.Module) -> nn.Module:
    from edgedistill.distiller.pruned import save_pt2

    path = save_pt2(module.eval(), (torch.rand(1, 3, 32, 32),), tmp_path / "student.pt2")
    return torch.export.load(str(path)).module()


def test_fixed_size_program_says_it_is_static(tmp_path):
    """A .pt2 whose H/W torch.export had to fix is exported static, and says so; another size is refused."""
    io = ["N", 3, "H", "W"]
    spec = GeneratorSpec(
        "image", [TensorSpec("image", io)], [TensorSpec("output", io)], default_size=(32, 32)
    )
    program = _program(tmp_path, _SizeBound())
    report = export_onnx(program, spec, tmp_path / "m.onnx", size=(32, 32), dynamic=True)
    assert report.dynamic is False
    assert report.static_reason.startswith("exported with static shape 32x32 because")
    assert report.input_shapes["image"][2:] == [32, 32]
    with pytest.raises(EdgeDistillError, match=r"fixed at 32x32.*--size 32 32") as err:
        export_onnx(program, spec, tmp_path / "m48.onnx", size=(48, 48), dynamic=True)
    assert "\n" not in str(err.value)
    # a program whose H/W stayed free exports dynamic, with nothing to say
    free = _program(tmp_path, nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Tanh()))
    report = export_onnx(free, spec, tmp_path / "free.onnx", size=(32, 32), dynamic=True)
    assert report.dynamic is True and report.static_reason is None
    sess = ort.InferenceSession(str(tmp_path / "free.onnx"), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"image": np.zeros((1, 3, 40, 24), np.float32)})[0].shape == (1, 3, 40, 24)
