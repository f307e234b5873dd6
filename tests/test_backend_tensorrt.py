"""TensorRT backend: the half that runs anywhere (the device's ONNX, its Q/DQ, the build recipe) and,
where TensorRT and an NVIDIA GPU exist, the engine build and run. Nothing here pretends to be TensorRT:
without it, the int8 ONNX is checked under the real ONNX Runtime, as the quality gate does."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.backends import get_backend, load_runner
from edgedistill.backends.tensorrt import check_symmetric_qdq, engine_path, tensorrt_unavailable
from edgedistill.backends.tensorrt_build import build_engine, read_plan, trtexec_command
from edgedistill.core.artifact import load_artifact
from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.targets import Target, get_target
from edgedistill.models import create

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

SIZE = 32
BACKEND = get_backend("tensorrt")
WHY = BACKEND.available()
needs_gpu = pytest.mark.skipif(WHY is not None, reason=f"needs TensorRT and an NVIDIA GPU: {WHY}")
no_tensorrt = pytest.mark.skipif(
    WHY is None, reason="TensorRT and a GPU are present: the engine is built here"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    net = create("resnet", ngf=8, n_blocks=2, norm="batch").eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained generator has
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    axes = {"image": {0: "N", 2: "H", 3: "W"}, "output": {0: "N", 2: "H", 3: "W"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.rand(1, 3, SIZE, SIZE) * 2 - 1,), str(path), input_names=["image"],
            output_names=["output"], dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
    rng = np.random.default_rng(0)
    calib = CalibrationSet({"image": rng.random((16, 3, SIZE, SIZE), dtype=np.float32) * 2 - 1})
    held = [{"image": rng.random((1, 3, SIZE, SIZE), dtype=np.float32) * 2 - 1} for _ in range(4)]
    return {"onnx": path, "calib": calib, "held": held}


def _target(name: str = "jetson-orin-nano", precision: str = "int8", **options) -> Target:
    base = get_target(name, precision)
    return replace(base, input_size=(SIZE, SIZE), options={**base.options, **options})


def _ort(path: Path, feed: dict) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean(((a - b) / 2.0) ** 2))  # [-1, 1] outputs -> unit range
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def _zero_points(path: Path) -> list[np.ndarray]:
    proto = onnx.load(str(path))
    inits = {t.name: t for t in proto.graph.initializer}
    zps = []
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[node.input[2]]
            assert zp.data_type == onnx.TensorProto.INT8, (node.name, zp.data_type)
            zps.append(onnx.numpy_helper.to_array(zp))
    return zps


# ------------------------------------------------------------------------------ anywhere
@no_tensorrt
def test_available_says_what_is_missing_in_one_line():
    assert "\n" not in WHY and ("TensorRT is not installed" in WHY or "GPU" in WHY or "cuda-python" in WHY)


def test_int8_writes_symmetric_qdq_onnx_that_holds_quality(tiny, tmp_path):
    result = BACKEND.compile(tiny["onnx"], _target(), tiny["calib"], tmp_path)
    assert result.precision == "int8" and result.portable_onnx == "model.qdq.onnx"
    assert result.files[0] == ("model.engine" if WHY is None else "model.qdq.onnx")
    for name in ("model.qdq.onnx", "build.json", "build.sh", "calibration.json"):
        assert (tmp_path / name).is_file(), name
    zps = _zero_points(tmp_path / "model.qdq.onnx")
    assert zps and all(np.all(z == 0) for z in zps)  # symmetric int8: TensorRT's requirement
    assert result.extra["qdq"]["per_channel"] > 0
    assert json.loads((tmp_path / "calibration.json").read_text())
    info = result.extra
    assert info["build_command"] == "edgedistill build-engine ."
    assert info["trtexec"].startswith("trtexec --onnx=model.qdq.onnx --saveEngine=model.engine")
    assert "--int8 --fp16" in info["trtexec"] and "--memPoolSize=workspace:1024M" in info["trtexec"]
    assert "trtexec --onnx=model.qdq.onnx" in (tmp_path / "build.sh").read_text()
    # the gate's view without TensorRT: the Q/DQ ONNX under ONNX Runtime vs the fp32 model
    psnrs = [_psnr(_ort(tmp_path / "model.qdq.onnx", s), _ort(tiny["onnx"], s)) for s in tiny["held"]]
    assert min(psnrs) > 30, psnrs


def test_tensorrt_form_of_the_qdq_model_computes_the_same(tiny, tmp_path):
    from edgedistill.onnxtools.qdq import compute_ranges, quantize_qdq
    from edgedistill.onnxtools.tensorrt_qdq import prepare_for_tensorrt

    ranges = compute_ranges(tiny["onnx"], tiny["calib"], tmp_path / "work")
    ort_form = quantize_qdq(tiny["onnx"], tmp_path / "ort.onnx", ranges, symmetric_activations=True)
    trt_form = Path(shutil.copyfile(ort_form, tmp_path / "trt.onnx"))
    counts = prepare_for_tensorrt(trt_form)
    assert counts["float_biases"] > 0 and counts["weight_qdq_pairs"] > 0
    proto = onnx.load(str(trt_form))
    inits = {t.name for t in proto.graph.initializer}
    # TensorRT dequantizes activations only: no DQ may read an int8/int32 initializer directly
    assert not [n.name for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    for sample in tiny["held"]:
        assert np.abs(_ort(ort_form, sample) - _ort(trt_form, sample)).max() < 1e-5


def test_keep_higher_nodes_get_no_qdq(tiny, tmp_path):
    proto = onnx.load(str(tiny["onnx"]))
    convs = [n.name for n in proto.graph.node if n.op_type == "Conv"]
    keep = [convs[1]]
    result = BACKEND.compile(tiny["onnx"], _target(), tiny["calib"], tmp_path, keep_higher=keep)
    assert result.kept_higher_precision == keep
    q = onnx.load(str(tmp_path / "model.qdq.onnx"))
    producer = {o: n for n in q.graph.node for o in n.output}
    kept = next(n for n in q.graph.node if n.name == keep[0])
    other = next(n for n in q.graph.node if n.name == convs[2])
    # TensorRT runs a conv in int8 only when its weights come through Q/DQ: the kept one's stay float
    assert kept.input[1] not in producer, producer[kept.input[1]].op_type
    assert producer[other.input[1]].op_type == "DequantizeLinear"


def test_ranges_passed_in_are_used_without_recalibrating(tiny, tmp_path):
    from edgedistill.onnxtools.qdq import compute_ranges

    ranges = compute_ranges(tiny["onnx"], tiny["calib"], tmp_path / "work")
    result = BACKEND.compile(tiny["onnx"], _target(), None, tmp_path / "out", ranges=ranges)
    assert (tmp_path / "out" / result.portable_onnx).is_file()
    with pytest.raises(EdgeDistillError, match="calibration set"):
        BACKEND.compile(tiny["onnx"], _target(), None, tmp_path / "none")


@pytest.mark.parametrize(
    ("precision", "flag", "absent"), [("fp16", "--fp16", "--int8"), ("fp32", "--noTF32", "--fp16")]
)
def test_fp16_and_fp32_write_the_fp32_onnx(tiny, tmp_path, precision, flag, absent):
    result = BACKEND.compile(tiny["onnx"], _target(precision=precision), None, tmp_path)
    assert result.portable_onnx == "model.onnx" and result.kept_higher_precision == []
    assert (tmp_path / "model.onnx").read_bytes() == tiny["onnx"].read_bytes()
    assert flag in result.extra["trtexec"] and absent not in result.extra["trtexec"]
    assert not (tmp_path / "calibration.json").exists()


def test_static_target_pins_the_optimization_profile(tiny, tmp_path):
    BACKEND.compile(tiny["onnx"], _target(precision="fp16"), None, tmp_path)
    plan = json.loads((tmp_path / "build.json").read_text())
    shape = [1, 3, SIZE, SIZE]
    assert plan["shapes"]["image"] == {"min": shape, "opt": shape, "max": shape, "free": True}
    cmd = trtexec_command(plan)
    assert f"--optShapes=image:1x3x{SIZE}x{SIZE}" in cmd and f"--maxShapes=image:1x3x{SIZE}x{SIZE}" in cmd

    dyn = replace(_target(precision="fp16"), dynamic_shape=True)
    BACKEND.compile(tiny["onnx"], dyn, None, tmp_path / "dyn")
    plan = json.loads((tmp_path / "dyn" / "build.json").read_text())
    assert plan["shapes"]["image"]["min"] == [1, 3, SIZE // 2, SIZE // 2]
    assert plan["shapes"]["image"]["max"] == [1, 3, 2 * SIZE, 2 * SIZE]


def test_target_precisions_are_enforced(tiny, tmp_path):
    with pytest.raises(EdgeDistillError, match="jetson-nano supports fp16, fp32, not 'int8'"):
        get_target("jetson-nano", "int8")
    forced = replace(get_target("jetson-nano"), precision="int8")  # bypassing with_precision
    with pytest.raises(EdgeDistillError, match="not 'int8'"):
        BACKEND.compile(tiny["onnx"], forced, tiny["calib"], tmp_path)


def test_dla_builds_need_reduced_precision(tiny, tmp_path):
    with pytest.raises(EdgeDistillError, match="DLA runs fp16 or int8"):
        BACKEND.compile(tiny["onnx"], _target("jetson-agx-orin", "fp32", dla_core=0), None, tmp_path)
    result = BACKEND.compile(tiny["onnx"], _target("jetson-agx-orin", "fp16", dla_core=1), None, tmp_path)
    assert "--useDLACore=1 --allowGPUFallback" in result.extra["trtexec"]


def test_asymmetric_qdq_is_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q0"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq0"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx.save(model, str(tmp_path / "asym.onnx"))
    with pytest.raises(
        EdgeDistillError, match=r"'q0' is UINT8 with zero point \[128\]: TensorRT needs symmetric int8"
    ):
        check_symmetric_qdq(tmp_path / "asym.onnx")


def test_exported_int8_artifact_runs_its_qdq_onnx_under_onnxruntime(exported, tiny):
    """What runs anywhere of an int8 export: the manifest names the explicit-Q/DQ ONNX the engine is
    built from, and that ONNX (as the gate and `compress` run it without TensorRT) follows fp32."""
    art = load_artifact(exported("resnet", "jetson-orin-nano", "int8"))
    m = art.manifest
    assert (m["backend"], m["precision"], m["portable_onnx"]) == ("tensorrt", "int8", "model.qdq.onnx")
    on_disk = ["model.qdq.onnx", "build.json", "build.sh", "calibration.json"]
    assert m["files"] == (["model.engine"] if WHY is None else []) + on_disk
    assert m["quality"]["passed"] and m["quality"]["psnr_vs_fp32"] >= m["quality"]["min_psnr"]
    qdq = art.dir / "model.qdq.onnx"
    zps = _zero_points(qdq)
    assert len(zps) > 10 and all(np.all(z == 0) for z in zps)  # symmetric int8, as TensorRT needs
    fp32 = exported("resnet", "jetson-orin-nano", "fp16") / "model.onnx"  # fp16 ships the fp32 ONNX
    refs = [_ort(fp32, s) for s in tiny["held"]]
    psnrs = [_psnr(_ort(qdq, s), ref) for s, ref in zip(tiny["held"], refs, strict=True)]
    # what a model that ignores its input reaches: another input's fp32 output (measured 18.0-18.9 dB;
    # the Q/DQ model 25.5-26.3 dB)
    blind = [_psnr(refs[i - 1], ref) for i, ref in enumerate(refs)]
    assert min(psnrs) > max(blind) + 4, (psnrs, blind)


def test_artifact_without_engine_says_how_to_build_it(exported, tmp_path):
    art = exported("resnet", "jetson-orin-nano", "fp16")
    if WHY is None:  # export built the engine here: take it away, as an export without TensorRT writes it
        art = Path(shutil.copytree(art, tmp_path / "art"))
        (art / "model.engine").unlink()
        manifest = json.loads((art / "manifest.json").read_text())
        manifest["files"].remove("model.engine")  # derived from the real manifest
        (art / "manifest.json").write_text(json.dumps(manifest))
    assert load_artifact(art).manifest["files"] == ["model.onnx", "build.json", "build.sh"]
    with pytest.raises(
        EdgeDistillError, match=r"no TensorRT engine yet: .*edgedistill build-engine \.`.*trtexec"
    ):
        engine_path(load_artifact(art))


@no_tensorrt
def test_without_tensorrt_load_and_build_are_one_line_errors(exported, tmp_path):
    art = Path(shutil.copytree(exported("resnet", "jetson-orin-nano", "fp16"), tmp_path / "art"))
    with pytest.raises(EdgeDistillError, match="tensorrt cannot run here"):
        load_runner(load_artifact(art))
    missing = "TensorRT is not installed" if tensorrt_unavailable() else "TensorRT cannot start a builder"
    with pytest.raises(EdgeDistillError, match=missing):
        build_engine(art)
    assert not (art / "model.engine").exists()
    with pytest.raises(EdgeDistillError, match=r"has no build\.json"):
        read_plan(tmp_path / "nowhere")


# ------------------------------------------------------------------------------ on a GPU
@needs_gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_builds_runs_and_profiles(exported, tiny, precision):
    art = load_artifact(exported("resnet", "jetson-orin-nano", precision))  # export built the engine here
    assert art.manifest["files"][0] == "model.engine" and (art.dir / "timing.cache").stat().st_size > 0
    runner = BACKEND.load(art, profile_layers=True)
    assert runner.input_names == ["image"] and runner.output_names == ["output"]
    fp32 = exported("resnet", "jetson-orin-nano", "fp16") / "model.onnx"  # fp16 ships the fp32 ONNX
    for sample in tiny["held"]:
        out = runner.run(sample)["output"]
        ref = _ort(fp32, sample)
        assert out.shape == ref.shape
        if precision == "fp16":
            assert _psnr(out, ref) > 40
        else:  # the engine is as good as its Q/DQ ONNX under ONNX Runtime (25.5-26.3 dB on CPU)
            simulated = _psnr(_ort(art.dir / "model.qdq.onnx", sample), ref)
            assert _psnr(out, ref) > simulated - 3, (_psnr(out, ref), simulated)
    times = runner.layer_times()
    assert times and sum(t.ms for t in times) > 0
    if precision == "int8":
        assert any(t.precision.startswith("int8") for t in times), [t.precision for t in times]
    with pytest.raises(EdgeDistillError, match="shape"):
        runner.run({"image": np.zeros((1, 3, 2 * SIZE, 2 * SIZE), np.float32)})


@needs_gpu
def test_build_engine_on_an_exported_directory_updates_the_manifest(exported, tiny, tmp_path):
    art = Path(shutil.copytree(exported("resnet", "jetson-orin-nano", "fp16"), tmp_path / "exported"))
    # Export built the engine here; take it away and derive the manifest an export without TensorRT
    # writes (the same, minus the engine) from the real one.
    (art / "model.engine").unlink()
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"].remove("model.engine")
    (art / "manifest.json").write_text(json.dumps(manifest))
    engine = build_engine(art)
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["files"][0] == "model.engine" == engine.name
    assert manifest["backend_info"]["engine_built"]["tensorrt"]
    runner = load_runner(load_artifact(art))
    assert runner.run(tiny["held"][0])["output"].shape == (1, 3, SIZE, SIZE)
