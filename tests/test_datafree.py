"""Data-free distillation of classifiers (issue 14): spec, losses, the shapes set, a run that never
reads a training image, resume, the CLI, and the INT8 agreement gate on an exported classifier."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec, TensorSpec, spec_for_family
from edgedistill.data import bundled
from edgedistill.datafree import losses as L
from edgedistill.datafree.api import distill_classifier
from edgedistill.models import create

TINY = {"steps": 3, "batch": 16, "checkpoint_every": 2, "log_every": 1, "ngf": 8}


def test_classifier_spec_and_family():
    spec = spec_for_family("lenet", {"in_channels": 1, "classes": 10, "width": 1.0})
    assert spec.kind == "classifier" and spec.logits == 10 and spec.classes is None
    (x,) = spec.example_inputs(batch=2)
    assert list(create("lenet", **spec.kwargs)(x).shape) == [2, 10]
    assert spec.example_arrays(batch=3)["image"].shape == (3, 1, 32, 32)
    with pytest.raises(EdgeDistillError, match="classifier spec"):
        GeneratorSpec(
            "classifier", [TensorSpec("image", ["N", 1, "H", "W"])], [TensorSpec("logits", ["N", 10])]
        )


def test_dafl_losses_read_like_their_equations():
    even, peaked = torch.zeros(4, 10), torch.eye(10)[[0, 0, 0, 0]] * 20
    assert L.information_entropy(even) < L.information_entropy(peaked)  # even batch: more entropy
    assert float(L.one_hot_ce(peaked)) < 1e-6 < float(L.one_hot_ce(even))
    assert float(L.activation(torch.full((2, 3), -2.0))) == -2.0
    assert float(L.kd_kl(peaked, peaked)) == pytest.approx(0.0, abs=1e-6)


def test_bn_statistics_loss_is_small_only_for_matching_batches():
    bn = torch.nn.BatchNorm2d(4).eval()  # running mean 0, var 1
    hooks = L.BNStatistics(torch.nn.Sequential(bn))
    bn(torch.randn(256, 4, 8, 8))
    close = float(hooks.loss())
    bn(torch.randn(256, 4, 8, 8) * 3 + 2)
    far = float(hooks.loss())
    hooks.remove()
    assert close < 0.1 < 2.0 < far


def test_shapes_set_is_deterministic_and_balanced():
    from edgedistill.data.shapes import CLASSES, render

    labels = torch.arange(20) % len(CLASSES)
    a = render(labels, torch.Generator().manual_seed(3))
    b = render(labels, torch.Generator().manual_seed(3))
    assert a.shape == (20, 3, 32, 32) and torch.equal(a, b)
    assert float(a.min()) >= -1 and float(a.max()) <= 1 and float(a.std()) > 0.2


@pytest.fixture
def training_images_unreadable(monkeypatch):
    """Reading the digits training split raises for the test's duration; held-out stays readable."""
    real_loader = bundled.digits_images

    def heldout_only(split: str = "train", size: int = 32):
        if split == "train":
            raise PermissionError("the training images are unreadable during this test")
        return real_loader(split, size)

    monkeypatch.setattr(bundled, "digits_images", heldout_only)


def test_data_free_run_never_reads_training_images(tmp_path, training_images_unreadable):
    run = distill_classifier("digits-classifier", tmp_path / "run", method="dafl", bn_weight=0.1, **TINY)
    files = {p.name for p in run.run_dir.iterdir()}
    assert {
        "student.safetensors",
        "model.json",
        "metrics.json",
        "generator.safetensors",
        "calibration.npz",
    } <= files
    assert (run.run_dir / "samples" / "synthetic.png").stat().st_size > 0
    m = run.metrics
    assert m["macs_ratio"] >= 4 and m["heldout_n"] == 270 and len(m["synthetic_class_histogram"]) == 10
    assert sum(m["synthetic_class_histogram"]) == 1000
    assert GeneratorSpec.load(run.run_dir / "model.json").kind == "classifier"
    # the same patch does stop a run that needs the training images: the test can fail
    with pytest.raises(PermissionError):
        distill_classifier("digits-classifier", tmp_path / "kd", data="digits", **TINY)


