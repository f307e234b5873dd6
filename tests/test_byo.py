"""Bring your own generator: models written elsewhere go through distill -> export -> profile -> run
-> bundle. Here: a user module pruned to a `.pt2` student (a torch.export program)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from edgedistill.core.spec import GeneratorSpec, TensorSpec
from edgedistill.distiller.pruned import save_pt2
from edgedistill.distiller.student import make_student


class UserNet(torch.nn.Module):
    """Not one of ours: a residual conv net with a BatchNorm and a Dropout (eval/train differ)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1),
            torch.nn.BatchNorm2d(16),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.5),
            torch.nn.Conv2d(16, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x + self.body(x))


@pytest.fixture(scope="module")
def pt2_run(tmp_path_factory):
    """A pruned student of UserNet saved as the distill step saves one: student.pt2 + model.json."""
    torch.manual_seed(0)
    io = ["N", 3, "H", "W"]
    spec = GeneratorSpec(
        "image", [TensorSpec("image", io)], [TensorSpec("output", io)], default_size=(32, 32)
    )
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    student, student_spec = make_student(UserNet().eval(), spec, 0.5, example_inputs=(x,))
    run = tmp_path_factory.mktemp("byo") / "run"
    save_pt2(student, (x,), run / "student.pt2")
    student_spec.save(run / "model.json")
    with torch.no_grad():
        expected = student.eval()(x).numpy()
    return run, x.numpy(), expected


def user_class(folder, module: str, source: str, name: str):
    """Write `source` as `folder/module.py` and import class `name` from it, as a user's PYTHONPATH would."""
    import importlib

    (folder / f"{module}.py").write_text(source)
    sys.path.insert(0, str(folder))
    try:
        return getattr(importlib.import_module(module), name)
    finally:
        sys.path.remove(str(folder))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgedistill", *args], capture_output=True, text=True, timeout=600
    )


def test_pt2_student_profiles_from_its_run_dir(pt2_run, tmp_path):
    """`profile RUN_DIR` once crashed: ExportedProgram.module().eval() raises NotImplementedError."""
    run, _, _ = pt2_run
    out = tmp_path / "p.json"
    r = cli("profile", str(run), "--threads", "1", "-n", "3", "--min-time", "0.1", "--size", "32", "32",
            "--json", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and out.exists()


def test_pt2_student_runs_in_eval_mode(pt2_run, tmp_path):
    """`run` gives the eval-mode output (Dropout off, BatchNorm running stats), every time."""
    from edgedistill.runtime.sources import resolve

    run, x, expected = pt2_run
    runner = resolve(str(run)).load(threads=1)
    a = runner.run({runner.input_names[0]: x})[runner.output_names[0]]
    b = runner.run({runner.input_names[0]: x})[runner.output_names[0]]
    np.testing.assert_allclose(a, expected, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    picture = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)).save(picture)
    r = cli("run", str(run), "--input", str(picture), "--output", str(tmp_path / "out.png"))
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "out.png").size == (48, 40)


