"""INT8 deployability (search/deploy.py): which ops a target really runs in INT8, read from the
real runtimes (ORT's optimized graph, XNNPACK's QDQ rules, OpenVINO's runtime model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import spec_for_family
from edgedistill.core.targets import get_target
from edgedistill.models.registry import create
from edgedistill.onnxtools.qdq import compute_ranges, quantize_qdq
from edgedistill.search import deploy

SIZE = (32, 32)


def test_convtranspose_falls_back_to_fp32_on_ort() -> None:
    ops = deploy.ort_int8_ops("u8s8")  # read from ORT's optimized graph, not a hand list
    assert ops["ConvTranspose"] == "fp32"
    assert ops["Conv"] == "int8" and ops["ResizeConv"] == "int8" and ops["DepthToSpace"] == "int8"
    # nearest Resize runs on uint8; bilinear does not (ORT 1.32 keeps DQ -> Resize -> Q around it)
    assert ops["Resize"] == "int8" and ops["ResizeBilinear"] == "fp32"


def _zoo_qdq(tmp_path: Path, form: str) -> Path:
    deploy._write_op_zoo(tmp_path / "zoo.onnx")
    x = np.random.default_rng(0).standard_normal((2, 8, 16, 16)).astype(np.float32)
    ranges = compute_ranges(
        tmp_path / "zoo.onnx", CalibrationSet({"x": x}), tmp_path / "w", threads=1, progress=False
    )
    return quantize_qdq(tmp_path / "zoo.onnx", tmp_path / f"zoo.{form}.onnx", ranges, form=form)


def test_xnnpack_form_is_signed_with_zero_point_0_weights(tmp_path: Path) -> None:
    q = onnx.load_model(str(_zoo_qdq(tmp_path, "xnnpack")))
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    made = {o: n for n in q.graph.node for o in n.output}
    for node in q.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        act, wgt = made[node.input[0]], made[node.input[1]]
        assert inits[act.input[2]].dtype == np.int8, f"{node.name}: activations must be signed"
        w_zp, w_scale = inits[wgt.input[2]], inits[wgt.input[1]]
        assert w_zp.dtype == np.int8 and not np.any(w_zp), f"{node.name}: weights symmetric, zero point 0"
        if node.op_type == "Conv":
            assert w_scale.size > 1, f"{node.name}: per-channel weights"
        else:
            assert w_scale.size == 1, "XNNPACK's QLinearConvTranspose is per tensor"
    forms = deploy.xnnpack_conv_forms(tmp_path / "zoo.xnnpack.onnx")
    assert forms and all(p.runs_as.startswith("XNNPACK q") for p in forms)
    u8 = deploy.xnnpack_conv_forms(_zoo_qdq(tmp_path, "u8s8"))
    assert all(p.runs_as == "CPU EP" for p in u8), "u8 activations + s8 weights: no XNNPACK kernel"
    # without XNNPACK (the PyPI aarch64 wheel) ORT's ARM CPU EP still fuses the signed form
    arm = deploy.ort_int8_ops("xnnpack", arm=True)
    assert arm["Conv"] == "int8" and arm["ResizeConv"] == "int8"


def test_arm_targets_quantize_for_xnnpack(tmp_path: Path) -> None:
    assert get_target("arm64-mobile-ort").options.get("qdq_form") == "xnnpack"
    assert get_target("x86-onnxruntime").options.get("qdq_form") is None
    bad = tmp_path / "bad.toml"
    bad.write_text('backend = "onnxruntime"\nprecision = "int8"\noptions = { qdq_form = "u4" }\n')
    with pytest.raises(EdgeDistillError, match="qdq_form"):
        get_target(bad)


def test_openvino_placements_read_the_runtime_model(tmp_path: Path) -> None:
    """Which precision each layer of an OpenVINO INT8 model runs in, read from its runtime model:
    OpenVINO 2026 holds those entries as OVAny, whose str() is "<OVAny class>" (every layer read
    as an unknown type in an unknown precision until they were asked for as strings)."""
    from edgedistill.search.latency_compile import compile_whole

    kwargs = {"ngf": 4, "n_blocks": 1}
    model, spec = create("resnet", **kwargs), spec_for_family("resnet", kwargs, default_size=SIZE)
    art = compile_whole(model, spec, get_target("x86-openvino", "int8"), SIZE, tmp_path)
    placed = deploy.check_target(next(art.glob("*.xml")), get_target("x86-openvino", "int8"))
    convs = [p for p in placed if p.op_type == "Convolution"]
    assert convs and all(p.precision == "int8" for p in convs), placed
    assert not any("OVAny" in f"{p.op_type}{p.runs_as}{p.note}" for p in placed)
    assert any("/Conv" in p.note for p in convs), "what each layer fused, by the graph's names"
