"""Generators of the two kinds whose inputs are more than one picture or one z: an inpainter (RGB +
mask channel -> RGB) and a label-conditioned generator (z and a one-hot class label -> image).

Each is a user's module:Class with its spec in a JSON file beside its weights (models/loading.py
reads `<weights>.json` or `model.json` there), and goes through every step: distill, export (ONNX
Runtime and OpenVINO, INT8 with calibration), profile, run and bundle.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec, TensorSpec

INPAINT_MODULE = '''
import torch


class Inpaint(torch.nn.Module):
    """RGB + mask (4 channels) in, RGB out: known pixels pass, holes are painted from around them."""

    def __init__(self, width=16):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(4, width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, x):
        image, mask = x[:, :3], x[:, 3:]
        return image * (1 - mask) + torch.tanh(self.net(x)) * mask
'''

LABEL_MODULE = '''
import torch


class CondGen(torch.nn.Module):
    """A DCGAN-like generator of 32x32 RGB conditioned on a class: z (N, nz, 1, 1) and a one-hot
    label (N, classes); a bias-free Linear on the one-hot row is an embedding lookup."""

    def __init__(self, nz=16, classes=10, ngf=16):
        super().__init__()
        self.embed = torch.nn.Linear(classes, 8, bias=False)
        self.net = torch.nn.Sequential(
            torch.nn.ConvTranspose2d(nz + 8, ngf * 4, 4, 1, 0), torch.nn.BatchNorm2d(ngf * 4), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1), torch.nn.BatchNorm2d(ngf * 2), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1), torch.nn.BatchNorm2d(ngf), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(ngf, 3, 4, 2, 1), torch.nn.Tanh(),
        )

    def forward(self, z, label):
        e = self.embed(label).unsqueeze(-1).unsqueeze(-1)  # torch-pruning follows this; not a .reshape
        return self.net(torch.cat([z, e], 1))
'''

# What a user writes beside the weights: the spec edgedistill cannot guess from the first layer.
INPAINT_SPEC = {
    "kind": "image",
    "inputs": [{"name": "image", "shape": ["N", 4, "H", "W"]}],
    "outputs": [{"name": "output", "shape": ["N", 3, "H", "W"]}],
    "mask_channel": True,
    "default_size": [32, 32],
}
LABEL_SPEC = {
    "kind": "noise+label",
    "inputs": [{"name": "z", "shape": ["N", 16, 1, 1]}, {"name": "label", "shape": ["N", 10]}],
    "outputs": [{"name": "image", "shape": ["N", 3, 32, 32]}],
    "default_size": [32, 32],
}


def _mask_spec() -> GeneratorSpec:
    return GeneratorSpec.from_dict(INPAINT_SPEC)


def _label_spec() -> GeneratorSpec:
    return GeneratorSpec.from_dict(LABEL_SPEC)


def _user_teacher(root: Path, kind: str, with_spec: bool = True) -> tuple[str, Path]:
    """(module:Class, weights path) of a user's model written under `root` (importable from there)."""
    mod, cls, source, spec = {
        "inpaint": ("inpaintmod_kinds", "Inpaint", INPAINT_MODULE, INPAINT_SPEC),
        "label": ("labelmod_kinds", "CondGen", LABEL_MODULE, LABEL_SPEC),
    }[kind]
    (root / f"{mod}.py").write_text(source)
    sys.path.insert(0, str(root))
    try:
        module = __import__(mod)
        net = getattr(module, cls)()
    finally:
        sys.path.remove(str(root))
    torch.manual_seed(0)
    for m in net.modules():  # non-default BatchNorm statistics: the eval output depends on them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    weights = root / f"{kind}.pth"
    torch.save(net.state_dict(), weights)
    if with_spec:
        (root / f"{kind}.json").write_text(json.dumps(spec, indent=2))
    return f"{mod}:{cls}", weights