def test_pt2_student_exports_and_bundles(pt2_run, tmp_path):
    run, _, _ = pt2_run
    art = tmp_path / "art"
    r = cli("export", str(run), "--target", "x86-onnxruntime", "--precision", "fp32", "--size", "32", "32",
            "--out", str(art), "--threads", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cli("bundle", str(art), "--out", str(tmp_path / "app.zip"))
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(tmp_path / "app.zip") as z:
        names = set(z.namelist())
    assert {"manifest.json", "run_model.py"} <= {n.split("/")[-1] for n in names}


USER_MODULE = """
import torch


class MyGen(torch.nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(width, 3, 3, padding=1)
        )

    def forward(self, x):
        return torch.tanh(x + self.body(x))
"""


def test_export_hint_for_a_module_class_teacher_runs_as_printed(tmp_path):
    """The printed `next: edgedistill profile ...` keeps the --arg/--weights the teacher needs."""
    import os
    import shlex

    pkg = tmp_path / "usermods"
    pkg.mkdir()
    MyGen = user_class(pkg, "mygen_byo", USER_MODULE, "MyGen")
    weights = tmp_path / "w.pth"
    torch.save(MyGen(width=12).state_dict(), weights)
    env = {**os.environ, "PYTHONPATH": str(pkg) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgedistill", *args], capture_output=True, text=True,
                              timeout=600, env=env, cwd=tmp_path)  # fmt: skip

    r = run("export", "mygen_byo:MyGen", "--arg", "width=12", "--weights", str(weights), "--target",
            "x86-onnxruntime", "--precision", "fp32", "--size", "32", "32", "--out", "art", "--threads", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    hint = next(line for line in r.stdout.splitlines() if line.startswith("next: "))[len("next: ") :]
    words = shlex.split(hint)
    assert words[:2] == ["edgedistill", "profile"] and "--weights" in words and "width=12" in words
    r = run(*words[1:], "-n", "2", "--min-time", "0.1", "--layers", "0", "--no-roofline", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "PSNR" in r.stdout or "psnr" in r.stdout.lower()


def _photos(folder, sizes):
    """A few large natural-looking photos (gradients + texture), as users bring them."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, (w, h) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([np.sin(9 * xx + i), np.cos(7 * yy - i), xx * yy], -1) * 0.4 + 0.5
        img = np.clip(base + rng.normal(0, 0.04, base.shape), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"photo{i}.jpg", quality=92)
    return folder


def test_a_few_large_photos_give_as_many_calibration_samples_as_asked(tmp_path):
    """Seven photos once failed with 'cannot hold out 8 of 7 calibration samples'."""
    from edgedistill.core.spec import spec_for_family
    from edgedistill.data.calibration import build_calibration

    folder = _photos(tmp_path / "photos", [(740, 480), (400, 600), (512, 512)])
    spec = spec_for_family("resnet", {"ngf": 8, "n_blocks": 2})
    a = build_calibration(spec, folder, 72, input_size=(64, 64), seed=3)
    b = build_calibration(spec, folder, 72, input_size=(64, 64), seed=3)
    x = next(iter(a.arrays.values()))
    assert x.shape == (72, 3, 64, 64)
    np.testing.assert_array_equal(x, next(iter(b.arrays.values())))  # deterministic by seed
    assert len({arr.tobytes() for arr in x}) == 72  # distinct crops, not 3 images repeated
    calib, held = a.split(8)
    assert len(calib) == 64 and len(held) == 8


def test_photos_smaller_than_the_input_fail_in_one_line_naming_what_was_found(tmp_path):
    folder = _photos(tmp_path / "small", [(40, 30), (48, 48)])
    r = cli("export", "photo-restore", "--target", "x86-onnxruntime", "--calib-data", str(folder), "--size",
            "64", "64", "--out", str(tmp_path / "art"))  # fmt: skip
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "48x48" in lines[0] and "64x64" in lines[0] and str(folder) in lines[0]
    assert not (tmp_path / "art").exists()


@pytest.mark.slow
def test_compress_of_a_module_class_teacher_finishes_passing_targets_and_hints_run(tmp_path):
    """A module:Class teacher through compress: --arg/--weights reach every stage; a target whose export
    fails does not cost the other, the report is written, the exit code says it; the printed
    next steps run as printed."""
    import os
    import shlex

    pkg = tmp_path / "usermods"
    pkg.mkdir()
    MyGen = user_class(pkg, "mygen_byo2", USER_MODULE, "MyGen")
    torch.manual_seed(0)
    torch.save(MyGen(width=12).state_dict(), tmp_path / "w.pth")
    photos = _photos(tmp_path / "photos", [(160, 120), (128, 128), (200, 150)])
    base = (
        __import__("edgedistill.core.resources", fromlist=["x"]).data_dir("targets") / "x86-onnxruntime.toml"
    ).read_text()
    # a target that fails on every host: ONNX Runtime has no bf16 on CPU (the export refuses it)
    bf16 = tmp_path / "ort-bf16.toml"
    bf16.write_text(
        base.replace('precision = "int8"', 'precision = "bf16"').replace(
            'precisions = ["int8", "fp16", "fp32"]', 'precisions = ["bf16"]'
        )
    )
    env = {**os.environ, "PYTHONPATH": str(pkg) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgedistill", *args], capture_output=True, text=True,
                              timeout=900, env=env, cwd=tmp_path)  # fmt: skip

    r = run("compress", "mygen_byo2:MyGen", "--arg", "width=12", "--weights", "w.pth", "-t", "x86-onnxruntime",
            "-t", str(bf16), "--data", str(photos), "--size", "32", "32", "--steps", "6", "--cache", "0",
            "--calib-size", "16", "--profile-seconds", "0.3", "--out", "c", "--threads", "1")  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "ort-bf16 bf16" in r.stderr and "1 target(s) failed" in r.stderr
    report = __import__("json").loads((tmp_path / "c" / "report.json").read_text())
    assert list(report["failed"]) == ["ort-bf16 bf16"] and "bf16" in report["failed"]["ort-bf16 bf16"]
    assert any(row["model"] == "onnxruntime int8" for row in report["rows"])
    hints = [line[len("next: ") :] for line in r.stdout.splitlines() if line.startswith("next: ")]
    assert len(hints) == 2, r.stdout
    for hint in hints:
        words = shlex.split(hint)
        assert words[0] == "edgedistill"
        done = run(*words[1:])
        assert done.returncode == 0, (hint, done.stderr)
    assert (tmp_path / "c" / "app.zip").exists() and (tmp_path / "c" / "run_output.png").exists()


SR_MODULE = '''
import torch


class SuperRes2x(torch.nn.Module):
    """An ESPCN-style 2x super-resolver: PReLU features, PixelShuffle upsampling."""

    def __init__(self, width=16):
        super().__init__()
        self.head = torch.nn.Sequential(torch.nn.Conv2d(3, width, 5, padding=2), torch.nn.PReLU(width))
        self.body = torch.nn.Sequential(torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.PReLU(width))
        self.up = torch.nn.Sequential(torch.nn.Conv2d(width, 3 * 4, 3, padding=1), torch.nn.PixelShuffle(2))

    def forward(self, x):
        return torch.tanh(self.up(self.body(self.head(x))))
'''


COLOR_MODULE = '''
import torch


class Colourise(torch.nn.Module):
    """1 -> 3 channels: gray in, colour out."""

    def __init__(self, width=16):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
            torch.nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, x):
        return torch.tanh(self.net(x) + x)
'''


def _byo_teacher(kind: str, root):
    """(teacher reference, extra CLI args, needs photos, input size) for one model a user brings."""
    from edgedistill.models import create

    torch.manual_seed(0)
    if kind == "superres-x2":
        SuperRes2x = user_class(root, "srmod_byo", SR_MODULE, "SuperRes2x")
        torch.save(SuperRes2x(width=16).state_dict(), root / "sr.pth")
        return "srmod_byo:SuperRes2x", ["--arg", "width=16", "--weights", str(root / "sr.pth")], True, 32
    if kind == "colourise":
        Colourise = user_class(root, "colmod_byo", COLOR_MODULE, "Colourise")
        torch.save(Colourise(width=16).state_dict(), root / "col.pth")
        return "colmod_byo:Colourise", ["--arg", "width=16", "--weights", str(root / "col.pth")], True, 32
    if kind == "unet-dropout":
        net = create("unet", ngf=8, num_downs=6, norm="batch", dropout=True)
        torch.save(net.state_dict(), root / "latest_net_G.pth")
        return (
            f"unet:{root / 'latest_net_G.pth'}",
            ["--arg", "ngf=8", "--arg", "num_downs=6", "--arg", "dropout=true"],
            True,
            64,
        )
    if kind == "cyclegan-instancenorm":
        net = create("resnet", ngf=8, n_blocks=3, norm="instance")
        state = net.state_dict()
        for key in [k for k in state if k.endswith(".weight") and state[k].ndim == 1]:  # old IN running stats
            base = key[: -len(".weight")]
            state[f"{base}.running_mean"] = torch.zeros_like(state[key])
            state[f"{base}.running_var"] = torch.ones_like(state[key])
        torch.save(state, root / "latest_net_G_A.pth")
        return f"resnet:{root / 'latest_net_G_A.pth'}", [], True, 32
    if kind == "dcgan":
        net = create("dcgan", nz=16, ngf=8, nc=3, image_size=32)
        torch.save(net.state_dict(), root / "netG.pth")
        return f"dcgan:{root / 'netG.pth'}", [], False, None
    raise AssertionError(kind)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["superres-x2", "colourise", "unet-dropout", "cyclegan-instancenorm", "dcgan"]
)
def test_models_users_bring_go_through_compress_run_and_bundle(kind, tmp_path):
    """distill (few steps) -> export for ONNX Runtime and OpenVINO -> profile -> run -> bundle."""
    import json
    import os
    import shlex

    teacher, extra, needs_photos, size = _byo_teacher(kind, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgedistill", *args], capture_output=True, text=True,
                              timeout=900, env=env, cwd=tmp_path)  # fmt: skip

    args = ["compress", teacher, *extra, "-t", "x86-onnxruntime", "-t", "x86-openvino", "--steps", "4",
            "--cache", "0", "--calib-size", "16", "--min-psnr", "0", "--profile-seconds", "0.3",
            "--out", "c", "--threads", "1"]  # fmt: skip
    if needs_photos:
        args += ["--data", str(_photos(tmp_path / "photos", [(200, 150), (160, 160), (180, 120)]))]
    if size:
        args += ["--size", str(size), str(size)]
    r = run(*args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert not report["failed"] and len(report["artifacts"]) == 2
    for manifest in report["artifacts"].values():
        assert manifest["precision"] == "int8"
        if kind == "superres-x2":  # the output is twice the input, in every artifact
            assert manifest["spec"]["outputs"][0]["shape"][2:] == ["H*2", "W*2"]
        if kind == "colourise":
            assert (
                manifest["spec"]["inputs"][0]["shape"][1] == 1
                and manifest["spec"]["outputs"][0]["shape"][1] == 3
            )
    hints = [line[len("next: ") :] for line in r.stdout.splitlines() if line.startswith("next: ")]
    assert any(" bundle " in h for h in hints), r.stdout[-2000:]
    for hint in hints:
        done = run(*shlex.split(hint)[1:])
        assert done.returncode == 0, (hint, done.stderr)
    if kind == "superres-x2":
        from PIL import Image

        shown = Image.open(tmp_path / "c" / "run_output.png")  # input | output side by side
        assert shown.size[0] > 3 * size and shown.size[1] >= 2 * size
    if kind == "cyclegan-instancenorm":  # bound for INT8: the measured choice is said out loud
        assert "keeps the teacher's InstanceNorm" in r.stdout
        assert "keeps the teacher's InstanceNorm" in (tmp_path / "c" / "report.md").read_text()
        student = json.loads((tmp_path / "c" / "student" / "model.json").read_text())
        assert student["kwargs"]["norm"] == "instance"


class ResidualOffset(torch.nn.Module):
    """Its INT8 error sits in activations, not in a weighted layer: a residual sum carrying one
    far-off channel (as InstanceNorm + residual adds do in CycleGAN generators) makes the sum's
    per-tensor uint8 range coarse for every other channel."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 3, 3, padding=1)
        off = torch.zeros(1, 8, 1, 1)
        off[0, 0] = 60.0
        self.register_buffer("off", off)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (torch.relu(self.c1(x)) + self.off) + (-self.off)
        return torch.tanh(self.c2(h) + x)


def test_gate_keeps_the_activations_where_int8_error_sits(tmp_path):
    """Both convs are kept by ONNX Runtime's first/last-layer policy, so no weighted layer is left to
    keep: the gate once stopped at 36.7 dB. Ranking every quantized node finds the two Adds."""
    import edgedistill

    io = ["N", 3, "H", "W"]
    spec = GeneratorSpec(
        "image", [TensorSpec("image", io)], [TensorSpec("output", io)], default_size=(32, 32)
    )
    save_pt2(ResidualOffset().eval(), (torch.rand(1, 3, 32, 32) * 2 - 1,), tmp_path / "run" / "student.pt2")
    spec.save(tmp_path / "run" / "model.json")
    photos = _photos(tmp_path / "photos", [(64, 64)] * 4)
    r = edgedistill.export(str(tmp_path / "run"), "x86-onnxruntime", tmp_path / "art", size=(32, 32),
                           calib_data=photos, calib_size=32, holdout=4, min_psnr=45, threads=1,
                           log=lambda _m: None)  # fmt: skip
    q, gate = r.manifest["quality"], r.manifest["gate"]
    assert q["before_fallback"]["psnr_vs_fp32"] < 45 <= q["psnr_vs_fp32"]
    kept_ops = {s["op_type"] for s in gate["sensitivity"] if s["name"] in gate["kept_by_gate"]}
    assert gate["kept_by_gate"] and kept_ops == {"Add"}, gate


def test_quantizing_a_super_resolver_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    """ORT's symbolic shape inference gives up on this graph and saves sym_shape_infer_temp.onnx and a
    <uuid>.data into the current directory before raising; the user's folder once collected both."""
    import os

    from edgedistill.exporter.onnx_export import export_onnx
    from edgedistill.onnxtools.qdq import preprocess

    resize_residual = SR_MODULE.replace(
        "return torch.tanh(self.up(self.body(self.head(x))))",
        "base = torch.nn.functional.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)\n"
        "        return (base + self.up(self.body(self.head(x)))).clamp(-1, 1)",
    )
    assert resize_residual != SR_MODULE
    SuperRes2x = user_class(tmp_path, "srmod_litter", resize_residual, "SuperRes2x")
    io_in, io_out = ["N", 3, "H", "W"], ["N", 3, "H*2", "W*2"]
    spec = GeneratorSpec(
        "image", [TensorSpec("image", io_in)], [TensorSpec("output", io_out)], default_size=(32, 32)
    )
    work = tmp_path / "work"
    work.mkdir()
    export_onnx(SuperRes2x(width=8).eval(), spec, work / "m.onnx", size=(32, 32))
    monkeypatch.chdir(work)
    preprocess(work / "m.onnx", work / "p.onnx")
    assert sorted(os.listdir(work)) == ["m.onnx", "p.onnx"]
