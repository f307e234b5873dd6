"""OpenVINO backend on a tiny ResNet generator: real OpenVINO, real NNCF, real torch reference."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.backends import get_backend, load_runner
from edgedistill.backends.base import CompileResult
from edgedistill.core.artifact import Artifact, load_artifact
from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.targets import Target, get_target
from edgedistill.exporter.manifest import target_dict
from edgedistill.models import create

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

SIZE = 32
KEEP = "/model/model.4/Conv"  # the second downsampling conv of create("resnet", ngf=8, n_blocks=2)


def _export(net: torch.nn.Module, x: torch.Tensor, path: Path, inp: str, out: str, dynamic: bool) -> Path:
    axes = {inp: {0: "N", 2: "H", 3: "W"}, out: {0: "N", 2: "H", 3: "W"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's tracer warnings
        torch.onnx.export(
            net, (x,), str(path), input_names=[inp], output_names=[out], dynamic_axes=axes, opset_version=17,
            dynamo=False,
        )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    net = create("resnet", ngf=8, n_blocks=2).eval()
    x = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    path = _export(net, x, tmp_path_factory.mktemp("onnx") / "tiny.onnx", "image", "output", dynamic=True)
    rng = np.random.default_rng(0)
    calib = CalibrationSet({"image": rng.random((8, 3, SIZE, SIZE), dtype=np.float32) * 2 - 1})
    held = {"image": rng.random((1, 3, SIZE, SIZE), dtype=np.float32) * 2 - 1}
    with torch.no_grad():
        ref = net(torch.from_numpy(held["image"])).numpy()
    return {"net": net, "onnx": path, "calib": calib, "held": held, "ref": ref}


def _target(precision: str, **changes) -> Target:
    return replace(get_target("x86-openvino", precision), input_size=(SIZE, SIZE), **changes)


def _compile(tiny: dict, tmp: Path, precision: str, keep=(), **changes) -> tuple[CompileResult, Artifact]:
    target = _target(precision, **changes)
    backend = get_backend("openvino")
    result = backend.compile(tiny["onnx"], target, tiny["calib"], tmp, keep_higher=keep)
    manifest = {
        "backend": "openvino",
        "files": result.files,
        "precision": result.precision,
        "target": target_dict(target),
        "backend_info": result.extra,
    }
    return result, Artifact(tmp, manifest)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean(((a - b) / 2.0) ** 2))  # outputs in [-1, 1] -> unit range
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def test_available_here():
    assert get_backend("openvino").available() is None


def test_fp32_runs_in_fp32_not_bf16(tiny, tmp_path):
    result, art = _compile(tiny, tmp_path, "fp32")
    assert result.files[0] == "model.xml" and (tmp_path / "model.bin").exists()
    assert result.extra["inference_precision"] == "f32" and result.extra["ir_weights"] == "f32"
    runner = get_backend("openvino").load(art, threads=1)
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert runner.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert runner.compiled.get_property("NUM_STREAMS") == 1
    out = runner.run(tiny["held"])["output"]
    assert out.shape == tiny["ref"].shape
    assert np.abs(out - tiny["ref"]).max() < 1e-4


def test_bare_xml_without_manifest_still_runs_fp32(tiny, tmp_path):
    _compile(tiny, tmp_path, "fp32")
    runner = load_runner(load_artifact(tmp_path / "model.xml"), threads=1)
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert np.abs(runner.run(tiny["held"])["output"] - tiny["ref"]).max() < 1e-4


def test_bf16_really_runs_bf16(tiny, tmp_path):
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in caps:
        with pytest.raises(EdgeDistillError, match="bf16"):
            _compile(tiny, tmp_path, "bf16")
        return
    result, art = _compile(tiny, tmp_path, "bf16")
    assert result.extra == {**result.extra, "inference_precision": "bf16", "ir_weights": "f32"}
    runner = get_backend("openvino").load(art, threads=1, profile_layers=True)
    err = np.abs(runner.run(tiny["held"])["output"] - tiny["ref"]).max()
    assert err > 1e-3  # bf16 has 8 mantissa bits: visibly worse than the fp32 path's ~1e-6
    assert any("bf16" in lt.precision for lt in runner.layer_times())


def test_fp16_ir_stores_half_weights(tiny, tmp_path):
    _compile(tiny, tmp_path / "fp32", "fp32")
    result, art = _compile(tiny, tmp_path / "fp16", "fp16")
    assert result.extra["ir_weights"] == "f16"
    full, half = (
        (tmp_path / "fp32" / "model.bin").stat().st_size,
        (tmp_path / "fp16" / "model.bin").stat().st_size,
    )
    assert half < 0.6 * full
    out = get_backend("openvino").load(art, threads=1).run(tiny["held"])["output"]
    assert np.abs(out - tiny["ref"]).max() < 0.05


def test_int8_runs_int8_kernels_and_keep_higher_stays_out(tiny, tmp_path):
    backend = get_backend("openvino")
    result, art = _compile(tiny, tmp_path / "plain", "int8")
    runner = backend.load(art, threads=1, profile_layers=True)
    out = runner.run(tiny["held"])["output"]
    assert _psnr(out, tiny["ref"]) > 25
    kinds = {lt.name: lt.precision for lt in runner.layer_times()}
    assert any(p.lower().endswith(("_i8", "_u8")) for p in kinds.values()), kinds
    assert "i8" in kinds[f"{KEEP}/WithoutBiases"].lower()
    assert result.extra["nncf"]["estimator"].startswith("min/max")

    kept, art_kept = _compile(tiny, tmp_path / "kept", "int8", keep=[KEEP])
    assert kept.kept_higher_precision == [KEEP]
    assert f"{KEEP}/WithoutBiases" in kept.extra["keep_higher_openvino_names"]
    runner = backend.load(art_kept, threads=1, profile_layers=True)
    runner.run(tiny["held"])
    kinds = {lt.name: lt.precision for lt in runner.layer_times()}
    assert kinds[f"{KEEP}/WithoutBiases"].endswith("_f32"), kinds[f"{KEEP}/WithoutBiases"]
    assert any(p.endswith("I8") for p in kinds.values())
    # and in the IR itself: nothing quantizes that conv's input or its weights
    model = ov.Core().read_model(str(tmp_path / "kept" / "model.xml"))
    conv = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == f"{KEEP}/WithoutBiases")
    feeding = {i.get_source_output().get_node().get_type_name() for i in conv.inputs()}
    assert "FakeQuantize" not in feeding and "Convert" not in feeding, feeding


@pytest.mark.parametrize(("method", "expect"), [("percentile", "percentile 99.9"), ("entropy", "histogram")])
def test_calibration_methods_map_to_nncf_estimators(tiny, tmp_path, method, expect):
    tiny_calib = CalibrationSet(tiny["calib"].arrays, method=method, percentile=99.9)
    target = _target("int8")
    result = get_backend("openvino").compile(tiny["onnx"], target, tiny_calib, tmp_path)
    assert result.extra["nncf"]["estimator"].startswith(expect)
    art = Artifact(tmp_path, {"backend": "openvino", "files": result.files, "precision": "int8",
                              "target": target_dict(target), "backend_info": result.extra})  # fmt: skip
    out = get_backend("openvino").load(art, threads=1).run(tiny["held"])["output"]
    assert _psnr(out, tiny["ref"]) > 20


def test_static_reshape_fixes_the_input_shape(tiny, tmp_path):
    result, art = _compile(tiny, tmp_path / "static", "fp32")  # x86-openvino: dynamic_shape = false
    assert result.extra["static_shapes"] == {"image": [1, 3, SIZE, SIZE]}
    model = ov.Core().read_model(str(tmp_path / "static" / "model.xml"))
    assert model.inputs[0].get_partial_shape().is_static
    runner = get_backend("openvino").load(art, threads=1)
    with pytest.raises(EdgeDistillError, match="shape"):
        runner.run({"image": np.zeros((1, 3, 2 * SIZE, 2 * SIZE), np.float32)})

    _, art = _compile(tiny, tmp_path / "dynamic", "fp32", dynamic_shape=True)
    runner = get_backend("openvino").load(art, threads=1)
    assert (
        runner.run({"image": np.zeros((1, 3, 2 * SIZE, 2 * SIZE), np.float32)})["output"].shape[-1]
        == 2 * SIZE
    )


def test_static_reshape_keeps_noise_shape(tmp_path):
    net = create("dcgan", nz=16, ngf=8, nc=1, image_size=32).eval()
    z = torch.randn(2, 16, 1, 1)
    path = tmp_path / "dcgan.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (z,), str(path), input_names=["z"], output_names=["image"],
                          dynamic_axes={"z": {0: "N"}, "image": {0: "N"}}, opset_version=17, dynamo=False)  # fmt: skip
    target = replace(get_target("x86-openvino", "fp32"), input_size=(32, 32))
    result = get_backend("openvino").compile(path, target, None, tmp_path / "out")
    assert result.extra["static_shapes"] == {"z": [1, 16, 1, 1]}


def test_missing_device_is_one_clear_line(tiny, tmp_path):
    npu = get_target("intel-npu")
    if "NPU" in ov.Core().available_devices:
        pytest.skip("this machine has an NPU")
    with pytest.raises(EdgeDistillError, match=r"device 'NPU' is not present.*available: CPU"):
        get_backend("openvino").compile(tiny["onnx"], npu, tiny["calib"], tmp_path)
    _, art = _compile(tiny, tmp_path, "fp32")
    art.manifest["target"]["device"] = "NPU"
    with pytest.raises(EdgeDistillError, match="NPU"):
        get_backend("openvino").load(art)


def test_unconvertible_op_names_op_and_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu0"),
        helper.make_node("Frobnicate", ["a"], ["y"], name="odd_node", domain="com.example"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    onnx.save(model, str(tmp_path / "odd.onnx"))
    import logging

    root_level = logging.getLogger().level
    with pytest.raises(EdgeDistillError, match=r"op com\.example\.Frobnicate \(node 'odd_node'\)") as err:
        get_backend("openvino").compile(tmp_path / "odd.onnx", _target("fp32"), None, tmp_path / "out")
    assert "\n" not in str(err.value)
    # ov.convert_model sets the root logger to ERROR and, when it fails, leaves it so: not through us
    assert logging.getLogger().level == root_level


def test_unknown_keep_higher_name_is_refused(tiny, tmp_path):
    with pytest.raises(EdgeDistillError, match="no node named 'nope'"):
        _compile(tiny, tmp_path, "int8", keep=["nope"])


def test_layer_times_average_over_runs_and_are_off_by_default(tiny, tmp_path):
    _, art = _compile(tiny, tmp_path, "fp32")
    backend = get_backend("openvino")
    plain = backend.load(art, threads=1)
    plain.run(tiny["held"])
    assert plain.layer_times() == []
    prof = backend.load(art, threads=1, profile_layers=True)
    for _ in range(3):
        prof.run(tiny["held"])
    times = prof.layer_times()
    assert times and all(t.ms >= 0 for t in times) and sum(t.ms for t in times) > 0
    assert {t.op_type for t in times} >= {"Convolution"}
    assert all(t.precision for t in times)


def test_missing_input_is_one_line(tiny, tmp_path):
    _, art = _compile(tiny, tmp_path, "fp32")
    with pytest.raises(EdgeDistillError, match="missing model input 'image'"):
        get_backend("openvino").load(art).run({"x": np.zeros((1, 3, SIZE, SIZE), np.float32)})


def test_int8_without_calibration_is_refused(tiny, tmp_path):
    with pytest.raises(EdgeDistillError, match="int8 needs a calibration set"):
        get_backend("openvino").compile(tiny["onnx"], _target("int8"), None, tmp_path)


def test_threads_default_to_the_target_profile(tiny, tmp_path):
    _, art = _compile(tiny, tmp_path, "fp32", threads=1)
    assert get_backend("openvino").load(art).compiled.get_property("INFERENCE_NUM_THREADS") == 1


def test_precisions_here_follow_this_cpu():
    """`edgedistill targets` and the tests pick precisions from this: bf16 only where the CPU has it."""
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    here = get_backend("openvino").precisions_here("CPU")
    assert {"fp32", "fp16", "int8"} <= set(here)
    assert ("bf16" in here) == ("BF16" in caps)
    assert get_backend("openvino").precisions_here("NPU") == ()  # no NPU on this host


def test_layer_noise_finds_the_layers_nncf_hurts(tiny, tmp_path):
    """The gate's cheap pre-rank: per ONNX node, the error NNCF's INT8 adds there, under OpenVINO.
    None for an fp32 IR; for INT8 every conv is measured, and keeping the noisiest one in fp32
    lifts the artifact more than keeping the quietest."""
    from edgedistill.backends.openvino_convert import layer_noise
    from edgedistill.exporter.sensitivity import rank_by_probes
    from edgedistill.onnxtools.qdq import quantizable_nodes

    nodes = quantizable_nodes(tiny["onnx"])
    held = CalibrationSet(
        {"image": np.concatenate([tiny["held"]["image"], tiny["calib"].arrays["image"][:3]])}
    )
    _compile(tiny, tmp_path / "fp32", "fp32")
    clean = layer_noise(tiny["onnx"], tmp_path / "fp32" / "model.xml", nodes, held)
    assert set(clean) == set(nodes) and max(abs(v) for v in clean.values()) < 1e-6
    _compile(tiny, tmp_path / "int8", "int8")
    noise = layer_noise(tiny["onnx"], tmp_path / "int8" / "model.xml", nodes, held)
    assert set(noise) == set(nodes) and max(noise.values()) > 1e-4
    by_noise = sorted(noise, key=noise.get, reverse=True)

    def psnr_keeping(name: str) -> float:
        _, art = _compile(tiny, tmp_path / name.replace("/", "_"), "int8", keep=[name])
        return _psnr(load_runner(art).run(tiny["held"])["output"], tiny["ref"])

    # the gate's ranking: the two noisiest compiled with NNCF keeping each, ordered by measured lift
    _, plain = _compile(tiny, tmp_path / "plain", "int8")
    base = _psnr(load_runner(plain).run(tiny["held"])["output"], tiny["ref"])
    ranked = rank_by_probes(tiny["onnx"], nodes, noise, psnr_keeping, base, probes=2, progress=False)
    probed, rest = ranked[:2], ranked[2:]
    assert {r["name"] for r in probed} == set(by_noise[:2]) and [r["name"] for r in rest] == by_noise[2:]
    # measured: +3.0, +1.8 dB on Zen3 (AVX2, noise had them the other way); +0.47, +0.44 dB on Zen4,
    # whose VNNI int8 is closer to fp32 (no u8 x s8 pair sums saturating in int16)
    lifts = [r["lift_db"] for r in probed]
    assert lifts[0] >= lifts[1] > 0.25
    assert all(r["psnr_kept"] == pytest.approx(base + r["lift_db"], abs=1e-3) for r in probed)
    # and keeping the quietest layer instead does not do what keeping a noisy one does (Zen4: +0.09 dB)
    assert psnr_keeping(by_noise[-1]) - base < lifts[1] - max(0.15, 0.25 * lifts[1])
