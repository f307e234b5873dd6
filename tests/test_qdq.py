"""INT8 QDQ with calibration ranges computed once; measured layer sensitivity; numpy image metrics."""

from __future__ import annotations

import pickle

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.quality import psnr
from edgedistill.core.spec import spec_for_family
from edgedistill.exporter.onnx_export import export_onnx
from edgedistill.exporter.sensitivity import rank_layers
from edgedistill.models.registry import create
from edgedistill.onnxtools.qdq import TensorRanges, compute_ranges, quantizable_nodes, quantize_qdq

pytestmark = pytest.mark.filterwarnings("ignore:only .* calibration samples")

KWARGS = {"ngf": 8, "n_blocks": 2, "norm": "batch"}
HARMFUL = "/model/model.10/conv_block/conv_block.5/Conv"


def _net(harmful: bool = False) -> torch.nn.Module:
    net = create("resnet", **KWARGS)
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    if harmful:
        # Channel 0 entering the block's second conv is always 0 (its BN has gamma = beta = 0), so
        # a huge weight on it changes nothing in fp32, but it sets every output channel's int8
        # weight scale: quantized, that conv's other weights round to zero.
        block = net.model[10].conv_block
        block[2].weight.data[0] = 0.0
        block[2].bias.data[0] = 0.0
        w = block[5].weight.data
        w[:, 0, 1, 1] = 1000 * w.abs().max()
    return net.eval()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("qdq") / "fp32.onnx"
    export_onnx(_net(), spec_for_family("resnet", KWARGS), path, size=(32, 32))
    return path


@pytest.fixture(scope="module")
def calib():
    spec = spec_for_family("resnet", KWARGS)
    return CalibrationSet(spec.example_arrays((32, 32), batch=16, seed=3), method="percentile")


@pytest.fixture(scope="module")
def ranges(model, calib, tmp_path_factory):
    return compute_ranges(model, calib, tmp_path_factory.mktemp("work"), threads=1, progress=False)


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _input_scale(path) -> float:
    """The scale of the QuantizeLinear on the graph input: it comes straight from the input's range."""
    m = onnx.load(str(path))
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "image")
    return float(_inits(m)[q.input[1]])