def test_dfad_resumes_from_its_checkpoint(tmp_path):
    first = distill_classifier("digits-classifier", tmp_path / "r", method="dfad", student_steps=2, **TINY)
    assert first.metrics["steps"] == 3
    with pytest.raises(EdgeDistillError, match="--resume"):
        distill_classifier("digits-classifier", tmp_path / "r", method="dfad", student_steps=2, **TINY)
    more = {**TINY, "steps": 5}
    again = distill_classifier(
        "digits-classifier", tmp_path / "r", method="dfad", student_steps=2, resume=True, **more
    )
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and again.metrics["steps"] == 5


@pytest.mark.slow  # an INT8 export with its gate (~25 s)
def test_int8_classifier_keeps_top1_agreement_with_fp32(tmp_path):
    from edgedistill.exporter.api import export

    x, _ = bundled.digits_images("train")  # real digits here: the test gates the teacher itself
    CalibrationSet({"image": x.numpy().astype(np.float32)}).save(tmp_path / "calib.npz")
    result = export("digits-classifier", "x86-onnxruntime", tmp_path / "art", calib_data=tmp_path / "calib.npz",
                    log=lambda _m: None)  # fmt: skip
    q = result.manifest["quality"]
    assert result.manifest["precision"] == "int8" and q["passed"]
    assert q["min_agreement"] == 99.5 and q["agreement"] >= 0.995 and q["samples"] >= 200
    assert 0 < q["max_abs_err"] < 5
    with pytest.raises(EdgeDistillError, match="agreement"):  # an unreachable bar refuses to write
        export("digits-classifier", "x86-onnxruntime", tmp_path / "art2", calib_data=tmp_path / "calib.npz",
               min_agreement=100.1, log=lambda _m: None)  # fmt: skip


@pytest.mark.slow  # two CLI subprocesses (~35 s of CPU)
def test_cli_distill_classifier_is_data_free_by_default(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "edgedistill", *args], capture_output=True, text=True, timeout=300
        )

    r = cli(
        "distill", "digits-classifier", "--steps", "2", "--method", "dfad", "--out", str(tmp_path / "run")
    )
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["method"] == "dfad" and (tmp_path / "run" / "generator.safetensors").exists()
    r = cli("distill", "digits-dcgan", "--data-free", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "--data-free is for classifier teachers" in r.stderr


def test_a_users_classifier_loads_as_family_path(tmp_path):
    from edgedistill.models.embedded import embedded_teachers
    from edgedistill.models.loading import load_generator
    from edgedistill.models.weights import save_weights

    teacher = embedded_teachers()["digits-classifier"]
    save_weights(teacher.generator(), tmp_path / "lenet.safetensors")
    loaded = load_generator(f"lenet:{tmp_path / 'lenet.safetensors'}", kwargs={"width": 2.0})
    assert loaded.spec.kind == "classifier" and loaded.spec.logits == 10
    x, _ = bundled.digits_images("heldout")
    assert torch.equal(loaded.module(x[:8]).argmax(1), teacher.generator()(x[:8]).argmax(1))


@pytest.mark.slow  # distill + OpenVINO INT8 export + interleaved profile (~1-2 min)
def test_compress_digits_classifier_data_free_for_openvino(tmp_path):
    from edgedistill.pipeline.compress import CompressOptions, compress

    opts = CompressOptions(
        teacher="digits-classifier", targets=["x86-openvino"], out=tmp_path / "c", steps=4,
        profile_seconds=0.3, threads=1, distill_options={"method": "dafl"},
    )  # fmt: skip
    report = compress(opts, log=lambda _m: None)
    assert report["kind"] == "classifier" and not report["failed"]
    manifest = json.loads((tmp_path / "c" / "exports" / "x86-openvino-int8" / "manifest.json").read_text())
    q = manifest["quality"]
    assert manifest["precision"] == "int8" and q["passed"] and q["agreement"] >= 0.995
    assert (
        "synthetic" in manifest["calibration"]["source"]
        or "calibration.npz" in manifest["calibration"]["source"]
    )
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"teacher", "student", "openvino int8"} and float(rows["teacher"]["top-1 %"]) > 99


def test_slimmed_lenet_inherits_the_teachers_strongest_channels():
    from edgedistill.datafree.student import make_student
    from edgedistill.models.embedded import embedded_teachers

    t = embedded_teachers()["digits-classifier"]
    teacher, spec = t.generator(), t.spec
    student, s_spec = make_student(teacher, spec, 0.4, inherit=True)
    assert s_spec.kind == "classifier" and s_spec.kwargs["width"] == pytest.approx(0.8)
    w_t, w_s = teacher.body[0].weight, student.body[0].weight
    strongest = w_t.abs().flatten(1).sum(1).argsort(descending=True)[: len(w_s)].sort().values
    assert torch.equal(w_s, w_t[strongest])
    x, _ = bundled.digits_images("heldout")
    assert student(x[:4]).shape == (4, 10)  # the flattened FC input follows the kept channels


