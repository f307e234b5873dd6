"""Bad inputs and hard stops through the real CLI: one line on stderr, exit 2, nothing already written lost.

Each test (or parametrized case) is one row of docs/reliability.md; the quoted lines there come from
these runs. Every case runs `python -m edgedistill` in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgedistill.models import create

CLI = [sys.executable, "-m", "edgedistill"]


# ------------------------------------------------------------------------------------------ helpers
def _env(tmp: Path) -> dict[str, str]:
    """A private calibration cache and temp dir: nothing leaks between cases, leftovers are visible."""
    scratch = tmp / "scratch"
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "EDGEDISTILL_CACHE": str(tmp / "cache"), "TMPDIR": str(scratch)}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}


def cli(tmp: Path, *args: object, timeout: float = 300, **popen: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp,
        env=_env(tmp),
        **popen,
    )


def one_line_error(r: subprocess.CompletedProcess[str], *names: str, code: int = 2) -> str:
    """The single stderr line of a failed run; it must name each of `names` and no traceback may show."""
    assert r.returncode == code, f"exit {r.returncode}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr[-3000:]
    for name in names:
        assert name in lines[0], (name, lines[0])
    if os.environ.get("RELIABILITY_LINES"):  # docs/reliability.md quotes these lines
        with open(os.environ["RELIABILITY_LINES"], "a") as log:
            log.write(
                json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", ""), "line": lines[0]}) + "\n"
            )
    return lines[0]


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under `path` (or `path` itself) with its bytes: 'nothing written is lost' compares these."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def temp_leftovers(folder: Path, name: str) -> list[str]:
    """Hidden siblings `.NAME.*` that the atomic writers use as temp files or dirs."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


def scratch_leftovers(tmp: Path) -> list[str]:
    """edgedistill's scratch dirs left in the case's TMPDIR (ONNX Runtime keeps a `.ses` file there)."""
    return sorted(p.name for p in (tmp / "scratch").iterdir() if p.name.startswith("edgedistill"))


def png_header(width: int, height: int) -> bytes:
    """A valid PNG that *claims* width x height: Pillow would allocate it all (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _limit_file_size(limit: int):
    def apply() -> None:  # the disk is "full" past `limit` bytes: writes fail with EFBIG (SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _read_only_dir(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o555)
    if os.access(path, os.W_OK):  # root writes anyway: the case cannot be staged here
        path.chmod(0o755)
        pytest.skip("running as root: a chmod 555 directory stays writable")
    return path


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A tiny resnet checkpoint (+ safetensors, + one of another width) and a folder of small photos."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    net = create("resnet", ngf=8, n_blocks=2, norm="batch")
    torch.save(net.state_dict(), d / "g.pth")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, d / "g.safetensors")
    torch.save(create("resnet", ngf=16, n_blocks=2, norm="batch").state_dict(), d / "wide.pth")
    photos = d / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    for i in range(6):
        base = np.stack([np.sin(3 * xx + i), np.cos(2 * yy + i / 3), xx * yy], -1) * 0.4 + 0.5
        img = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(photos / f"{i:02d}.png")
    return d


@pytest.fixture(scope="module")
def artifact(files, tmp_path_factory) -> Path:
    """An fp32 ONNX Runtime artifact of the tiny resnet (built in-process: it is the setting, not the case)."""
    from edgedistill.exporter.api import export

    out = tmp_path_factory.mktemp("art") / "art"
    export(f"resnet:{files / 'g.pth'}", "x86-onnxruntime", out, precision="fp32", size=(32, 32),
           calib_data=files / "photos", holdout=2, threads=1, log=lambda _m: None)  # fmt: skip
    return out


def _copy_artifact(artifact: Path, dest: Path) -> Path:
    shutil.copytree(artifact, dest)
    return dest


# --------------------------------------------------------------------------------- inspect: checkpoints
def _damage(good: Path, how: str, dest: Path) -> Path:
    data = good.read_bytes()
    body = {
        "truncated": data[: len(data) // 2],
        "corrupt": np.random.default_rng(7).bytes(4096),
        "empty": b"",
    }[how]
    dest.write_bytes(body)
    return dest


@pytest.mark.parametrize("how", ["truncated", "corrupt", "empty"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_damaged_checkpoint(tmp_path, files, suffix, how):
    bad = _damage(files / f"g{suffix}", how, tmp_path / f"{how}{suffix}")
    line = one_line_error(cli(tmp_path, "inspect", f"resnet:{bad}", "--size", 32, 32), bad.name)
    assert "re-save" in line or "re-download" in line
    assert "weights_only" not in line  # never advise turning off the safe loader
    if how == "empty":
        assert "(0 bytes)" in line  # said plainly, not as torch's EOFError


def test_wrong_family(tmp_path, files):
    line = one_line_error(
        cli(tmp_path, "inspect", f"unet:{files / 'g.pth'}", "--size", 32, 32), "g.pth", "unet"
    )
    assert "Check the family" in line


def test_shape_mismatch(tmp_path, files):
    r = cli(tmp_path, "inspect", f"resnet:{files / 'wide.pth'}", "--arg", "ngf=8", "--size", 32, 32)
    line = one_line_error(r, "wide.pth", "[16, 3, 7, 7]", "[8, 3, 7, 7]")
    assert "--arg" in line


class _RunsCode:
    """Pickles to a call of os.system: loading the file with plain pickle would run the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pth"
    torch.save({"weight": _RunsCode(f"touch {marker}")}, evil)
    for model in (str(evil), f"resnet:{evil}"):
        line = one_line_error(cli(tmp_path, "inspect", model), "evil.pth", "refusing to load")
        assert "system" in line and "Re-save the weights" in line
    assert not marker.exists()


