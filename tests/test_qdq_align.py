"""Channel-aligned INT8 convs for ONNX Runtime on x86 (onnxtools/qdq_align.py): every conv that can
be given ORT's fast kernel gets it, the model computes what it did, and what cannot be aligned is
left alone. Compiled by the real backend, run by the real ORT."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from edgedistill.backends.onnxruntime_align import align_int8_file
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import spec_for_family
from edgedistill.core.targets import get_target
from edgedistill.models.registry import create
from edgedistill.onnxtools import qdq_align
from edgedistill.search.latency_compile import as_qat_export, compile_whole

SIZE = (32, 32)


def _compile(
    tmp_path: Path, kwargs: dict, align: str | bool = "widen", qat: bool = True, family: str = "resnet"
) -> Path:
    """Compiled as export does for x86-onnxruntime; `align`: the target's align_int8_channels
    ("edges" is the target's default)."""
    tgt = get_target("x86-onnxruntime", "int8")
    tgt = as_qat_export(tgt) if qat else tgt
    tgt = replace(tgt, options={**tgt.options, "align_int8_channels": align})
    torch.manual_seed(0)  # the aligned and the plain compile of one model
    size = None if family == "dcgan" else SIZE  # a latent input has no image size
    spec = spec_for_family(family, kwargs, **({} if size is None else {"default_size": size}))
    model = create(family, **kwargs).eval()
    return compile_whole(model, spec, tgt, size, tmp_path / (str(align) if align else "plain"))


def _int8_convs(path: Path) -> dict[str, tuple[int, int, int]]:
    """{conv: (in, out, group)} of each conv with int8 weights in a QDQ model."""
    model = onnx.load_model(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for n in model.graph.node:
        w_dq = made.get(n.input[1]) if n.op_type == "Conv" else None
        if w_dq is not None and w_dq.op_type == "DequantizeLinear" and inits[w_dq.input[0]].dtype == np.int8:
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            cout, cin = inits[w_dq.input[0]].shape[:2]
            out[n.name] = (int(cin), int(cout), int(group))
    return out


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _meets_kernel(cin: int, cout: int, group: int) -> bool:
    return group == 1 and cin % 4 == 0 and cout >= 16 and cout % 8 == 0


def test_the_default_aligns_the_first_and_last_conv_only(tmp_path: Path) -> None:
    """The half-budget searched student's shape: a 3 -> 32 first conv and a 16 -> 3 last conv, the
    middle already aligned. By default (edges) those two are aligned; a conv whose other side stays
    misaligned (a 3 -> 6 first conv, a 6 -> 3 last conv) is left as it is: the kernel would still refuse it."""
    half = {
        "norm": "batch",
        "widths": [32, 64, 48, 16, 16],
        "upsample": "bilinear",
        "kernel": 3,
        "n_blocks": 1,
    }
    art = compile_whole(
        create("resnet", **half).eval(),
        spec_for_family("resnet", half, default_size=SIZE),
        as_qat_export(get_target("x86-onnxruntime", "int8")),
        SIZE,
        tmp_path / "half",
    )
    done = json.loads((art / "manifest.json").read_text())["backend_info"]["aligned_convs"]
    assert len(done) == 2 and "in 3 -> 4" in done[0] and "out 3 -> 16" in done[1], done
    assert all(_meets_kernel(*c) for c in _int8_convs(art / "model.onnx").values())
    narrow = _compile(tmp_path, {"ngf": 6, "n_blocks": 1}, align="edges")
    assert "aligned_convs" not in json.loads((narrow / "manifest.json").read_text())["backend_info"]


def test_a_bad_align_option_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(EdgeDistillError, match="align_int8_channels must be one of edges, widen"):
        _compile(tmp_path, {"ngf": 4, "n_blocks": 1}, align="all")


def test_every_conv_of_a_narrow_student_meets_the_kernel_and_computes_the_same(tmp_path: Path) -> None:
    # ngf 6: widths 6-12-24 and 3-channel I/O, like the uniform width-0.1 student: every conv misaligned
    kwargs = {"ngf": 6, "n_blocks": 2}
    plain, aligned = _compile(tmp_path, kwargs, align=False), _compile(tmp_path, kwargs)
    before, after = _int8_convs(plain / "model.onnx"), _int8_convs(aligned / "model.onnx")
    assert sum(not _meets_kernel(*c) for c in before.values()) == 3  # stem, first down conv, head
    assert all(_meets_kernel(*c) for c in after.values()), after
    done = json.loads((aligned / "manifest.json").read_text())["backend_info"]["aligned_convs"]
    assert len(done) >= 4 and any("in 3 -> 4" in d for d in done) and any("out 3 -> 16" in d for d in done)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 40, 48)).astype(np.float32)  # not the compile size
    ref, got = _run(plain / "model.onnx", x), _run(aligned / "model.onnx", x)
    assert got.shape == ref.shape == (2, 3, 40, 48)
    np.testing.assert_allclose(got, ref, atol=2e-3)