def test_bad_inputs_get_one_clear_error(tmp_path):
    from edgedistill.datafree.config import DataFreeConfig
    from edgedistill.datafree.datasets import load_npz

    with pytest.raises(EdgeDistillError, match="--method must be one of replay, dafl, dfad"):
        DataFreeConfig(teacher="t", method="gan")
    spec = spec_for_family("lenet", {"in_channels": 1})
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 3, 32, 32), np.float32))
    with pytest.raises(
        EdgeDistillError, match=r"x has shape \[4, 3, 32, 32\], the teacher eats \[4, 1, 32, 32\]"
    ):
        load_npz(tmp_path / "x.npz", spec)
    with pytest.raises(EdgeDistillError, match="not a classifier"):
        distill_classifier("digits-dcgan", tmp_path / "r", steps=1)


def test_replay_run_is_class_conditional_and_resumes_with_its_bank(tmp_path, training_images_unreadable):
    opts = {**TINY, "student_steps": 2, "bank_size": 40}
    first = distill_classifier("digits-classifier", tmp_path / "r", method="replay", **opts)
    gen_json = json.loads((tmp_path / "r" / "generator.json").read_text())
    assert gen_json["classes"] == 10 and first.metrics["method"] == "replay"
    state = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert state["bank"]["images"].shape == (40, 1, 32, 32)  # 3 batches of 16 wrapped round a bank of 40
    assert state["bank"]["images"].dtype == torch.float16 and state["bank"]["next"] == 8
    again = distill_classifier("digits-classifier", tmp_path / "r", method="replay", resume=True,
                               **{**opts, "steps": 4})  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and again.metrics["steps"] == 4
    assert {"ce", "bn", "adv", "kd"} <= set(rows[-1])


def test_synthetic_bank_is_a_ring_and_survives_a_round_trip():
    from edgedistill.datafree.trainer import SyntheticBank

    bank = SyntheticBank(5)
    bank.add(torch.zeros(3, 1, 2, 2))
    assert bank.count == 3 and bank.next == 3
    bank.add(torch.ones(3, 1, 2, 2))  # wraps: slots 3, 4, 0 now hold ones
    assert bank.count == 5 and bank.next == 1
    assert bank.images[:, 0, 0, 0].tolist() == [1, 0, 0, 1, 1]
    copy = SyntheticBank(5)
    copy.load_state_dict(bank.state_dict())
    assert torch.equal(copy.images, bank.images) and copy.next == 1
    draws = copy.draw(200, torch.Generator().manual_seed(0))
    assert draws.dtype == torch.float32 and set(draws[:, 0, 0, 0].tolist()) == {0.0, 1.0}


def test_conditional_generator_and_replay_losses():
    from edgedistill.datafree.generator import SampleGenerator, balanced_labels

    labels = balanced_labels(25, 10, torch.Generator().manual_seed(0))
    assert torch.bincount(labels, minlength=10).tolist() == [3] * 5 + [2] * 5
    g = SampleGenerator(8, 8, 3, 32, classes=10)
    assert g(torch.randn(4, 8), labels[:4]).shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="needs labels"):
        g(torch.randn(4, 8))
    t = torch.eye(10)[[0, 1, 2, 3]] * 5
    agree, disagree = t + 0.5 * torch.randn(4, 10), t.roll(1, 0)
    assert float(L.agreeing_kl(agree, t)) > 0 and float(L.agreeing_kl(disagree, t)) == 0.0
    bn = torch.nn.BatchNorm2d(2).eval()
    plain, first = L.BNStatistics(torch.nn.Sequential(bn)), L.BNStatistics(torch.nn.Sequential(bn), 10.0)
    bn(torch.randn(64, 2, 4, 4) + 1)
    a, b = float(plain.loss()), float(first.loss())
    assert b == pytest.approx(10 * a)
    first.enabled = False
    bn(torch.randn(64, 2, 4, 4))
    assert first.terms == [] and len(plain.terms) == 1