def test_directory_for_checkpoint(tmp_path):
    (tmp_path / "weights").mkdir()
    line = one_line_error(cli(tmp_path, "inspect", "resnet:weights"), "weights")
    assert "is a directory" in line and "give the file inside it" in line


# ------------------------------------------------------------------------------ distill: data folders
def _bad_image(folder: Path, defect: str) -> Path:
    """One defective file named like an image, beside good ones."""
    path = folder / f"zz_{defect}.png"
    if defect == "zero-byte":
        path.write_bytes(b"")
    elif defect == "not-an-image":
        path.write_text("name,width\nphoto,40\n")
    elif defect == "huge":
        path.write_bytes(png_header(100_000, 100_000))
    elif defect == "grayscale":
        Image.fromarray(np.full((40, 40), 128, np.uint8)).save(path)
    elif defect == "unreadable":
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
        path.chmod(0)
        if os.access(path, os.R_OK):
            path.chmod(0o644)
            pytest.skip("running as root: a chmod 000 file stays readable")
    return path


DATA_DEFECTS = [
    "zero-byte",
    "not-an-image",
    "huge",
    "grayscale",
    "unreadable",
]


@pytest.mark.parametrize("defect", DATA_DEFECTS)
def test_distill_data_folder_defect(tmp_path, files, defect):
    data = tmp_path / "data"
    shutil.copytree(files / "photos", data)
    bad = _bad_image(data, defect)
    run = tmp_path / "run"
    r = cli(tmp_path, "distill", f"resnet:{files / 'g.pth'}", "--data", data, "--out", run, "--steps", 1,
            "--batch", 2, "--patch", 32, "--threads", 1)  # fmt: skip
    line = one_line_error(r, bad.name)
    assert "re-save" in line or "remove" in line or "color" in line
    assert not run.exists()


def test_distill_existing_run_without_resume(tmp_path, files):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"an earlier run's checkpoint")
    before = snapshot(run)
    r = cli(tmp_path, "distill", f"resnet:{files / 'g.pth'}", "--data", files / "photos", "--out", run,
            "--steps", 1, "--batch", 2, "--patch", 32, "--threads", 1)  # fmt: skip
    one_line_error(r, "run", "--resume")
    assert snapshot(run) == before


# ------------------------------------------------------------------------------------ export: inputs
EXPORT = ("export", "--target", "x86-onnxruntime", "--size", 32, 32, "--threads", 1, "--holdout", 2)