def _photos(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, (w, h) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([np.sin(9 * xx + i), np.cos(7 * yy - i), xx * yy], -1) * 0.4 + 0.5
        img = np.clip(base + rng.normal(0, 0.04, base.shape), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"photo{i}.png")
    return folder


# ------------------------------------------------------------------------------------------ the spec
def test_old_model_json_loads_and_the_new_fields_round_trip(tmp_path):
    old = {"kind": "image", "inputs": [{"name": "image", "shape": ["N", 3, "H", "W"]}],
           "outputs": [{"name": "output", "shape": ["N", 3, "H", "W"]}]}  # fmt: skip
    spec = GeneratorSpec.from_dict(old)
    assert spec.mask_channel is False and spec.image_channels == 3 and spec.classes is None
    mask = _mask_spec()
    assert mask.image_channels == 3 and mask.input_shape((8, 8)) == [1, 4, 8, 8]
    mask.save(tmp_path / "model.json")
    assert GeneratorSpec.load(tmp_path / "model.json") == mask
    assert _label_spec().classes == 10


def test_specs_that_contradict_themselves_are_refused_in_one_line():
    with pytest.raises(EdgeDistillError, match="mask_channel is for image generators"):
        GeneratorSpec("noise", [TensorSpec("z", ["N", 8, 1, 1])], [], mask_channel=True)
    with pytest.raises(EdgeDistillError, match="a noise\\+label spec has two inputs"):
        GeneratorSpec("noise+label", [TensorSpec("z", ["N", 8, 1, 1])], [])


def test_a_label_spec_makes_z_and_one_hot_labels_alike_in_torch_and_numpy():
    spec = _label_spec()
    z, label = spec.example_inputs(batch=6, seed=3)
    assert z.shape == (6, 16, 1, 1) and label.shape == (6, 10) and label.dtype == torch.float32
    assert torch.equal(label.sum(1), torch.ones(6)) and set(label.unique().tolist()) == {0.0, 1.0}
    arrays = spec.example_arrays(batch=6, seed=3)
    assert list(arrays) == ["z", "label"] and arrays["label"].dtype == np.float32
    np.testing.assert_array_equal(arrays["label"].sum(1), np.ones(6))


# ------------------------------------------------------------------------------------------ masks
def test_masks_are_seeded_binary_and_cover_part_of_the_image():
    from edgedistill.data.masks import random_masks

    a, b = random_masks(8, (48, 40), seed=5), random_masks(8, (48, 40), seed=5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (8, 1, 48, 40) and a.dtype == np.float32 and set(np.unique(a)) == {0.0, 1.0}
    assert not np.array_equal(a, random_masks(8, (48, 40), seed=6))
    np.testing.assert_array_equal(random_masks(3, (48, 40), seed=5), a[:3])  # sample i is sample i
    cover = a.mean(axis=(1, 2, 3))
    assert (cover > 0.02).all() and (cover < 0.8).all(), cover
    assert len({m.tobytes() for m in a}) == 8


def test_image_inputs_fill_the_holes_and_append_the_mask():
    from edgedistill.data.masks import image_inputs, random_masks

    pixels = np.random.default_rng(0).random((4, 3, 16, 16), dtype=np.float32)
    plain = GeneratorSpec.from_dict({**INPAINT_SPEC, "mask_channel": False,
                                     "inputs": [{"name": "image", "shape": ["N", 3, "H", "W"]}]})  # fmt: skip
    np.testing.assert_array_equal(image_inputs(plain, pixels), pixels * 2 - 1)  # the range, nothing more
    spec = _mask_spec()
    x = image_inputs(spec, pixels, seed=2)
    masks = random_masks(4, (16, 16), seed=2)
    assert x.shape == (4, 4, 16, 16) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 3:], masks)
    hole = np.broadcast_to(masks > 0, (4, 3, 16, 16))
    assert (x[:, :3][hole] == spec.mask_fill).all()
    np.testing.assert_array_equal(x[:, :3][~hole], (pixels * 2 - 1)[~hole])
    given = np.zeros((4, 1, 16, 16), np.float32)
    given[:, :, :8] = 1
    y = image_inputs(spec, pixels, masks=given)
    assert (y[:, :3, :8] == 0).all() and (y[:, 3, :8] == 1).all() and (y[:, 3, 8:] == 0).all()
    with pytest.raises(EdgeDistillError, match="mask is 16x8 but the image 16x16"):
        image_inputs(spec, pixels, masks=given[:, :, :8])


# --------------------------------------------------------------------------------- data for every step
def test_noise_source_draws_one_hot_labels_for_a_label_generator():
    from edgedistill.data.sources import NoiseSource

    source = NoiseSource(_label_spec(), seed=1)
    a, b = source.batch(3, 8), source.batch(3, 8)
    assert a.labels is not None and a.labels.shape == (8, 10)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.labels.sum(1), torch.ones(8))
    assert len(a.args) == 2 and len(NoiseSource(GeneratorSpec.from_dict(
        {"kind": "noise", "inputs": [{"name": "z", "shape": ["N", 16, 1, 1]}], "outputs": []}), 1).batch(0, 2).args) == 1  # fmt: skip
    held = source.heldout()
    assert held.labels is not None and held.labels.argmax(1)[:12].tolist() == [*range(10), 0, 1]