def test_quantizable_nodes_in_graph_order(model):
    names = quantizable_nodes(model)
    graph = [n.name for n in onnx.load(str(model)).graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert names == graph and len(names) == 10 and HARMFUL in names


def test_ranges_serialize(ranges, tmp_path):
    assert ranges.method == "percentile" and ranges.samples == 16 and "image" in ranges.ranges
    assert all(lo <= hi for lo, hi in ranges.ranges.values())
    back = TensorRanges.load(ranges.save(tmp_path / "r.json"))
    assert back == ranges
    assert pickle.loads(pickle.dumps(ranges)) == ranges


def test_ranges_reused_across_quantizations(model, ranges, tmp_path):
    before = ranges.to_dict()
    nodes = quantizable_nodes(model)
    a = quantize_qdq(model, tmp_path / "a.onnx", ranges)
    b = quantize_qdq(model, tmp_path / "b.onnx", ranges, exclude=nodes[:3])
    assert ranges.to_dict() == before  # the quantizer did not adjust our copy
    lo, hi = ranges.ranges["image"]
    expected = (max(hi, 0.0) - min(lo, 0.0)) / 255.0  # uint8 asymmetric
    assert _input_scale(a) == pytest.approx(expected, rel=1e-6)
    assert _input_scale(b) == _input_scale(a)
    # from the JSON cache alone (pre-processed model gone: it is redone) the same model comes out
    cached = TensorRanges.load(ranges.save(tmp_path / "r.json"))
    cached.preprocessed = None
    c = quantize_qdq(model, tmp_path / "c.onnx", cached)
    assert _inits(onnx.load(str(c))).keys() == _inits(onnx.load(str(a))).keys()
    for k, v in _inits(onnx.load(str(a))).items():
        np.testing.assert_array_equal(_inits(onnx.load(str(c)))[k], v)


def test_excluded_nodes_stay_fp32(model, ranges, tmp_path):
    nodes = quantizable_nodes(model)
    keep = [nodes[1], nodes[-1]]
    out = onnx.load(str(quantize_qdq(model, tmp_path / "q.onnx", ranges, exclude=keep)))
    producer = {o: n.op_type for n in out.graph.node for o in n.output}
    inits = _inits(out)
    for node in out.graph.node:
        if node.name not in nodes:
            continue
        weight = node.input[1]
        if node.name in keep:
            assert weight in inits and inits[weight].dtype == np.float32, node.name
            assert weight not in producer
        else:
            assert producer.get(weight) == "DequantizeLinear", node.name
    assert {p.key for p in out.metadata_props} >= {"edgedistill.spec", "edgedistill.version"}


def test_zero_points_asymmetric_and_symmetric(model, ranges, tmp_path):
    def zero_points(path):
        m = onnx.load(str(path))
        inits = _inits(m)
        return [inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear"]

    asym = zero_points(quantize_qdq(model, tmp_path / "u8.onnx", ranges))
    assert asym and all(z.dtype == np.uint8 for z in asym) and any(z != 0 for z in asym)
    sym = zero_points(quantize_qdq(model, tmp_path / "s8.onnx", ranges, symmetric_activations=True))
    assert sym and all(z.dtype == np.int8 and np.all(z == 0) for z in sym)
    weights = onnx.load(str(tmp_path / "s8.onnx"))
    inits = _inits(weights)
    for n in weights.graph.node:  # per-channel int8 weights, zero point 0
        if (
            n.op_type == "DequantizeLinear"
            and inits.get(n.input[0]) is not None
            and inits[n.input[0]].ndim == 4
        ):
            assert inits[n.input[0]].dtype == np.int8 and np.all(inits[n.input[2]] == 0)
            assert inits[n.input[1]].size > 1


def test_int8_close_to_fp32(model, ranges, calib, tmp_path):
    q = quantize_qdq(model, tmp_path / "q.onnx", ranges)
    x = next(calib.samples(1))
    ref = ort.InferenceSession(str(model)).run(None, x)[0]
    out = ort.InferenceSession(str(q)).run(None, x)[0]
    assert psnr((out + 1) / 2, (ref + 1) / 2) > 30


def test_methods_differ(model, calib, tmp_path):
    def run(method):
        c = CalibrationSet(calib.arrays, method=method, percentile=99.9)
        return compute_ranges(model, c, tmp_path / method, progress=False).ranges

    minmax, entropy, pct = run("minmax"), run("entropy"), run("percentile")
    assert minmax.keys() == entropy.keys() == pct.keys()
    width = {k: hi - lo for k, (lo, hi) in minmax.items()}
    # real histogram settings: Entropy is not MinMax in disguise (ORT's defaults make it so)
    assert any(abs((e[1] - e[0]) - width[k]) > 1e-4 * width[k] for k, e in entropy.items())
    assert all((p[1] - p[0]) <= width[k] * (1 + 1e-6) for k, p in pct.items())
    assert any((p[1] - p[0]) < 0.99 * width[k] for k, p in pct.items())


def test_bad_inputs(model, ranges, tmp_path):
    with pytest.raises(EdgeDistillError, match="no node"):
        quantize_qdq(model, tmp_path / "q.onnx", ranges, exclude=["not_a_node"])
    with pytest.raises(EdgeDistillError, match="minmax, entropy, percentile"):
        compute_ranges(model, CalibrationSet(ranges_input(), method="kl"), tmp_path / "w")
    with pytest.raises(EdgeDistillError, match="takes"):
        compute_ranges(model, CalibrationSet({"z": np.zeros((2, 3, 32, 32), np.float32)}), tmp_path / "w2")
    # ranges measured on another model are refused, not silently misapplied
    dcgan_spec = spec_for_family("dcgan", {"nz": 8, "ngf": 8, "nc": 1, "image_size": 32})
    other = tmp_path / "dcgan.onnx"
    export_onnx(create("dcgan", nz=8, ngf=8, nc=1, image_size=32), dcgan_spec, other)
    other_ranges = compute_ranges(other, CalibrationSet(dcgan_spec.example_arrays(batch=4)), tmp_path / "w3")
    with pytest.raises(EdgeDistillError, match="another model"):
        quantize_qdq(model, tmp_path / "q2.onnx", other_ranges)


def ranges_input() -> dict[str, np.ndarray]:
    return {"image": np.zeros((2, 3, 32, 32), np.float32)}


# ------------------------------------------------------------------------------------------ sensitivity
def test_sensitivity_ranks_the_harmful_layer_first(tmp_path, calib):
    path = tmp_path / "harmful.onnx"
    export_onnx(_net(harmful=True), spec_for_family("resnet", KWARGS), path, size=(32, 32))
    cal, held = calib.split(4)
    r = compute_ranges(path, cal, tmp_path / "w", progress=False)
    ranked = rank_layers(path, r, held, progress=False)
    # every quantized node is ranked: the weighted layers and the activation ops around them
    assert set(quantizable_nodes(path)) < {x.name for x in ranked}
    assert {x.op_type for x in ranked} - {"Conv", "ConvTranspose"}, [x.op_type for x in ranked]
    assert ranked[0].name == HARMFUL and ranked[0].op_type == "Conv"
    assert ranked[0].psnr_alone < ranked[1].psnr_alone - 10, [(x.name, x.psnr_alone) for x in ranked[:3]]
    assert [x.psnr_alone for x in ranked] == sorted(x.psnr_alone for x in ranked)
    only = rank_layers(path, r, held, candidates=[HARMFUL, ranked[-1].name], progress=False)
    assert [x.name for x in only] == [HARMFUL, ranked[-1].name]
