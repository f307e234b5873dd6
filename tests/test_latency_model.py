"""The latency model (search/latency.py) and INT8 deployability (search/deploy.py), on the real runtimes.

Tiny models and short timing windows: what is checked is the machinery (blocks, cache, which kernels
a runtime really runs), not a latency number.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgedistill.core.spec import spec_for_family
from edgedistill.core.targets import get_target
from edgedistill.models.registry import create
from edgedistill.search import block_timing, latency, latency_compile, latency_table
from edgedistill.search.block_timing import Kernel, summarize
from edgedistill.search.blocks import Block

SIZE = (32, 32)


def _tiny(n_blocks: int = 2, **kw):
    kwargs = {"ngf": 4, "n_blocks": n_blocks, **kw}
    spec = spec_for_family("resnet", kwargs, default_size=SIZE)
    return create("resnet", **kwargs), spec


def test_blocks_dedupe_and_group(tmp_path: Path) -> None:
    model, spec = _tiny(n_blocks=3)
    cut = latency.cut_model(model, spec, get_target("x86-onnxruntime", "int8"), SIZE, tmp_path)
    descs = [b.desc for b in cut.blocks]
    # stem, 2 downs, 3 x (2 trunk convs), 2 ups, head: one block per weighted op
    assert len(cut.blocks) == 1 + 2 + 6 + 2 + 1, descs
    keys = [b.key for b in cut.blocks]
    assert len(set(keys[3:9])) == 2, "the residual blocks repeat: two distinct trunk blocks"
    assert "Pad" in descs[0] and "kept fp32" in descs[0] and "kept fp32" in descs[-1]
    assert any(d.startswith("ConvTranspose 3x3") for d in descs)
    assert descs[4].endswith("+Add"), "the residual Add joins the second conv's block"


def test_predict_measures_once_then_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, spec = _tiny(n_blocks=1)
    monkeypatch.setattr(latency, "BLOCK_CALLS", 3)
    monkeypatch.setattr(latency, "BLOCK_SECONDS", 0.0)
    first = latency.predict(
        model, spec, "x86-onnxruntime", "fp32", SIZE, cache_dir=tmp_path, overhead=False, progress=False
    )
    tables = list(tmp_path.glob("x86-onnxruntime-fp32-*.json"))
    assert len(tables) == 1 and first.ms > 0 and first.overhead_ms == 0
    saved = json.loads(tables[0].read_text())
    assert saved["meta"]["runtime"] and len(saved["blocks"]) == len(first.rows)

    def no_timing(*_a, **_k):
        raise AssertionError("a cached block was measured again")

    monkeypatch.setattr(latency, "time_local_many", no_timing)
    again = latency.predict(
        model, spec, "x86-onnxruntime", "fp32", SIZE, cache_dir=tmp_path, overhead=False, progress=False
    )
    assert again.ms == pytest.approx(first.ms)


def test_predict_many_times_the_new_blocks_of_several_models_in_one_batch(
    tmp_path: Path, monkeypatch
) -> None:
    """The search predicts candidates in batches: their new blocks (each once, shared ones too) are
    timed in one go (over SSH: one session), and each model gets its own prediction."""
    (small, spec), (large, _) = _tiny(n_blocks=1), _tiny(n_blocks=2)
    monkeypatch.setattr(latency, "BLOCK_CALLS", 2)
    monkeypatch.setattr(latency, "BLOCK_SECONDS", 0.0)
    batches: list[int] = []
    real = latency.time_local_many

    def counted(dirs, *a, **k):
        batches.append(len(dirs))
        return real(dirs, *a, **k)

    monkeypatch.setattr(latency, "time_local_many", counted)
    preds = latency.predict_many(
        [small, large],
        spec,
        "x86-onnxruntime",
        "fp32",
        SIZE,
        cache_dir=tmp_path,
        overhead=False,
        progress=False,
    )
    keys = {r["block"] for p in preds for r in p.rows}
    assert batches == [len(keys) + 1], "one batch, every distinct block once, and the speed anchor"
    assert preds[1].ms > preds[0].ms > 0 and len(preds[1].rows) >= len(preds[0].rows)


def test_blocks_timed_in_a_slow_minute_are_scaled_to_the_tables_first_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The speed anchor runs in every timing session: a session in which every kernel ran 3x slow,
    the anchor's too (a shared VM's slow minute, a stolen core), stores its blocks at the speed of
    the table's first session, not 3x theirs."""
    import dataclasses

    model, spec = _tiny(n_blocks=1)
    monkeypatch.setattr(latency, "BLOCK_CALLS", 5)
    monkeypatch.setattr(latency, "BLOCK_SECONDS", 0.0)
    tgt = get_target("x86-onnxruntime", "fp32")
    table = latency_table.LatencyTable.open(tgt, None, 1, tmp_path)
    cut = latency.cut_model(model, spec, tgt, SIZE, tmp_path / "m")
    pairs = [(cut, b) for b in {b.key: b for b in cut.blocks}.values()]
    latency.measure_blocks(pairs, tgt, table, tmp_path / "w1", None, 1, progress=False)
    first = sum(v["ms"] for v in table.data["blocks"].values())
    real = latency.time_local_many

    def slow_minute(*a, **k):
        return [[dataclasses.replace(x, ms=3 * x.ms) for x in ks] for ks in real(*a, **k)]

    monkeypatch.setattr(latency, "time_local_many", slow_minute)
    latency.measure_blocks(pairs, tgt, table, tmp_path / "w2", None, 1, progress=False)
    again = sum(v["ms"] for v in table.data["blocks"].values())
    assert table.data["anchor"]["blocks"] > 0
    assert 0.5 < again / first < 2.0, (first, again)  # unscaled: ~3