def test_image_folder_source_masks_inputs_and_keeps_the_unmasked_image_as_truth(tmp_path):
    from edgedistill.data.sources import ImageFolderSource

    photos = _photos(tmp_path / "photos", [(64, 48), (48, 48), (56, 40)])
    source = ImageFolderSource(photos, _mask_spec(), seed=0, patch=32)
    batch = source.batch(0, 4)
    assert (
        batch.inputs.shape == (4, 4, 32, 32) and batch.real is not None and batch.real.shape == (4, 3, 32, 32)
    )
    mask = batch.inputs[:, 3:]
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    known = (mask == 0).expand(-1, 3, -1, -1)
    assert torch.equal(batch.inputs[:, :3][known], batch.real[known])  # known pixels are the truth's
    assert torch.equal(source.batch(0, 4).inputs, batch.inputs)


def test_calibration_of_a_label_generator_draws_z_and_uniform_labels():
    """Once refused with 'calibration handles single-input generators, not 2 inputs'."""
    from edgedistill.data.calibration import build_calibration

    calib = build_calibration(_label_spec(), "noise", 40, seed=2)
    assert set(calib.arrays) == {"z", "label"}
    assert calib.arrays["z"].shape == (40, 16, 1, 1) and calib.arrays["label"].shape == (40, 10)
    counts = np.bincount(calib.arrays["label"].argmax(1), minlength=10)
    assert counts.min() == 4 and counts.max() == 4  # every class, equally often
    again = build_calibration(_label_spec(), None, 40, seed=2)  # no source: noise as well
    np.testing.assert_array_equal(again.arrays["label"], calib.arrays["label"])
    sample = next(calib.samples(1))
    assert set(sample) == {"z", "label"}


def test_calibration_folder_of_an_inpainter_adds_masks_to_the_crops(tmp_path):
    from edgedistill.data.calibration import build_calibration

    photos = _photos(tmp_path / "photos", [(96, 80), (80, 80)])
    spec = _mask_spec()
    calib = build_calibration(spec, photos, 12, input_size=(32, 32), seed=1, cache=tmp_path / "cache")
    x = calib.arrays["image"]
    assert x.shape == (12, 4, 32, 32)
    assert set(np.unique(x[:, 3])) == {0.0, 1.0} and (x[:, 3].mean(axis=(1, 2)) > 0).all()
    assert (x[:, :3][np.broadcast_to(x[:, 3:] > 0, (12, 3, 32, 32))] == spec.mask_fill).all()
    cached = build_calibration(spec, photos, 12, input_size=(32, 32), seed=1, cache=tmp_path / "cache")
    np.testing.assert_array_equal(cached.arrays["image"], x)


def test_heldout_inputs_of_both_kinds(tmp_path):
    from edgedistill.data.heldout import heldout_arrays, heldout_inputs

    photos = _photos(tmp_path / "photos", [(64, 48), (48, 48), (56, 40)])
    x = heldout_inputs("inpaint", _mask_spec(), (32, 32), 4, photos)
    assert x.shape[1:] == (4, 32, 32) and set(np.unique(x[:, 3])) == {0.0, 1.0}
    arrays = heldout_arrays("label", _label_spec(), None, 12)
    assert arrays["z"].shape == (12, 16, 1, 1)
    assert arrays["label"].argmax(1).tolist() == [*range(10), 0, 1]  # every class shown


# ----------------------------------------------------------------------------------------- loading
def test_module_class_teacher_takes_its_spec_from_the_json_beside_its_weights(tmp_path, monkeypatch):
    from edgedistill.models.loading import load_generator

    monkeypatch.syspath_prepend(str(tmp_path))
    target, weights = _user_teacher(tmp_path, "label")
    loaded = load_generator(target, weights=weights)
    assert loaded.spec.kind == "noise+label" and loaded.spec.classes == 10
    target, weights = _user_teacher(tmp_path, "inpaint")
    spec = load_generator(target, weights=weights).spec
    assert spec.mask_channel and spec.image_channels == 3


def test_module_class_whose_spec_cannot_be_guessed_says_where_to_put_one(tmp_path, monkeypatch):
    """Once a bare TypeError (forward() missing 'label') out of the spec guess."""
    from edgedistill.models.loading import load_generator

    monkeypatch.syspath_prepend(str(tmp_path))
    target, weights = _user_teacher(tmp_path, "label", with_spec=False)
    with pytest.raises(EdgeDistillError, match=r"label\.json or model\.json beside"):
        load_generator(target, weights=weights)


