"""Quantization-aware distillation: the fake-quantizer is what the INT8 export runs, and its scales ship.

A tiny BatchNorm ResNet student is fine-tuned a few QAT steps towards a tiny teacher; then
- the QDQ ONNX export carries exactly the trained (scale, zero point) of every quantized tensor,
- that QDQ model under ONNX Runtime computes what the fake-quant torch model computes,
- a QAT phase interrupted by its checkpoint resumes to the same result,
- `edgedistill.export` keeps no layer at higher precision for it, on ONNX Runtime and OpenVINO (the
  x86 ONNX Runtime profile keeps the first and last conv for a student without QAT).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

SIZE = 32
GAIN = 2.0  # as conftest's tiny generators: an output that depends on the input
KWARGS = {"ngf": 8, "n_blocks": 2, "norm": "batch"}


def _net(seed: int, arch: dict | None = None) -> torch.nn.Module:
    from edgedistill.models import create

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = create("resnet", **KWARGS, **(arch or {}))
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                    m.weight.mul_(GAIN)
                elif isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.1, 0.1)
    return net.eval()


class _Batches:
    """Smooth random images and the teacher's outputs; a fixed held-out batch."""

    def __init__(self, teacher: torch.nn.Module) -> None:
        self.teacher = teacher

    def _inputs(self, step: int, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(1000 + step)
        x = torch.rand(n, 3, SIZE // 4, SIZE // 4, generator=g) * 2 - 1
        return torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def __call__(self, step: int, n: int):
        from edgedistill.data.sources import Batch

        x = self._inputs(step, n)
        return Batch(x), self.teacher(x)

    def heldout(self):
        from edgedistill.data.sources import Batch

        return Batch(self._inputs(10_000, 4))


def _run(
    tmp: Path,
    steps: int,
    resume: bool = False,
    student: torch.nn.Module | None = None,
    arch: dict | None = None,
) -> dict:
    from edgedistill.core.spec import spec_for_family
    from edgedistill.distiller.qat import run_qat
    from edgedistill.models.weights import save_weights

    tmp.mkdir(parents=True, exist_ok=True)
    spec = spec_for_family("resnet", {**KWARGS, **(arch or {})}, default_size=(SIZE, SIZE))
    spec.save(tmp / "model.json")
    student = student if student is not None else _net(1)
    save_weights(student, tmp / "student.safetensors")
    return run_qat(student, _net(2), spec, _Batches(_net(2)), tmp, steps, batch_size=4, resume=resume)


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("qat") / "run"
    _run(run, steps=12)
    return run


def _fp32_onnx(run: Path, out: Path) -> Path:
    from edgedistill.exporter.onnx_export import export_onnx
    from edgedistill.models.loading import load_generator

    loaded = load_generator(str(run))
    export_onnx(loaded.module, loaded.spec, out, size=(SIZE, SIZE))
    return out


def test_qdq_export_carries_trained_scales_and_matches_fake_quant(qat_run: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from edgedistill.distiller.fakequant import QatStudent, student_topology
    from edgedistill.exporter.qat_export import find_qat, qat_ranges
    from edgedistill.models.loading import load_generator
    from edgedistill.onnxtools.qdq import quantize_qdq
    from edgedistill.onnxtools.qdq_trained import read_activation_scales, topology

    qat = find_qat(qat_run)
    assert qat is not None and len(qat["scales"]) >= 8  # input, relus, adds, convs before adds, last conv
    fp32 = _fp32_onnx(qat_run, tmp_path / "fp32.onnx")
    ranges = qat_ranges(fp32, qat, tmp_path / "work")
    qdq = quantize_qdq(fp32, tmp_path / "qdq.onnx", ranges)

    # every quantized activation carries its point's trained scale and zero point
    topo = topology(fp32)
    stored = read_activation_scales(qdq)
    assert set(stored) == set(topo.points) | set(topo.aliases)
    for tensor, (scale, zp) in stored.items():
        want_scale, want_zp = qat["scales"][topo.point_of(tensor)]
        assert zp == want_zp, tensor
        assert np.float32(scale) == np.float32(want_scale), tensor  # bit-exact

    # the QDQ model under ONNX Runtime computes what the fake-quant torch model computes
    loaded = load_generator(str(qat_run))
    fake = QatStudent(loaded.module, student_topology(loaded.module, loaded.spec)).eval()
    fake.load_scales(qat["scales"])
    x = _Batches(_net(2)).heldout().inputs
    with torch.no_grad():
        want = fake(x).numpy()
        fp = fake.restore()(x).numpy()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    # AVX2 without VNNI: ORT's fast u8s8 kernels saturate int16 pair sums (this tiny net's full-range
    # weights on full-range inputs hit it); its precise mode computes the int8 arithmetic exactly
    so.add_session_config_entry("session.x64quantprecision", "1")
    sess = ort.InferenceSession(str(qdq), so, providers=["CPUExecutionProvider"])
    assert any(n.op_type == "QuantizeLinear" for n in __import__("onnx").load(str(qdq)).graph.node)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert float(want.std(axis=(2, 3)).min()) > 0.05  # a picture that depends on its input, not flat gray
    err, quant_err = np.abs(got - want), np.abs(got - fp)
    # The int8 model computes the fake-quant's numbers: most pixels bit-exact, and what differs is a
    # fraction of the quantization error itself. Not all: fp32 sums in another order round a rare
    # near-tie the other way (measured: 1 of 32768 values of the first conv), and this deliberately
    # high-gain net spreads that flip. A wrong placement or scale would leave the error ~ quant_err.
    assert float(np.mean(err < 1e-5)) > 0.4, float(np.mean(err < 1e-5))
    assert float(err.mean()) < 0.25 * float(quant_err.mean()), (float(err.mean()), float(quant_err.mean()))
    assert float(np.abs(got - fp).mean()) > 1e-3  # and int8 is not fp32 by accident


@pytest.mark.parametrize(
    "arch",
    [
        {"upsample": "nearest"},
        {"upsample": "bilinear"},
        {"upsample": "pixelshuffle"},
        {"block": "dwsep", "kernel": 3},
    ],
    ids=lambda a: "-".join(map(str, a.values())),
)
def test_qat_runs_on_every_searched_operator(arch: dict, tmp_path: Path) -> None:
    """The search's operators (resize + conv, PixelShuffle, depthwise-separable blocks): every tensor
    the INT8 export quantizes is one the fake-quantizer trains, and the QDQ export carries its scale.
    (A resize inside the upsampling module once stopped `compress --latency-ms` after distilling.)"""
    from edgedistill.exporter.qat_export import find_qat, qat_ranges
    from edgedistill.onnxtools.qdq import quantize_qdq
    from edgedistill.onnxtools.qdq_trained import read_activation_scales, topology

    run = tmp_path / "run"
    _run(run, steps=2, student=_net(1, arch), arch=arch)
    qat = find_qat(run)
    fp32 = _fp32_onnx(run, tmp_path / "fp32.onnx")
    qdq = quantize_qdq(fp32, tmp_path / "qdq.onnx", qat_ranges(fp32, qat, tmp_path / "work"))
    topo, stored = topology(fp32), read_activation_scales(qdq)
    assert set(stored) == set(topo.points) | set(topo.aliases)
    for tensor, (scale, zp) in stored.items():
        assert (np.float32(scale), zp) == (np.float32(qat["scales"][topo.point_of(tensor)][0]),
                                           qat["scales"][topo.point_of(tensor)][1]), tensor  # fmt: skip
    # a permutation (DepthToSpace) keeps its input's scale, so ORT runs it on uint8 rather than
    # DQ -> fp32 -> Q (its own trained scale cost the 19 ms PixelShuffle student 17 %)
    nodes = __import__("onnx").load(str(qdq)).graph.node
    producer = {o: n for n in nodes for o in n.output}
    for n in (n for n in nodes if n.op_type == "DepthToSpace"):
        source = producer[producer[n.input[0]].input[0]].input[0]  # DQ <- Q <- the float tensor
        assert stored[n.output[0]] == stored[source], n.name
    assert any(n.op_type == "DepthToSpace" for n in nodes) == (arch.get("upsample") == "pixelshuffle")
    # and the int8 model computes what the fake-quantizer trained: a fraction of the quantization
    # error apart (measured: 0 for dwsep once its BatchNorm folds into the pointwise conv, 1.07 before;
    # nearest 0.14, PixelShuffle 0.03). Bilinear 0.43: ORT interpolates uint8 in fixed point, which
    # float interpolation rounded again (0.54 without that rounding) does not reproduce bit for bit.
    got, want, fp = _int8_vs_fake(run, qdq, qat)
    bound = 0.6 if arch.get("upsample") == "bilinear" else 0.25
    assert float(want.std(axis=(2, 3)).min()) > 0.05  # a picture that depends on its input
    assert float(np.abs(got - want).mean()) < bound * float(np.abs(got - fp).mean())


def _int8_vs_fake(run: Path, qdq: Path, qat: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The QDQ model under ONNX Runtime, the fake-quant torch student, and the float student, on held-out inputs."""
    import onnxruntime as ort

    from edgedistill.distiller.fakequant import QatStudent, student_topology
    from edgedistill.models.loading import load_generator

    loaded = load_generator(str(run))
    fake = QatStudent(loaded.module, student_topology(loaded.module, loaded.spec)).eval()
    fake.load_scales(qat["scales"])
    x = _Batches(_net(2)).heldout().inputs
    with torch.no_grad():
        want, fp = fake(x).numpy(), fake.restore()(x).numpy()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.add_session_config_entry("session.x64quantprecision", "1")  # exact int8 sums (see above)
    sess = ort.InferenceSession(str(qdq), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0], want, fp


def test_qat_resumes_to_the_same_student(tmp_path: Path) -> None:
    """Ctrl-C (a real SIGINT) mid-phase saves a checkpoint; --resume ends where an unbroken run ends."""
    import os
    import signal

    from edgedistill.core.errors import EdgeDistillError

    whole = _run(tmp_path / "whole", steps=6)

    class CtrlCAtStep3(_Batches):
        def __call__(self, step: int, n: int):
            if step == 2:
                os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: finish this step, save, stop
            return super().__call__(step, n)

    from edgedistill.core.spec import spec_for_family
    from edgedistill.distiller.qat import run_qat
    from edgedistill.models.weights import save_weights

    split = tmp_path / "split"
    split.mkdir()
    spec = spec_for_family("resnet", KWARGS, default_size=(SIZE, SIZE))
    spec.save(split / "model.json")
    save_weights(_net(1), split / "student.safetensors")
    with pytest.raises(EdgeDistillError, match="--resume"):
        run_qat(_net(1), _net(2), spec, CtrlCAtStep3(_net(2)), split, 6, batch_size=4)
    assert torch.load(split / "checkpoints" / "qat.pt", weights_only=True)["step"] == 3
    assert not (split / "qat.json").exists()
    resumed = _run(split, steps=6, resume=True)
    assert resumed["scales"] == whole["scales"]
    assert (tmp_path / "whole" / "student.safetensors").read_bytes() == (
        split / "student.safetensors"
    ).read_bytes()


def test_export_keeps_no_layer_for_a_qat_student(qat_run: Path, tmp_path: Path) -> None:
    from conftest import _calibration_images

    import edgedistill

    run = tmp_path / "run"
    shutil.copytree(qat_run, run)
    photos = _calibration_images(tmp_path / "photos")
    kw = dict(size=(SIZE, SIZE), calib_data=photos, calib_size=16, holdout=4, threads=1, log=lambda _m: None)
    res = edgedistill.export(
        str(run), "x86-onnxruntime", tmp_path / "ort", precision="int8", min_psnr=30, **kw
    )
    m = res.manifest
    assert m["kept_higher_precision"] == [] and m["gate"]["kept_by_target"] == []
    assert m["quality"]["passed"] and m["qat"]["scales"] == len(
        json.loads((run / "qat.json").read_text())["scales"]
    )
    # OpenVINO runs the same trained QDQ (Q/DQ -> FakeQuantize), not NNCF's recalibration
    ov = edgedistill.export(str(run), "x86-openvino", tmp_path / "ov", precision="int8", min_psnr=30, **kw)
    assert ov.manifest["kept_higher_precision"] == [] and ov.manifest["quality"]["passed"]
    assert (
        ov.manifest["backend_info"]["qat"]["fake_quantize_ops"] >= m["qat"]["scales"]
        and "nncf" not in ov.manifest["backend_info"]
    )
    # without its QAT record the same student gets the profile's first/last-conv policy back
    (run / "qat.json").unlink()
    plain = edgedistill.export(
        str(run), "x86-onnxruntime", tmp_path / "ptq", precision="int8", min_psnr=None, **kw
    )
    assert len(plain.manifest["gate"]["kept_by_target"]) == 2 and "qat" not in plain.manifest


def test_qat_trains_the_weights_of_a_frozen_student(tmp_path: Path) -> None:
    """The distiller hands QAT its EMA student, whose parameters are frozen (requires_grad False):
    QAT once learned only the activation scales and shipped the pre-QAT weights unchanged (the
    demo's INT8 artifact stayed at 43.3 dB vs fp32; with the weights learning, 45.3)."""
    from edgedistill.models.weights import read_safetensors

    student = _net(1).requires_grad_(False)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    _run(tmp_path / "run", steps=4, student=student)
    after = read_safetensors(tmp_path / "run" / "student.safetensors")
    moved = [k for k, v in after.items() if k.endswith("weight") and not torch.equal(v, before[k])]
    assert len(moved) >= 10, f"QAT changed only {moved} of the student's weights"
    assert (tmp_path / "run" / "student.pre_qat.safetensors").is_file()