def test_one_inputs_file_feeds_blocks_that_share_an_input_name() -> None:
    """Blocks of two candidates can name a tensor alike at different widths; timed in one remote
    session they read one inputs file, where each block's arrays travel under its own label."""
    from types import SimpleNamespace

    from edgedistill.runtime.sources import OWN_INPUT, make_inputs

    runner = SimpleNamespace(input_names=("t",))  # make_inputs reads only the names
    given = {
        f"b0{OWN_INPUT}t": np.zeros((1, 8, 4, 4), np.float32),
        f"b1{OWN_INPUT}t": np.ones((1, 16, 4, 4), np.float32),
    }
    src = SimpleNamespace(label="b1", spec=None, given="b1")
    assert make_inputs(src, runner, None, 1, 0, given)["t"].shape == (1, 16, 4, 4)
    src.label = "b0"
    assert make_inputs(src, runner, None, 1, 0, given)["t"].shape == (1, 8, 4, 4)
    src.label = "plain"  # a source with no labelled arrays takes the unlabelled ones, as before
    assert make_inputs(src, runner, None, 1, 0, {**given, "t": np.ones((1, 3, 2, 2), np.float32)})[
        "t"
    ].shape == (1, 3, 2, 2)


def test_a_block_counts_its_own_kernels_not_its_carriers() -> None:
    """A block is timed between stand-in convs: its kernels are told by the names they carry (ORT's
    `_token_N`, the quantizers' tensor names; OpenVINO's renamed deconvolution by the layers fused
    into it), and a nameless layout kernel goes with the kernel after it."""
    block = Block("k", "d", ["/m/conv", "/m/d2s", "/m/relu"], ["x"], ["/m/relu_output_0"],
                  tensors=["/m/conv_output_0", "/m/d2s_output_0", "/m/relu_output_0"])  # fmt: skip
    own, other = block_timing.block_names(block)
    ort = [
        Kernel("edgedistill_carrier/in0_QuantizeLinear", "QuantizeLinear", 1.0),
        Kernel("Transpose", "Transpose", 1.0),  # into the stand-in's layout: the carrier's
        Kernel("edgedistill_carrier/conv_in0_token_3", "QLinearConv", 1.0),
        Kernel("/m/conv_token_5", "QLinearConv", 2.0, "int8"),
        Kernel("Transpose_token_7", "Transpose", 0.5),  # out of NHWC for DepthToSpace: the block's
        Kernel("/m/conv_output_0_DequantizeLinear", "DequantizeLinear", 0.25),
        Kernel("/m/d2s", "DepthToSpace", 0.5),
        Kernel("/m/relu_output_0_QuantizeLinear", "QuantizeLinear", 0.25),
        Kernel("Transpose_token_9", "Transpose", 1.0),  # into the stand-in's layout again
        Kernel("edgedistill_carrier/conv_out0_token_10", "QLinearConv", 1.0),
        Kernel("edgedistill_carrier/out0_DequantizeLinear", "DequantizeLinear", 1.0),
        Kernel("Transpose_token_11", "Transpose", 1.0),  # nameless tail: with what ran before
    ]
    t = summarize(ort, own, other)
    assert t.ms == pytest.approx(3.5) and t.kernels == 5 and t.boundary_ms == pytest.approx(7.0)
    assert t.precision["int8"] == pytest.approx(2.0)
    ov = [
        Kernel("edgedistill_carrier/in0/fq_output_0", "Subgraph", 1.0),
        Kernel("edgedistill_carrier/conv_in0/WithoutBiases", "Convolution", 1.0),
        Kernel(
            "ConvolutionBackpropData_1",
            "Deconvolution",
            3.0,
            "",
            "ConvolutionBackpropData_1,/m/relu/fq_output_0",
        ),
        Kernel("edgedistill_carrier/conv_out0/WithoutBiases", "Convolution", 1.0),
        Kernel("edgedistill_carrier/conv_out0/WithoutBiases_acdb_abcd_output/sink_port_0", "Reorder", 1.0),
    ]
    t = summarize(ov, own, other)
    assert t.ms == pytest.approx(3.0) and t.kernels == 1 and t.boundary_ms == pytest.approx(4.0)
    ort_fp32 = [  # NCHWc: a conv is named by its output tensor, reorders convert to and from it
        Kernel("ReorderInput", "ReorderInput", 1.0),
        Kernel("x_nchwc", "Conv", 1.0),  # the stand-in writes the block's input
        Kernel("ReorderInput_token_4", "ReorderInput", 0.5),
        Kernel("/m/relu_output_0_nchwc", "Conv", 2.0),  # the block's conv, its ReLU fused
        Kernel("edgedistill_carrier/out0_nchwc", "Conv", 1.0),
        Kernel("ReorderOutput_token_8", "ReorderOutput", 1.0),
    ]
    t = summarize(ort_fp32, own, other)
    assert t.ms == pytest.approx(2.5) and t.kernels == 2 and t.boundary_ms == pytest.approx(4.0)