@pytest.mark.parametrize(
    ("family", "kwargs"),
    [
        ("resnet", {"input_nc": 1, "norm": "batch", "widths": [6, 12, 16, 12, 6], "upsample": "bilinear",
                    "block": "dwsep", "kernel": 3, "n_blocks": 2}),  # 1 -> 3 channels, searched ops
        ("resnet", {"norm": "batch", "widths": [8, 16, 32, 16, 8], "upsample": "pixelshuffle", "n_blocks": 1}),
        ("unet", {"ngf": 6, "num_downs": 5}),  # skip connections: Concat, which nothing widens through
        ("dcgan", {"nz": 16, "ngf": 6, "image_size": 32}),  # a latent input, ConvTranspose all the way
    ],
)  # fmt: skip
@pytest.mark.parametrize("mode", ["edges", "widen"])
def test_other_generators_compute_the_same(tmp_path: Path, family: str, kwargs: dict, mode: str) -> None:
    plain, aligned = (_compile(tmp_path, kwargs, align=a, family=family) for a in (False, mode))
    s = ort.InferenceSession(str(plain / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).uniform(
        -1, 1, [1 if isinstance(d, str) else d for d in s.get_inputs()[0].shape]
    )
    if family != "dcgan":
        x = np.random.default_rng(3).uniform(-1, 1, (1, kwargs.get("input_nc", 3), *SIZE))
    x = x.astype(np.float32)
    np.testing.assert_allclose(_run(aligned / "model.onnx", x), _run(plain / "model.onnx", x), atol=2e-3)
    if family == "resnet" and mode == "widen":  # its last conv (-> 3 colour channels) is aligned
        assert any(c[1] == 16 and c[0] % 4 == 0 for c in _int8_convs(aligned / "model.onnx").values())


def test_convs_read_by_a_residual_add_are_left_alone(tmp_path: Path) -> None:
    """A trunk of 20 channels (ngf 5) meets residual Adds: zero channels would reach an Add, so the
    convs writing into one keep their 20 outputs; the first conv of each block (read by the second
    alone) and the stem and head are still aligned."""
    kwargs = {"ngf": 5, "n_blocks": 2}
    aligned = _compile(tmp_path, kwargs)
    after = _int8_convs(aligned / "model.onnx")
    into_add = {n: c for n, c in after.items() if "conv_block.5" in n}
    inside = {n: c for n, c in after.items() if "conv_block.1" in n}
    assert len(into_add) == len(inside) == 2, after
    assert all(c[1] == 20 for c in into_add.values()), into_add
    assert all(c[1] == 24 for c in inside.values()), inside
    x = np.random.default_rng(2).uniform(-1, 1, (1, 3, *SIZE)).astype(np.float32)
    plain = _compile(tmp_path, kwargs, align=False)
    np.testing.assert_allclose(_run(aligned / "model.onnx", x), _run(plain / "model.onnx", x), atol=2e-3)


def test_ptq_default_keeps_io_convs_fp32_and_aligns_the_rest(tmp_path: Path) -> None:
    kwargs = {"ngf": 6, "n_blocks": 1}
    aligned = _compile(tmp_path, kwargs, qat=False)
    convs = _int8_convs(aligned / "model.onnx")
    assert all(c[0] != 3 and c[1] != 3 for c in convs.values()), "first/last convs stay fp32 (keep_io_layers)"
    # the conv after the fp32 first conv reads 6 float channels: nothing int8 to widen, its outputs are
    second = convs.pop("/model/model.4/Conv")
    assert second[:2] == (6, 16), second
    assert all(_meets_kernel(*c) for c in convs.values()), convs


def test_other_targets_are_not_aligned(tmp_path: Path) -> None:
    kwargs = {"ngf": 6, "n_blocks": 1}
    x86 = _compile(tmp_path, kwargs)
    arm = replace(get_target("x86-onnxruntime", "int8"), arch="aarch64")
    xnn = replace(arm, arch="x86_64", options={"qdq_form": "xnnpack"})
    for tgt in (arm, xnn):
        assert align_int8_file(x86 / "model.onnx", tgt) == [], tgt.name


def test_a_rewrite_that_changes_the_output_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend compares the aligned model's output with the unaligned one's before keeping it:
    a rewrite that got one weight wrong leaves the compiled model as it was."""
    kwargs = {"ngf": 6, "n_blocks": 1}
    plain = _compile(tmp_path, kwargs, align=False)
    original = (plain / "model.onnx").read_bytes()
    real = qdq_align.align_int8_convs

    def off_by_one_channel(model: onnx.ModelProto, widen: bool) -> list:
        done = real(model, widen=widen)
        assert done, "the rewrite must have changed something for this test to mean anything"
        w = next(t for t in model.graph.initializer if t.name.endswith("weight_quantized"))
        a = numpy_helper.to_array(w).copy()
        a[0] = -a[0]
        w.CopyFrom(numpy_helper.from_array(a, w.name))
        return done

    monkeypatch.setattr(qdq_align, "align_int8_convs", off_by_one_channel)
    widen = replace(get_target("x86-onnxruntime", "int8"), options={"align_int8_channels": "widen"})
    assert align_int8_file(plain / "model.onnx", widen) == []
    assert (plain / "model.onnx").read_bytes() == original
