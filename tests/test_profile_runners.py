"""`edgedistill profile` on real runtimes: torch eager, ONNX Runtime, OpenVINO (TensorRT skips here).

The tiny ResNet generator of tests/conftest.py (32x32) as a torch run directory and as the artifacts
a real export makes of it; every test measures for a fraction of a second on one thread.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgedistill.core.errors import EdgeDistillError
from edgedistill.profiler.api import profile
from edgedistill.runtime.report import ProfileReport

SIZE = 32
FAST = {
    "threads": 1,
    "warmup": 2,
    "iterations": 5,
    "min_time": 0.2,
    "layers": 5,
    "layer_calls": 3,
    "progress": False,
}


@pytest.fixture(scope="module")
def models(tiny_generators, exported) -> dict[str, Path]:
    """The tiny generator's torch run directory and what `edgedistill.export` made of it: fp32 ONNX
    Runtime and OpenVINO artifacts, and a TensorRT one (without an engine where TensorRT is absent)."""
    return {
        "student": tiny_generators["resnet"],
        "ort": exported("resnet", "x86-onnxruntime", "fp32"),
        "ov": exported("resnet", "x86-openvino", "fp32"),
        "trt": exported("resnet", "jetson-orin-nano", "fp16"),
    }


def test_torch_runner(models):
    report = profile(str(models["student"]), **FAST)
    m = report.models[0]
    assert (m.kind, m.backend, m.precision) == ("torch", "torch", "fp32")
    assert m.stats.n >= 5 and 0 < m.stats.min <= m.stats.p50 <= m.stats.p90 <= m.stats.p99 <= m.stats.max
    assert m.input_shapes == {"image": [1, 3, SIZE, SIZE]}
    assert m.macs and m.macs > 1_000_000 and m.achieved_gops > 0
    assert m.speedup == 1.0 and m.psnr_vs_first is None
    assert m.first_ms > 0 and m.load_s >= 0 and m.size_bytes > 10_000
    assert m.layers and m.layers[0]["op_type"] in ("Conv2d", "ConvTranspose2d", "InstanceNorm2d")
    assert report.settings["threads"] == 1 and report.settings["rounds"] >= 5


def test_onnxruntime_runner(models):
    report = profile(models["ort"], **FAST)
    m = report.models[0]
    assert (m.kind, m.backend, m.precision) == ("artifact", "onnxruntime", "fp32")
    assert m.stats.p50 > 0 and m.size_bytes == (models["ort"] / "model.onnx").stat().st_size
    assert m.layers, "ONNX Runtime's profiler reported no layers"
    assert {layer["op_type"] for layer in m.layers} & {"Conv", "ConvTranspose", "FusedConv"}


def test_openvino_runner_shows_the_kernel_that_ran(models):
    report = profile(models["ov"], **FAST)
    m = report.models[0]
    assert (m.backend, m.precision) == ("openvino", "fp32")
    assert m.stats.p50 > 0 and m.size_bytes > 10_000
    assert m.layers and all(layer["precision"] for layer in m.layers)
    assert any("f32" in k.lower() for k in m.kernel_mix)  # the fp32 IR really ran in f32 (not bf16)


def test_side_by_side_report_files(models, tmp_path):
    report = profile(
        {"teacher": models["student"], "ort": models["ort"], "ov": models["ov"]},
        json_path=tmp_path / "p.json", md_path=tmp_path / "p.md", plot_path=tmp_path / "p.png",
        **{**FAST, "threads": 2},
    )  # fmt: skip
    assert report.settings["order"] == ["teacher", "ort", "ov"] and report.settings["interleaved"]
    rounds = report.settings["rounds"]
    assert all(m.stats.n == rounds for m in report.models)  # one call per model per round
    teacher, ort, ov = report.models
    assert teacher.speedup == 1.0
    assert ort.speedup == pytest.approx(teacher.stats.p50 / ort.stats.p50, rel=1e-3)
    assert ort.psnr_vs_first > 60 and ov.psnr_vs_first > 60  # fp32 artifacts of the same weights
    assert report.peaks["measured"]["fp32"] > 0 and ort.pct_measured_peak > 0

    data = json.loads((tmp_path / "p.json").read_text())
    again = ProfileReport.from_dict(data)
    assert again.to_dict() == data and data["what_is_timed"].startswith("host-side wall time")
    md = (tmp_path / "p.md").read_text()
    header = "| model | backend | precision | p50 ms | p90 ms | p99 ms | FPS | size | PSNR vs teacher |"
    assert header in md and md.count("\n| ") >= 4
    for name in ("teacher", "ort", "ov", "Slowest layers"):
        assert name in md
    png = (tmp_path / "p.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "p.png").shape[0] > 200


def test_tensorrt_skips_with_reason_without_gpu(models):
    from edgedistill.backends.tensorrt import TensorRtBackend

    why = TensorRtBackend().available()
    if why is None:
        pytest.skip("TensorRT and a GPU are present: nothing to skip")
    report = profile([models["ov"], models["trt"]], **{**FAST, "layers": 0})
    ov, trt = report.models
    assert ov.stats is not None and trt.stats is None
    assert trt.skipped == why and trt.name in report.to_markdown()
    with pytest.raises(EdgeDistillError, match="nothing could run here"):
        profile(models["trt"], **FAST)


def test_given_inputs_and_sizes(models, tmp_path):
    x = np.random.default_rng(3).random((1, 3, 48, 48), dtype=np.float32) * 2 - 1
    np.savez(tmp_path / "in.npz", image=x)
    report = profile([models["student"], models["ort"]], inputs=tmp_path / "in.npz", **{**FAST, "layers": 0})
    assert all(m.input_shapes == {"image": [1, 3, 48, 48]} for m in report.models)
    assert report.models[1].psnr_vs_first > 60
    with pytest.raises(EdgeDistillError, match="takes inputs"):
        profile(models["ort"], inputs={"a": x, "b": x}, **FAST)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "edgedistill", "profile", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_table_and_json(models, tmp_path):
    r = _cli(str(models["student"]), str(models["ov"]), "--threads", "1", "--min-time", "0.2", "-n", "5",
             "--layers", "3", "--no-roofline", "--json", str(tmp_path / "r.json"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "p50" in r.stdout and models["student"].name in r.stdout and "host-side wall time" in r.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert [m["name"] for m in data["models"]] == [models["student"].name, models["ov"].name]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("/no/such/dir/model.onnx",), "artifact not found"),
        (("no-such-teacher",), "neither an embedded teacher"),
        (("STUDENT", "--target", "no-such-target"), "no target 'no-such-target'"),
        (("STUDENT", "--warmup", "0"), "--warmup must be at least 1"),
    ],
)
def test_cli_bad_input_one_line_exit_2(models, args, message):
    r = _cli(*[str(models["student"]) if a == "STUDENT" else a for a in args])
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bare_onnx_file_reads_the_spec_from_its_metadata(models, tmp_path):
    import onnx

    from edgedistill.exporter.onnx_export import export_onnx
    from edgedistill.models.loading import load_generator

    loaded = load_generator(str(models["student"]))
    path = tmp_path / "g.onnx"
    export_onnx(loaded.module, loaded.spec, path, size=(SIZE, SIZE))
    report = profile(path, **{**FAST, "layers": 0})
    m = report.models[0]
    assert (m.name, m.backend, m.precision) == ("g.onnx", "onnxruntime", "unknown")
    assert m.input_shapes == {"image": [1, 3, SIZE, SIZE]}
    # The exported model with its spec metadata removed, and no manifest beside it: no spec anywhere
    proto = onnx.load(str(models["ort"] / "model.onnx"))
    assert any(p.key == "edgedistill.spec" for p in proto.metadata_props)
    del proto.metadata_props[:]
    bare = tmp_path / "bare"
    bare.mkdir()
    onnx.save(proto, str(bare / "m.onnx"))
    with pytest.raises(EdgeDistillError, match="carries no generator spec"):
        profile(bare / "m.onnx", **FAST)