@pytest.mark.parametrize("target", ["x86-onnxruntime", "x86-openvino"])
def test_blocks_are_timed_in_a_carrier_that_computes_what_the_model_does(tmp_path: Path, target: str) -> None:
    """Each block between identity 1x1 convs computes its tensors as in the model, and timed on the
    real runtime only its own kernels count: the stand-ins' do not, and the upsampling block's
    deconvolution (renamed by OpenVINO) does."""
    import onnxruntime as ort

    from edgedistill.search.blocks import CARRIER, block_model
    from edgedistill.search.latency_compile import OPSET, _activations, compile_block

    model, spec = _tiny(n_blocks=1)
    tgt = get_target(target, "int8")
    cut = latency.cut_model(model, spec, tgt, SIZE, tmp_path / "cut")
    acts = _activations(cut, cut.blocks)
    trunk = cut.blocks[3]
    up = next(b for b in cut.blocks if b.desc.startswith("ConvTranspose"))
    proto, feeds = block_model(cut.proto, trunk, cut.shapes, OPSET)
    stand_ins = [n for n in proto.graph.node if n.name.startswith(CARRIER)]
    assert len(stand_ins) == len(trunk.inputs) + len(trunk.outputs) == 2
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {name: acts[t][:1] for name, t in feeds.items()})[0]
    reads_output = Block("o", "", [], trunk.outputs, [])  # _activations evaluates blocks' inputs
    want = _activations(cut, [reads_output])
    np.testing.assert_allclose(got, want[trunk.outputs[0]][:1], rtol=1e-4, atol=1e-4)

    dirs = [compile_block(cut, b, acts, tgt, tmp_path / f"b{i}") for i, b in enumerate((trunk, up))]
    timed = block_timing.time_local_many(
        [d / "art" for d in dirs], [latency._load_feed(d) for d in dirs], 1, 2, 0.0
    )
    for b, ks in zip((trunk, up), timed, strict=True):
        t = summarize(ks, *block_timing.block_names(b))
        assert t.kernels >= 1 and t.ms > 0 and t.boundary_ms > 0, (b.desc, ks)
        assert not any(CARRIER in d["name"] for d in t.detail), t.detail


def test_overhead_fit_ignores_a_negative_slope() -> None:
    """Three references: c stays 1 and the residual is a + b * kernels, never a negative kernel cost."""
    fit = latency.overhead_fit([10, 20, 30], [5.0, 5.0, 5.0], [6.0, 7.0, 8.0])
    assert _line(fit) == pytest.approx({"a": 0.0, "b": 0.1, "c": 1.0})
    fit = latency.overhead_fit([10, 20, 30], [5.0, 5.0, 5.0], [8.0, 7.0, 6.0])
    assert fit["b"] == 0 and fit["a"] == pytest.approx(2.0) and fit["c"] == 1