def test_pruning_that_breaks_a_label_generator_says_how_to_write_it(tmp_path, monkeypatch):
    """torch-pruning loses the channel count through a .reshape into a torch.cat: the student once
    failed later with a bare RuntimeError (weight of size [12, 32, 4, 4] ... got 20 channels)."""
    from edgedistill.distiller.student import make_student

    (tmp_path / "reshapemod_kinds.py").write_text(
        LABEL_MODULE.replace(".unsqueeze(-1).unsqueeze(-1)", ".reshape(label.shape[0], -1, 1, 1)")
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from reshapemod_kinds import CondGen

    spec = _label_spec()
    with pytest.raises(EdgeDistillError, match="unsqueeze"):
        make_student(CondGen().eval(), spec, 0.5, example_inputs=spec.example_inputs())
    student, _ = make_student(CondGen().eval(), spec, 1.0, example_inputs=spec.example_inputs())
    assert student(*spec.example_inputs(batch=2)).shape == (2, 3, 32, 32)


def test_compress_fingerprints_the_spec_beside_a_module_class_teacher(tmp_path):
    """An edited spec JSON must re-run distillation: it changes what the teacher eats."""
    from edgedistill.pipeline.stages import teacher_files

    (tmp_path / "inpaint.pth").write_bytes(b"w")
    (tmp_path / "inpaint.json").write_text(json.dumps(INPAINT_SPEC))
    assert tmp_path / "inpaint.json" in teacher_files(
        "inpaintmod_kinds:Inpaint", str(tmp_path / "inpaint.pth")
    )


# ------------------------------------------------------------------------------------------ export
def test_onnx_export_of_a_label_generator_checks_both_inputs(tmp_path, monkeypatch):
    """Once refused with 'ONNX export handles single-input generators'."""
    import onnxruntime as ort

    from edgedistill.exporter.onnx_export import export_onnx
    from edgedistill.models.loading import load_generator

    monkeypatch.syspath_prepend(str(tmp_path))
    target, weights = _user_teacher(tmp_path, "label")
    loaded = load_generator(target, weights=weights)
    report = export_onnx(loaded.module, loaded.spec, tmp_path / "g.onnx")
    assert report.max_abs_err < 1e-4 and set(report.input_shapes) == {"z", "label"}
    sess = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    feeds = loaded.spec.example_arrays(batch=3, seed=9)
    out = sess.run(None, feeds)[0]
    with torch.no_grad():
        ref = loaded.module(*(torch.from_numpy(feeds[n]) for n in ("z", "label"))).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)


# ------------------------------------------------------------------------------------- distill + run
def test_a_label_generator_distills_and_runs_per_label(tmp_path, monkeypatch):
    import edgedistill
    from edgedistill.ship.run import run

    monkeypatch.syspath_prepend(str(tmp_path))
    target, weights = _user_teacher(tmp_path, "label")
    out = edgedistill.distill(teacher=target, weights=str(weights), out=str(tmp_path / "run"), steps=2,
                              batch=4, cache=8, width=0.5, threads=1, sample_every=1,
                              eval_samples=120)  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_inputs"] == 120 and np.isfinite(metrics["psnr_vs_teacher"])
    assert (out / "student.pt2").exists() and list((out / "samples").glob("*.png"))
    grids = {}
    for label in (0, 3, 3):
        r = run(out, tmp_path / f"l{label}.png", seed=1, count=2, label=label)
        assert any("label 3" in n or "label 0" in n for n in r.notes), r.notes
        grids.setdefault(label, []).append(np.asarray(Image.open(r.output)))
    np.testing.assert_array_equal(grids[3][0], grids[3][1])
    assert not np.array_equal(grids[0][0], grids[3][0])
    with pytest.raises(EdgeDistillError, match=r"label 12 is not in 0\.\.9"):
        run(out, tmp_path / "bad.png", label=12)
    with pytest.raises(EdgeDistillError, match="--mask is for inpainting generators"):
        run(out, tmp_path / "bad.png", mask=tmp_path / "l0.png")


