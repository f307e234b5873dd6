"""Folding DQ -> Pad -> Q into an int8 Pad changes no output and removes the round trips."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.spec import spec_for_family
from edgedistill.exporter.onnx_export import export_onnx
from edgedistill.models.registry import create
from edgedistill.onnxtools.qdq import compute_ranges, quantize_qdq
from edgedistill.onnxtools.qdq_fold import fold_pads

pytestmark = pytest.mark.filterwarnings("ignore:only .* calibration samples")
KWARGS = {"ngf": 8, "n_blocks": 2, "norm": "batch"}


def _pad_inputs_from_dq(model: onnx.ModelProto) -> int:
    producers = {o: n for n in model.graph.node for o in n.output}
    return sum(
        1
        for n in model.graph.node
        if n.op_type == "Pad" and producers.get(n.input[0]) is not None
        and producers[n.input[0]].op_type == "DequantizeLinear"
    )  # fmt: skip


def test_fold_pads_is_exact_and_removes_round_trips(tmp_path):
    torch.manual_seed(0)
    spec = spec_for_family("resnet", KWARGS)
    export_onnx(create("resnet", **KWARGS).eval(), spec, tmp_path / "fp32.onnx", size=(32, 32))
    calib = CalibrationSet(spec.example_arrays((32, 32), batch=8, seed=1))
    ranges = compute_ranges(tmp_path / "fp32.onnx", calib, tmp_path, progress=False)
    quantize_qdq(tmp_path / "fp32.onnx", tmp_path / "q.onnx", ranges)
    model = onnx.load(str(tmp_path / "q.onnx"))
    before = _pad_inputs_from_dq(model)
    assert before >= 4  # reflect pads before the residual convs
    assert fold_pads(model) == before
    assert _pad_inputs_from_dq(model) == 0
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "folded.onnx"))
    x = next(calib.samples(1))
    outs = [ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, x)[0]
            for f in ("q.onnx", "folded.onnx")]  # fmt: skip
    np.testing.assert_array_equal(outs[0], outs[1])