def test_overhead_fit_scales_the_blocks_when_references_say_so() -> None:
    """Blocks timed apart cost more than inside the whole model (OpenVINO's reorders at every cut):
    with enough references the fit finds the scale, and a nonsense scale falls back to 1."""
    rng = np.random.default_rng(0)
    kernels = rng.integers(20, 150, 8)
    blocks = rng.uniform(10, 90, 8)
    whole = 0.5 + 0.01 * kernels + 0.7 * blocks
    fit = latency.overhead_fit(kernels.tolist(), blocks.tolist(), whole.tolist())
    assert _line(fit) == pytest.approx({"a": 0.5, "b": 0.01, "c": 0.7}, abs=1e-6)
    assert latency.whole_ms(fit, 50.0, 100) == pytest.approx(0.5 + 1.0 + 35.0)
    nonsense = latency.overhead_fit(kernels.tolist(), blocks.tolist(), (5 * blocks).tolist())
    assert nonsense["c"] == 1.0


def test_int8_prediction_costs_convtranspose_as_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On ORT the int8 ConvTranspose block runs fp32 kernels (DQ -> fp32 -> Q): measured as such."""
    model, spec = _tiny(n_blocks=1)
    monkeypatch.setattr(latency, "BLOCK_CALLS", 3)
    monkeypatch.setattr(latency, "BLOCK_SECONDS", 0.0)
    pred = latency.predict(
        model, spec, "x86-onnxruntime", "int8", SIZE, cache_dir=tmp_path, overhead=False, progress=False
    )
    by = {
        r["block"].split(" ")[0] + (" kept" if "kept" in r["block"] else ""): r["precision"]
        for r in pred.rows
    }
    assert by["ConvTranspose"] == "fp32" and by["Conv"] == "int8", pred.rows


@pytest.mark.slow
def test_blocks_measured_over_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--host: blocks are profiled on the device as `profile --host` runs (a local sshd here)."""
    from test_profile_remote import _start_sshd, _stop

    (tmp_path / "sshd").mkdir()
    proc, reach = _start_sshd(tmp_path / "sshd", sftp=True)
    try:
        model, spec = _tiny(n_blocks=1)
        monkeypatch.setattr(latency, "BLOCK_CALLS", 3)
        ssh = {
            "options": reach["ssh_options"],
            "identity": reach["identity"],
            "python": reach["remote_python"],
        }
        pred = latency.predict(
            model, spec, "x86-onnxruntime", "fp32", SIZE, host=reach["host"], ssh=ssh,
            cache_dir=tmp_path / "cache", overhead=False, progress=False,
        )  # fmt: skip
        assert pred.ms > 0 and len(pred.rows) >= 5
        table = json.loads(Path(pred.table).read_text())
        assert table["meta"]["host"] == reach["host"] and all(
            b["kernels"] > 0 for b in table["blocks"].values()
        )
    finally:
        _stop(proc)