def _export(tmp: Path, model: object, out: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return cli(tmp, EXPORT[0], model, *EXPORT[1:], "--out", out, *args)


def test_export_empty_calibration_folder_keeps_artifact(tmp_path, files, artifact):
    out = _copy_artifact(artifact, tmp_path / "art")
    before = snapshot(out)
    (tmp_path / "calib").mkdir()
    line = one_line_error(
        _export(tmp_path, f"resnet:{files / 'g.pth'}", out, "--calib-data", "calib"), "calib"
    )
    assert "holds no images" in line and "add some" in line
    assert snapshot(out) == before and temp_leftovers(tmp_path, "art") == []


NPZ_CASES = [
    "wrong-name",
    "wrong-shape",
]


@pytest.mark.parametrize("case", NPZ_CASES)
def test_export_calibration_npz_mismatch(tmp_path, files, case):
    arrays = {"wrong-name": {"x": np.zeros((8, 3, 32, 32), np.float32)},
              "wrong-shape": {"image": np.zeros((8, 1, 16, 16), np.float32)}}[case]  # fmt: skip
    np.savez(tmp_path / "calib.npz", **arrays)
    out = tmp_path / "out"
    line = one_line_error(
        _export(tmp_path, f"resnet:{files / 'g.pth'}", out, "--calib-data", "calib.npz"), "calib.npz"
    )
    assert "'image'" in line
    assert not out.exists() and temp_leftovers(tmp_path, "out") == []


CALIB_DEFECTS = [
    "grayscale",
    "huge",
]


@pytest.mark.parametrize("defect", CALIB_DEFECTS)
def test_export_calibration_folder_defect(tmp_path, files, defect):
    calib = tmp_path / "calib"
    calib.mkdir()
    bad = _bad_image(calib, defect)
    out = tmp_path / "out"
    line = one_line_error(
        _export(tmp_path, f"resnet:{files / 'g.pth'}", out, "--calib-data", calib), bad.name
    )
    assert "re-save" in line or "remove" in line or "color" in line
    assert not out.exists()


@pytest.mark.parametrize("verb", ["export", "profile", "compress"])
def test_target_toml_missing_key(tmp_path, files, artifact, verb):
    toml = tmp_path / "mydevice.toml"
    toml.write_text('backend = "onnxruntime"\ndevice = "CPU"\n')  # no `precision`
    out = tmp_path / "out"
    args = {
        "export": ("export", f"resnet:{files / 'g.pth'}", "--target", toml, "--out", out),
        "profile": ("profile", artifact, "--target", toml, "--json", out / "p.json"),
        "compress": ("compress", f"resnet:{files / 'g.pth'}", "--target", toml, "--out", out, "--steps", 1),
    }[verb]
    line = one_line_error(cli(tmp_path, *args), "mydevice.toml", "precision")
    assert "missing" in line and "add" in line
    assert not out.exists()


def _onnx_with_outside_data(artifact: Path, folder: Path) -> Path:
    """The artifact's model with its biggest weight moved to ../x.bin (outside the model's folder)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(artifact / "model.onnx"))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    raw = numpy_helper.to_array(init).tobytes()
    (folder / "x.bin").write_bytes(raw)
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../x.bin"), ("offset", "0"), ("length", str(len(raw)))):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    (folder / "m").mkdir()
    path = folder / "m" / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("verb", ["export", "profile", "run"])
def test_onnx_external_data_outside_its_folder(tmp_path, artifact, files, verb):
    model = _onnx_with_outside_data(artifact, tmp_path)
    out = tmp_path / "out"
    args = {
        "export": ("export", model, "--target", "x86-onnxruntime", "--precision", "fp32", "--out", out),
        "profile": ("profile", model, "-n", 1, "--min-time", 0, "--no-roofline", "--json", out),
        "run": ("run", model, "-i", files / "photos" / "00.png", "-o", out.with_suffix(".png")),
    }[verb]
    line = one_line_error(cli(tmp_path, *args), "model.onnx", "../x.bin")
    assert "refusing to read it" in line and "beside the model" in line
    assert not out.exists() and not out.with_suffix(".png").exists()


@pytest.mark.parametrize("verb", ["bundle", "run", "profile"])
def test_tampered_manifest(tmp_path, artifact, files, verb):
    art = _copy_artifact(artifact, tmp_path / "art")
    manifest = json.loads((art / "manifest.json").read_text())
    (art / "manifest.json").write_text(json.dumps({**manifest, "files": ["../secret"]}))
    (tmp_path / "secret").write_text("do not ship me")
    out = tmp_path / {"bundle": "out.zip", "run": "out.png", "profile": "out.json"}[verb]
    args = {
        "bundle": ("bundle", art, "-o", out),
        "run": ("run", art, "-i", files / "photos" / "00.png", "-o", out),
        "profile": ("profile", art, "-n", 1, "--min-time", 0, "--no-roofline", "--json", out),
    }[verb]
    line = one_line_error(cli(tmp_path, *args), "manifest.json", "../secret")
    assert "outside the artifact directory" in line and "re-run `edgedistill export`" in line
    assert not out.exists() and temp_leftovers(tmp_path, out.name) == []


# ---------------------------------------------------------------------------------- output location
def test_export_read_only_output_directory(tmp_path, files):
    parent = _read_only_dir(tmp_path / "ro")
    line = one_line_error(_export(tmp_path, f"resnet:{files / 'g.pth'}", parent / "art", "--precision", "fp32",
                                  "--calib-data", files / "photos"), "ro")  # fmt: skip
    assert "make it writable or write elsewhere" in line
    assert list(parent.iterdir()) == []


def test_bundle_read_only_output_directory(tmp_path, artifact):
    parent = _read_only_dir(tmp_path / "ro")
    line = one_line_error(cli(tmp_path, "bundle", artifact, "-o", parent / "app.zip"), "ro")
    assert "make it writable or write elsewhere" in line
    assert list(parent.iterdir()) == []


def test_export_full_disk_keeps_previous_artifact(tmp_path, files, artifact):
    out = _copy_artifact(artifact, tmp_path / "art")
    before = snapshot(out)
    r = cli(tmp_path, *EXPORT[:1], f"resnet:{files / 'g.pth'}", *EXPORT[1:], "--out", out, "--precision", "fp32",
            "--calib-data", files / "photos", preexec_fn=_limit_file_size(64 * 1024))  # fmt: skip
    line = one_line_error(r)
    assert "File too large" in line and "free" in line
    assert snapshot(out) == before and temp_leftovers(tmp_path, "art") == []
    assert scratch_leftovers(tmp_path) == []


def test_bundle_full_disk_keeps_previous_zip(tmp_path, artifact):
    from edgedistill.ship.bundle import bundle

    app = bundle(artifact, tmp_path / "app.zip").path
    before = app.read_bytes()
    r = cli(tmp_path, "bundle", artifact, "-o", app, preexec_fn=_limit_file_size(32 * 1024))
    line = one_line_error(r, "app.zip")
    assert "File too large" in line and "free" in line
    assert app.read_bytes() == before and temp_leftovers(tmp_path, "app.zip") == []


# ------------------------------------------------------------------------------------- profile: ssh
def test_ssh_host_starting_with_dash(tmp_path, artifact):
    marker = tmp_path / "MARKER"
    host = f"-oProxyCommand=touch {marker}"
    r = cli(tmp_path, "profile", artifact, "--host", host, "-n", 1, "--min-time", 0, "--no-roofline")
    line = one_line_error(r, "--host", "-oProxyCommand")
    assert (
        "is not user@host[:port]" in line and "IPv6 as [addr]:port" in line
    )  # brackets are text, not markup
    assert not marker.exists()


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client here")
def test_ssh_host_unreachable(tmp_path, artifact):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = tmp_path / "report.json"
    r = cli(tmp_path, "profile", artifact, "--host", f"127.0.0.1:{port}", "-n", 1, "--min-time", 0,
            "--no-roofline", "--json", report)  # fmt: skip
    line = one_line_error(r, f"127.0.0.1:{port}")
    assert "connection refused" in line and "sshd" in line
    assert not report.exists()


# ----------------------------------------------------------------------------------- run: --input
@pytest.mark.parametrize("defect", ["huge", "zero-byte", "not-an-image", "directory"])
def test_run_input_defect(tmp_path, artifact, defect):
    if defect == "directory":
        bad = tmp_path / "zz_directory.png"
        bad.mkdir()
    else:
        bad = _bad_image(tmp_path, defect)
    output = tmp_path / "out.png"
    output.write_bytes(b"an earlier picture")
    line = one_line_error(cli(tmp_path, "run", artifact, "-i", bad, "-o", output), bad.name)
    assert "image" in line
    assert output.read_bytes() == b"an earlier picture" and temp_leftovers(tmp_path, "out.png") == []


def test_bundle_not_an_artifact(tmp_path, files):
    out = tmp_path / "app.zip"
    line = one_line_error(cli(tmp_path, "bundle", files / "photos", "-o", out), "photos", "manifest.json")
    assert "edgedistill export" in line
    assert not out.exists()


# ---------------------------------------------------------------------------------------- compress
def test_compress_damaged_checkpoint_keeps_previous_output(tmp_path, files):
    bad = _damage(files / "g.pth", "truncated", tmp_path / "g.pth")
    out = tmp_path / "compressed"
    out.mkdir()
    (out / "report.md").write_text("an earlier report\n")
    before = snapshot(out)
    r = cli(tmp_path, "compress", f"resnet:{bad}", "--target", "x86-onnxruntime", "--out", out, "--steps", 1)
    line = one_line_error(r, "g.pth")
    assert "re-save" in line
    after = snapshot(out)
    assert {k: after[k] for k in before} == before
    assert not [p for p in out.iterdir() if p.is_dir()]  # no half-made stage directories


def test_compress_data_folder_with_a_non_image(tmp_path, files):
    data = tmp_path / "data"
    shutil.copytree(files / "photos", data)
    bad = _bad_image(data, "not-an-image")
    out = tmp_path / "compressed"
    r = cli(tmp_path, "compress", f"resnet:{files / 'g.pth'}", "--target", "x86-onnxruntime", "--out", out,
            "--data", data, "--steps", 1, "--cache", 0, "--threads", 1, "--size", 32, 32)  # fmt: skip
    one_line_error(r, bad.name)
    assert not out.exists() or not [p for p in out.iterdir() if p.is_dir()]


# ------------------------------------------------------------------------------------ hard stops
def _wait_for(check, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"the command ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


def _export_argv(files: Path, out: Path, precision: str) -> list[str]:
    model = f"resnet:{files / 'g.pth'}"
    rest = ["--out", out, "--precision", precision, "--calib-data", files / "photos"]
    return [*CLI, *map(str, (EXPORT[0], model, *EXPORT[1:], *rest))]


@pytest.mark.slow
def test_export_sigkill_leaves_no_partial_artifact(tmp_path, files):
    out, scratch = tmp_path / "art", tmp_path / "scratch"
    argv = _export_argv(files, out, "fp32")
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:  # the export's scratch dir holds a file once the ONNX step writes
        _wait_for(
            lambda: any(p.is_file() for p in scratch.glob("edgedistill-export-*/*")), proc, 120, "ONNX step"
        )
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and temp_leftovers(tmp_path, "art") == []
    r = subprocess.run(argv, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {f: (out / f).stat().st_size for f in manifest["sizes"]} == manifest["sizes"]


@pytest.mark.slow
def test_two_exports_into_one_directory(tmp_path, files):
    out = tmp_path / "art"
    pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    procs = {
        p: subprocess.Popen(_export_argv(files, out, p), cwd=tmp_path, env=_env(tmp_path), **pipes)
        for p in ("fp32", "fp16")
    }
    results = {p: (proc.communicate(timeout=300)[1], proc.returncode) for p, proc in procs.items()}
    ok = [p for p, (_err, rc) in results.items() if rc == 0]
    assert ok, results
    for err, rc in results.values():  # a loser fails with one line, no traceback
        if rc != 0:
            assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] in ok  # one whole artifact: its files are exactly those its manifest sized
    files_now = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert files_now == set(manifest["sizes"])
    assert {f: (out / f).stat().st_size for f in manifest["sizes"]} == manifest["sizes"]
    assert temp_leftovers(tmp_path, "art") == []


DISTILL = ["distill", "digits-dcgan", "--width", "0.25", "--batch", "4", "--steps", "60", "--ema", "0.9",
           "--threads", "1", "--checkpoint-every", "5", "--sample-every", "5"]  # fmt: skip


@pytest.mark.slow
def test_distill_sigkill_then_resume_matches_uninterrupted(tmp_path):
    from safetensors.torch import load_file

    straight = subprocess.Popen([*CLI, *DISTILL, "--out", "straight"], cwd=tmp_path, env=_env(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    killed = subprocess.Popen([*CLI, *DISTILL, "--out", "killed"], cwd=tmp_path, env=_env(tmp_path),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    run = tmp_path / "killed"
    try:  # samples of step 10 are written just after its checkpoint
        _wait_for(lambda: (run / "samples" / "step_000010.png").exists(), killed, 240, "step 10")
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.kill()
        killed.wait()
    assert killed.returncode == -signal.SIGKILL and not (run / "metrics.json").exists()
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert 10 <= ckpt["step"] < 60  # whole (atomic) and mid-run
    r = subprocess.run([*CLI, *DISTILL, "--out", "killed", "--resume"], cwd=tmp_path, env=_env(tmp_path),
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert straight.wait(timeout=300) == 0
    a, b = load_file(tmp_path / "straight" / "student.safetensors"), load_file(run / "student.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert json.loads((run / "metrics.json").read_text())["steps"] == 60
