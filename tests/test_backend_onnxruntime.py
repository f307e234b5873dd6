"""The ONNX Runtime backend: fp32 / fp16 / int8 compile, load, run, per-layer profile, .ort format."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from edgedistill.backends import get_backend, load_runner
from edgedistill.backends.onnxruntime import OnnxRuntimeBackend, parse_profile
from edgedistill.core.artifact import Artifact
from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.quality import psnr
from edgedistill.core.spec import spec_for_family
from edgedistill.core.targets import get_target
from edgedistill.exporter.onnx_export import export_onnx, spec_from_onnx
from edgedistill.models.registry import create
from edgedistill.onnxtools.qdq import TensorRanges, compute_ranges, quantizable_nodes

KWARGS = {"ngf": 8, "n_blocks": 2, "norm": "batch"}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    net = create("resnet", **KWARGS).eval()
    gen = torch.Generator().manual_seed(2)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    path = tmp_path_factory.mktemp("ort") / "fp32.onnx"
    export_onnx(net, spec_for_family("resnet", KWARGS), path, size=(32, 32))
    return path


@pytest.fixture(scope="module")
def calib():
    spec = spec_for_family("resnet", KWARGS)
    return CalibrationSet(spec.example_arrays((32, 32), batch=12, seed=4), method="percentile")


@pytest.fixture(scope="module")
def sample():
    return spec_for_family("resnet", KWARGS).example_arrays((32, 32), batch=1, seed=11)


def _artifact(out, result, target=None):
    manifest = {"backend": "onnxruntime", "files": result.files, "precision": result.precision}
    if target is not None:
        manifest["target"] = {"threads": target.threads, "options": dict(target.options)}
    return Artifact(out, manifest)


def _reference(fp32, sample):
    return (
        OnnxRuntimeBackend()
        .load(Artifact(fp32.parent, {"backend": "onnxruntime", "files": [fp32.name]}), 1)
        .run(sample)["output"]
    )


def test_available_and_registered():
    backend = get_backend("onnxruntime")
    assert isinstance(backend, OnnxRuntimeBackend) and backend.name == "onnxruntime"
    assert backend.available() is None and backend.compiles_offline is False


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_compile_load_run_profile(tmp_path, fp32, calib, sample, precision):
    target = get_target("x86-onnxruntime", precision)
    backend = OnnxRuntimeBackend()
    result = backend.compile(fp32, target, calib if precision == "int8" else None, tmp_path)
    assert result.files == ["model.onnx"] and result.precision == precision
    assert spec_from_onnx(tmp_path / "model.onnx") == spec_from_onnx(fp32)  # the spec travels along
    runner = backend.load(_artifact(tmp_path, result, target), threads=1, profile_layers=True)
    assert runner.input_names == ["image"] and runner.output_names == ["output"]
    out = None
    for _ in range(3):
        out = runner.run(sample)["output"]
    ref = _reference(fp32, sample)
    assert out.shape == ref.shape == (1, 3, 32, 32) and out.dtype == np.float32
    bound = {"fp32": 1e-4, "fp16": 5e-3, "int8": 0.1}[precision]
    assert np.abs(out - ref).max() < bound
    if precision == "int8":
        assert psnr((out + 1) / 2, (ref + 1) / 2) > 30
        assert (tmp_path / "calibration.json").is_file()
    layers = runner.layer_times()
    assert layers and all(t.ms >= 0 for t in layers) and sum(t.ms for t in layers) > 0
    assert runner.layer_times() == layers  # parsed once, stable
    kinds = {(t.op_type, t.precision.split()[0]) for t in layers}
    if precision == "int8":
        assert ("QLinearConv", "int8") in kinds  # int8 kernels really ran
    else:
        assert not any(op.startswith("QLinear") for op, _ in kinds)
    if precision == "fp16":
        model = onnx.load(str(tmp_path / "model.onnx"))
        assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
        assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)


def test_no_profile_no_layers(tmp_path, fp32, sample):
    result = OnnxRuntimeBackend().compile(fp32, get_target("x86-onnxruntime", "fp32"), None, tmp_path)
    runner = OnnxRuntimeBackend().load(_artifact(tmp_path, result), threads=1)
    runner.run(sample)
    assert runner.layer_times() == []


def test_session_settings(tmp_path, fp32):
    target = get_target("arm64-mobile-ort", "fp32")  # asks for XNNPACK, which this build lacks
    result = OnnxRuntimeBackend().compile(fp32, target, None, tmp_path)
    runner = OnnxRuntimeBackend().load(_artifact(tmp_path, result, target), threads=None)
    opts = runner.session.get_session_options()
    assert opts.intra_op_num_threads == target.threads and opts.inter_op_num_threads == 1
    assert runner.providers[-1] == "CPUExecutionProvider"
    assert result.extra["offline_optimization"] == "basic"  # portable to ARM
    x86 = OnnxRuntimeBackend().compile(fp32, get_target("x86-onnxruntime", "fp32"), None, tmp_path / "x86")
    assert x86.extra["offline_optimization"] == "extended"


def test_int8_ort_format(tmp_path, fp32, calib, sample):
    target = get_target("arm64-mobile-ort", "int8")
    result = OnnxRuntimeBackend().compile(fp32, target, calib, tmp_path)
    assert result.files[0] == "model.ort"
    assert (tmp_path / "model.ort").is_file() and (tmp_path / "required_operators.config").is_file()
    config = (tmp_path / "required_operators.config").read_text()
    assert "ai.onnx;" in config and ("QLinearConv" in config or "QuantizeLinear" in config)
    art = _artifact(tmp_path, result, target)
    assert art.model_path.suffix == ".ort"
    out = OnnxRuntimeBackend().load(art, threads=1).run(sample)["output"]
    onnx_out = OnnxRuntimeBackend().load(
        Artifact(tmp_path, {"backend": "onnxruntime", "files": ["model.onnx"]}), 1
    )
    ref = onnx_out.run(sample)["output"]
    assert np.abs(out - ref).max() < 0.05  # same QDQ model, arm-flavoured ORT optimizations


def test_int8_reuses_ranges_and_keeps_layers(tmp_path, fp32, calib, sample):
    ranges = compute_ranges(fp32, calib, tmp_path / "work", progress=False)
    keep = quantizable_nodes(fp32)[:2]
    target = get_target("x86-onnxruntime", "int8")
    result = OnnxRuntimeBackend().compile(fp32, target, None, tmp_path / "a", keep_higher=keep, ranges=ranges)
    assert result.kept_higher_precision == keep
    assert TensorRanges.load(tmp_path / "a" / "calibration.json").ranges == ranges.ranges
    model = onnx.load(str(tmp_path / "a" / "model.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.name in keep:
            assert inits[node.input[1]].data_type == TensorProto.FLOAT
    assert OnnxRuntimeBackend().load(_artifact(tmp_path / "a", result), 1).run(sample)["output"].shape == (
        1,
        3,
        32,
        32,
    )


def test_int8_without_calibration_is_one_clear_error(tmp_path, fp32):
    with pytest.raises(EdgeDistillError, match="needs calibration data"):
        OnnxRuntimeBackend().compile(fp32, get_target("x86-onnxruntime", "int8"), None, tmp_path)


def test_bf16_refused(tmp_path, fp32):
    target = replace(get_target("x86-onnxruntime"), precision="bf16")
    with pytest.raises(EdgeDistillError, match="fp32, fp16 or int8"):
        OnnxRuntimeBackend().compile(fp32, target, None, tmp_path)


def test_load_runner_from_artifact_dir(tmp_path, fp32, sample):
    target = get_target("x86-onnxruntime", "fp32")
    result = OnnxRuntimeBackend().compile(fp32, target, None, tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {"backend": "onnxruntime", "files": result.files, "precision": "fp32", "target": {"threads": 1}}
        )
    )
    runner = load_runner(str(tmp_path), threads=1)
    np.testing.assert_allclose(runner.run(sample)["output"], _reference(fp32, sample), atol=1e-4)
    with pytest.raises(EdgeDistillError, match="image"):
        runner.run({"x": sample["image"]})


def test_unsupported_op_names_op_and_node(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("Warp", ["x"], ["y"], name="warp_layer", domain="com.example")
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(EdgeDistillError) as info:
        OnnxRuntimeBackend().load(Artifact(tmp_path, {"backend": "onnxruntime", "files": ["m.onnx"]}))
    msg = str(info.value)
    assert "\n" not in msg and "op com.example:Warp" in msg and "'warp_layer'" in msg


def test_missing_model_file(tmp_path):
    with pytest.raises(EdgeDistillError, match="missing"):
        OnnxRuntimeBackend().load(Artifact(tmp_path, {"backend": "onnxruntime", "files": ["model.onnx"]}))


def test_parse_profile_means_over_runs():
    events = [
        {"cat": "Session", "name": "model_run", "dur": 100},
        {"cat": "Session", "name": "model_run", "dur": 100},
        {"cat": "Node", "name": "conv_kernel_time", "dur": 300,
         "args": {"op_name": "QLinearConv", "provider": "CPUExecutionProvider",
                  "input_type_shape": [{"uint8": [1, 8, 4, 4]}, {"float": []}]}},
        {"cat": "Node", "name": "conv_kernel_time", "dur": 100, "args": {"op_name": "QLinearConv"}},
        {"cat": "Node", "name": "conv_fence_before", "dur": 5, "args": {}},
        {"cat": "Node", "name": "tanh_kernel_time", "dur": 10,
         "args": {"op_name": "Tanh", "provider": "CPUExecutionProvider", "input_type_shape": [{"float": [1]}]}},
    ]  # fmt: skip
    layers = parse_profile(events)
    assert [(t.name, t.op_type, t.precision) for t in layers] == [
        ("conv", "QLinearConv", "int8 CPU"),
        ("tanh", "Tanh", "fp32 CPU"),
    ]
    assert layers[0].ms == pytest.approx(0.2) and layers[1].ms == pytest.approx(0.005)