def _refs_with_upsampling(n: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    kernels = rng.integers(20, 150, n).astype(float)
    blocks = rng.uniform(10, 90, n)
    up = blocks * rng.uniform(0.05, 0.5, n)  # each reference upsamples in its own share
    return kernels, blocks, up


def _line(fit: dict) -> dict:
    """The fitted line's terms, without the floor (see test_no_prediction_falls_below_the_references)."""
    return {k: v for k, v in fit.items() if not k.startswith("floor_")}


def test_no_prediction_falls_below_the_references() -> None:
    """A line fitted on busy-machine references can cross zero below the smallest of them: a tiny
    model is then predicted at the references' smallest whole/blocks ratio, never at negative time."""
    kernels, blocks = [40, 80, 120, 160, 200], [4.0, 8.0, 12.0, 16.0, 20.0]
    whole = [-2.0 + 0.9 * b + 0.01 * k for b, k in zip(blocks, kernels, strict=True)]  # a < 0
    fit = latency.overhead_fit(kernels, blocks, whole)
    assert fit["a"] == pytest.approx(-2.0) and fit["floor_ratio"] == pytest.approx(min(
        w / b for w, b in zip(whole, blocks, strict=True)))  # fmt: skip
    assert fit["floor_below_ms"] == 4.0
    assert latency.whole_ms(fit, 20.0, 200) == pytest.approx(whole[-1])  # inside the references: the line
    tiny = latency.whole_ms(fit, 0.5, 4)
    assert tiny == pytest.approx(fit["floor_ratio"] * 0.5) and tiny > 0
    # inside the references' range too (CI: a digits DCGAN predicted at -0.13 ms by a noisy table)
    noisy = {"a": -1.0, "b": 0.0, "c": 1.0, "floor_ratio": 0.8, "floor_below_ms": 0.5}
    assert latency.whole_ms(noisy, 0.9, 3) == pytest.approx(0.72)


def test_overhead_fit_scales_upsampling_blocks_apart() -> None:
    """Upsampling blocks cost more timed alone than inside their model: with enough references
    the fit gives them their own scale d, and whole_ms applies it to their share only."""
    kernels, blocks, up = _refs_with_upsampling()
    whole = 1.0 + 0.02 * kernels + 0.8 * (blocks - up) + 0.5 * up
    fit = latency.overhead_fit(kernels.tolist(), blocks.tolist(), whole.tolist(), up.tolist())
    assert _line(fit) == pytest.approx({"a": 1.0, "b": 0.02, "c": 0.8, "d": 0.5}, abs=1e-6)
    assert latency.whole_ms(fit, 50.0, 100, up_ms=20.0) == pytest.approx(1.0 + 2.0 + 24.0 + 10.0)
    one = latency.overhead_fit(kernels.tolist(), blocks.tolist(), whole.tolist())
    assert "d" not in one, "without the split asked for, one scale as before"
    assert latency.whole_ms(one, 50.0, 100, up_ms=20.0) == pytest.approx(latency.whole_ms(one, 50.0, 100))


def test_overhead_fit_keeps_one_scale_when_references_cannot_carry_the_split() -> None:
    kernels, blocks, up = _refs_with_upsampling()
    one_scale = 0.5 + 0.01 * kernels + 0.7 * blocks
    # d above c (upsampling cheaper alone than inside): not what cutting does, so noise
    wrong_way = 0.5 + 0.01 * kernels + 0.7 * (blocks - up) + 1.2 * up
    fit = latency.overhead_fit(kernels.tolist(), blocks.tolist(), wrong_way.tolist(), up.tolist())
    assert "d" not in fit and 0.25 < fit["c"] < 2
    # fewer references than MIN_REFS_FOR_SPLIT: no d, the old fit
    few = latency.MIN_REFS_FOR_SPLIT - 1
    fit = latency.overhead_fit(
        kernels[:few].tolist(), blocks[:few].tolist(), one_scale[:few].tolist(), up[:few].tolist()
    )
    assert "d" not in fit and fit["c"] == pytest.approx(0.7)
    # every reference upsamples in the same share: d cannot be told from c
    same = (0.3 * blocks).tolist()
    fit = latency.overhead_fit(kernels.tolist(), blocks.tolist(), one_scale.tolist(), same)
    assert "d" not in fit and fit["c"] == pytest.approx(0.7)


def test_is_upsampling_reads_the_block_ops() -> None:
    assert latency.is_upsampling("ConvTranspose 3x3 32->16 s2 @64x64+InstanceNormalization+Relu")
    assert latency.is_upsampling("Conv 3x3 32->16 s1 @128x128+Resize+InstanceNormalization+Relu")
    assert latency.is_upsampling("Conv 3x3 32->128 s1 @64x64+DepthToSpace+InstanceNormalization+Relu")
    assert not latency.is_upsampling("Conv 7x7 3->8 s1 @262x262+Pad+InstanceNormalization+Relu (kept fp32)")
    assert not latency.is_upsampling("Conv 3x3 32->32 s1 dw @66x66+Pad")


def test_table_predict_scales_upsampling_blocks_apart(tmp_path: Path) -> None:
    """LatencyTable.predict splits the blocks' ms by the table's descriptions and applies the fit."""
    table = latency.LatencyTable(
        tmp_path / "t.json", {"format": latency.TABLE_FORMAT}, {"blocks": {}, "overhead": {}}
    )
    descs = {
        "stem": "Conv 7x7 3->8 s1 @262x262+Pad+InstanceNormalization+Relu",
        "up": "Conv 3x3 16->8 s1 @256x256+Resize+InstanceNormalization+Relu",
    }
    for key, ms in (("stem", 4.0), ("up", 6.0)):
        table.data["blocks"][key] = {"desc": descs[key], "ms": ms, "kernels": 3, "precision": {"fp32": ms}}
    blocks = [Block(k, descs[k], [k], [], []) for k in ("stem", "up", "up")]
    table.put_overhead("image", (64, 64), {"a": 1.0, "b": 0.1, "c": 0.9, "d": 0.5})
    pred = table.predict(blocks, "image", (64, 64))
    assert pred.blocks_ms == pytest.approx(16.0) and pred.up_ms == pytest.approx(12.0) and pred.kernels == 9
    assert pred.ms == pytest.approx(1.0 + 0.9 + 0.9 * 4.0 + 0.5 * 12.0)
    plain = table.predict(blocks, "image", (64, 64), with_overhead=False)
    assert plain.ms == pytest.approx(16.0), "without the overhead: the blocks' plain sum"
    assert latency.TABLE_FORMAT >= 4, "tables fitted with one scale must be refitted"


def test_table_is_keyed_by_this_cpu_not_only_the_hostname(tmp_path: Path, monkeypatch) -> None:
    """A VM keeps its hostname when it lands on another CPU: a table measured on a Zen3 (AVX2) must
    not be read on a Zen4 (AVX-512 VNNI), whose INT8 kernels run about twice as fast."""
    tgt = get_target("x86-onnxruntime", "int8")
    here = latency_table.LatencyTable.open(tgt, None, 2, tmp_path)
    here.data["blocks"]["k"] = {"ms": 1.0}
    here.save()
    assert latency_table.LatencyTable.open(tgt, None, 2, tmp_path).block("k") == {"ms": 1.0}
    other_isa = ["avx2"] if "avx512_vnni" in latency_table.isa() else ["avx2", "avx512f", "avx512_vnni"]
    monkeypatch.setattr(latency_table, "isa", lambda: other_isa)
    elsewhere = latency_table.LatencyTable.open(tgt, None, 2, tmp_path)
    assert elsewhere.block("k") is None and elsewhere.path != here.path


def test_qat_students_are_timed_as_their_export_compiles_them(tmp_path: Path) -> None:
    """A quantization-aware student exports with no layer kept fp32: on ONNX Runtime the latency table
    times that form, in a table of its own. On OpenVINO its export converts QDQ ONNX (FakeQuantize ops,
    no NNCF), and blocks and whole models are compiled so."""
    from edgedistill.search.latency_compile import QAT_FORM, as_qat_export

    model, spec = _tiny(n_blocks=1)
    ort = get_target("x86-onnxruntime", "int8")
    qat = as_qat_export(ort)
    assert (
        qat.options[QAT_FORM] and as_qat_export(get_target("x86-onnxruntime", "fp32")).options == ort.options
    )
    plain_cut = latency.cut_model(model, spec, ort, SIZE, tmp_path / "plain")
    qat_cut = latency.cut_model(model, spec, qat, SIZE, tmp_path / "qat")
    assert "kept fp32" in plain_cut.blocks[0].desc and "kept fp32" in plain_cut.blocks[-1].desc
    assert not any("kept fp32" in b.desc for b in qat_cut.blocks), (
        "QAT trained the first/last layers quantized"
    )
    assert (
        latency_table.LatencyTable.open(qat, None, 2, tmp_path).path
        != latency_table.LatencyTable.open(ort, None, 2, tmp_path).path
    )
    got = latency.measure_models([model], [spec], qat, size=SIZE, threads=1, min_time=0.05)
    assert got[0] > 0
    ov = get_target("x86-openvino", "int8")
    ov_qat = as_qat_export(ov)
    assert ov_qat.options[QAT_FORM] and as_qat_export(ov_qat) is ov_qat
    whole = latency.compile_whole(model, spec, ov_qat, SIZE, tmp_path / "ov-whole")
    info = json.loads((whole / "manifest.json").read_text())["backend_info"]
    assert info["qat"]["fake_quantize_ops"] > 0, "the QAT export's form: the QDQ ONNX converted"
    nncf = latency.compile_whole(model, spec, ov, SIZE, tmp_path / "ov-nncf")
    assert "qat" not in json.loads((nncf / "manifest.json").read_text())["backend_info"]
    ov_cut = latency.cut_model(model, spec, ov_qat, SIZE, tmp_path / "ov-cut")
    block = latency_compile.compile_block(
        ov_cut,
        ov_cut.blocks[0],
        latency_compile._activations(ov_cut, ov_cut.blocks[:1]),
        ov_qat,
        tmp_path / "ov-block",
    )
    assert (
        json.loads((block / "art" / "manifest.json").read_text())["backend_info"]["qat"]["fake_quantize_ops"]
        > 0
    )