def test_an_inpainter_distills_and_runs_on_a_photo_with_a_mask(tmp_path, monkeypatch):
    import edgedistill
    from edgedistill.ship.run import run

    monkeypatch.syspath_prepend(str(tmp_path))
    target, weights = _user_teacher(tmp_path, "inpaint")
    photos = _photos(tmp_path / "photos", [(64, 48), (48, 48), (56, 40)])
    out = edgedistill.distill(teacher=target, weights=str(weights), out=str(tmp_path / "run"), steps=2,
                              batch=4, patch=32, data=str(photos), width=0.5, threads=1)  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert "psnr_vs_target" in metrics  # the unmasked image is the ground truth
    picture = photos / "photo0.png"
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    r = run(out, tmp_path / "o.png", input=picture, mask=tmp_path / "mask.png")
    y = np.asarray(Image.open(r.output)).astype(np.float32)
    x = np.asarray(Image.open(picture)).astype(np.float32)
    assert y.shape == x.shape
    assert np.abs(y[:10] - x[:10]).max() <= 1 and np.abs(y[10:30, 20:40] - x[10:30, 20:40]).mean() > 1
    r = run(out, tmp_path / "s.png", input=picture, seed=4, compare=True)  # a seeded mask
    assert any("mask" in n for n in r.notes), r.notes
    with pytest.raises(EdgeDistillError, match="--label is for label-conditioned generators"):
        run(out, tmp_path / "n.png", input=picture, label=1)


# --------------------------------------------------------------------------------- the whole pipeline
def _cli(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgedistill", *args], capture_output=True, text=True,
                              timeout=900, env=env, cwd=tmp_path)  # fmt: skip

    return run


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["inpaint", "label"])
def test_both_kinds_go_through_compress_run_and_bundle(kind, tmp_path):
    """distill (few steps) -> INT8 export for ONNX Runtime and OpenVINO -> profile -> the printed
    next steps (run, bundle) -> run each artifact as a user would."""
    target, weights = _user_teacher(tmp_path, kind)
    cli = _cli(tmp_path)
    args = ["compress", target, "--weights", str(weights), "-t", "x86-onnxruntime", "-t", "x86-openvino",
            "--steps", "4", "--cache", "0", "--calib-size", "16", "--min-psnr", "0", "--profile-seconds", "0.3",
            "--out", "c", "--threads", "1"]  # fmt: skip
    if kind == "inpaint":
        photos = _photos(tmp_path / "photos", [(200, 150), (160, 160), (180, 120)])
        args += ["--data", str(photos), "--size", "32", "32"]
    r = cli(*args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert not report["failed"] and len(report["artifacts"]) == 2
    for manifest in report["artifacts"].values():
        assert manifest["precision"] == "int8"
        spec = GeneratorSpec.from_dict(manifest["spec"])
        assert spec.mask_channel if kind == "inpaint" else spec.classes == 10
    hints = [line[len("next: ") :] for line in r.stdout.splitlines() if line.startswith("next: ")]
    assert any(" bundle " in h for h in hints), r.stdout[-2000:]
    assert any(" run " in h for h in hints) == (kind == "inpaint"), hints
    for hint in hints:
        done = cli(*shlex.split(hint)[1:])
        assert done.returncode == 0, (hint, done.stderr)
    if kind == "inpaint":
        holes = np.zeros((150, 200), np.uint8)
        holes[40:90, 60:140] = 255
        Image.fromarray(holes).save(tmp_path / "holes.png")
    for art in (tmp_path / "c" / "exports").iterdir():
        if kind == "label":
            done = cli(
                "run", str(art), "--seed", "1", "--count", "4", "--label", "3", "--output", f"{art.name}.png"
            )
        else:
            done = cli("run", str(art), "--input", str(photos / "photo0.png"), "--size", "32", "32",
                       "--mask", "holes.png", "--output", f"{art.name}.png")  # fmt: skip
        assert done.returncode == 0, (art, done.stderr)
        assert Image.open(tmp_path / f"{art.name}.png").size[0] >= 32
    if kind == "inpaint":  # the bundled runner takes the input array itself: RGB + mask, as `run` builds it
        from edgedistill.data.masks import image_inputs

        app = tmp_path / "app"
        with zipfile.ZipFile(tmp_path / "c" / "app.zip") as z:
            z.extractall(app)
        runner = next(app.rglob("run_model.py"))
        pixels = (
            np.asarray(Image.open(photos / "photo1.png"), np.float32).transpose(2, 0, 1)[None, :, :32, :32]
            / 255
        )
        np.save(tmp_path / "x.npy", image_inputs(GeneratorSpec.from_dict(INPAINT_SPEC), pixels, seed=3))
        done = subprocess.run([sys.executable, str(runner), "--input", str(tmp_path / "x.npy"), "--output",
                               str(tmp_path / "bundled.png")], capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert Image.open(tmp_path / "bundled.png").size == (32, 32)
