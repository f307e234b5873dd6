"""`edgedistill run` and `edgedistill bundle` as a user runs them: real ONNX Runtime / OpenVINO, real
subprocesses, and the bundled runner in a Python that can import neither edgedistill nor torch."""

import importlib.util
import json
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgedistill.core.targets import get_target
from edgedistill.models.loading import load_generator

TEMPLATE = Path(__file__).parents[1] / "edgedistill" / "ship" / "templates" / "run_model.py"
BLOCK = "torch", "edgedistill", "PIL"  # what a bundled runner may not need


def edgedistill(*args, cwd=None, block_torch=False):
    """The CLI in a subprocess; with block_torch, in a Python where `import torch` fails."""
    if block_torch:
        code = (
            "import sys; sys.modules['torch'] = None; sys.argv = ['edgedistill', *sys.argv[1:]]\n"
            "from edgedistill.cli import main; main()"
        )
        cmd = [sys.executable, "-c", code, *args]
    else:
        cmd = [sys.executable, "-m", "edgedistill", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300)


def standalone(script, *args, cwd, block=BLOCK):
    """`python run_model.py ARGS` where importing any of `block` fails and PYTHONPATH is empty."""
    code = (
        "import runpy, sys\n"
        f"for name in {list(block)!r}: sys.modules[name] = None\n"
        f"sys.argv = [{str(script)!r}, *sys.argv[1:]]\n"
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(
        [sys.executable, "-I", "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def pixels(path):
    return np.asarray(Image.open(path)).astype(np.int16)


def one_line(r, message):
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------------------- artifacts
# Every artifact here is a real `edgedistill.export` of a tiny generator (tests/conftest.py), so `run`
# and `bundle` read manifest.json as export writes it.
@pytest.fixture(scope="module")
def resnet(tiny_generators):
    """The tiny image generator the artifacts were exported from: (torch module, spec)."""
    loaded = load_generator(str(tiny_generators["resnet"]))
    return loaded.module.eval(), loaded.spec


@pytest.fixture(scope="module")
def dcgan(tiny_generators):
    loaded = load_generator(str(tiny_generators["dcgan"]))
    return loaded.module.eval(), loaded.spec


@pytest.fixture(scope="module")
def ort_image(exported):
    return exported("resnet", "x86-onnxruntime", "fp32")


@pytest.fixture(scope="module")
def ort_noise(exported):
    return exported("dcgan", "x86-onnxruntime", "fp32")


@pytest.fixture(scope="module")
def ort_static(exported, tmp_path_factory):
    """An ONNX Runtime artifact with a fixed 32x32 input: the shipped x86-onnxruntime profile with
    dynamic_shape turned off, given to export as a .toml target."""
    shipped = get_target("x86-onnxruntime").path
    text = shipped.read_text()
    assert "dynamic_shape = true" in text
    profile = tmp_path_factory.mktemp("targets") / "x86-onnxruntime-static.toml"
    profile.write_text(text.replace("dynamic_shape = true", "dynamic_shape = false"))
    return exported("resnet", profile, "fp32")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 40x44 natural-looking RGB image (smooth gradients + noise) as PNG."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:44] / 40.0
    base = np.stack([np.sin(3 * xx), np.cos(2 * yy), xx * yy], -1) * 0.4 + 0.5
    img = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
    path = tmp_path_factory.mktemp("img") / "in.png"
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def torch_pixels(net, x):
    """What the model makes of x (NCHW, model range) as uint8 pixels, by torch."""
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()
    return (np.clip((y + 1) / 2, 0, 1) * 255 + 0.5).astype(np.uint8).astype(np.int16)


def tiles(grid_pixels, size, n, pad=2):
    cols = int(np.ceil(np.sqrt(n)))
    return [
        grid_pixels[pad + (i // cols) * (size + pad) :, pad + (i % cols) * (size + pad) :][:size, :size]
        for i in range(n)
    ]


# --------------------------------------------------------------------------------------------- run
def test_run_ort_image_artifact_without_torch_matches_torch(tmp_path, ort_image, resnet, photo):
    out = tmp_path / "out.png"
    r = edgedistill("run", str(ort_image), "--input", str(photo), "--output", str(out), block_torch=True)
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout and "ms" in r.stdout and "center-cropped to 40x44" not in r.stdout
    got = pixels(out)
    assert got.shape == (40, 44, 3)  # dynamic artifact: the photo's own size (a multiple of 4)
    x = (np.asarray(Image.open(photo), dtype=np.float32) / 255).transpose(2, 0, 1)[None] * 2 - 1
    want = torch_pixels(resnet[0], x)[0].transpose(1, 2, 0)
    assert want.std() > 10  # a picture, not a flat gray that any mapping would reproduce
    assert np.abs(got - want).max() <= 1
    assert np.abs(got - want).mean() < 0.05


def test_run_static_artifact_resizes_and_compare_shows_both(tmp_path, resnet, ort_static, photo):
    net, art = resnet[0], ort_static
    out = tmp_path / "cmp.png"
    r = edgedistill("run", str(art / "model.onnx"), "-i", str(photo), "-o", str(out), "--compare")
    assert r.returncode == 0, r.stderr
    assert "resized/center-cropped to 32x32" in r.stdout and "static" in r.stdout
    got = pixels(out)
    assert got.shape == (32 + 4, 2 * 32 + 6, 3)
    left, right = got[2:34, 2:34], got[2:34, 36:68]
    x = (left.astype(np.float32) / 255).transpose(2, 0, 1)[None] * 2 - 1  # the input it was shown
    assert np.abs(right - torch_pixels(net, x)[0].transpose(1, 2, 0)).max() <= 2

    # The bundled runner resizes the same way (with Pillow), and says what to do without it.
    assert edgedistill("bundle", str(art), "-o", str(tmp_path / "s.zip")).returncode == 0
    zipfile.ZipFile(tmp_path / "s.zip").extractall(tmp_path / "s")
    script = tmp_path / "s" / "run_model.py"
    r = standalone(
        script, "--input", str(photo), "--output", "o.png", cwd=tmp_path / "s", block=("torch", "edgedistill")
    )
    assert r.returncode == 0, r.stderr
    assert np.abs(pixels(tmp_path / "s" / "o.png") - right).max() <= 1
    r = standalone(script, "--input", str(photo), "--output", "p.png", cwd=tmp_path / "s")
    assert r.returncode != 0 and "the model takes 32x32: resize it, or pip install pillow" in r.stderr
    assert not (tmp_path / "s" / "p.png").exists()


def test_run_torch_teacher_writes_seeded_grid(tmp_path):
    out = tmp_path / "grid.png"
    r = edgedistill("run", "digits-dcgan", "--seed", "0", "--count", "4", "--output", str(out))
    assert r.returncode == 0, r.stderr
    got = pixels(out)
    assert got.shape == (2 * 34 + 2, 2 * 34 + 2, 3)
    teacher = load_generator("digits-dcgan").module
    z = np.random.default_rng(0).standard_normal((4, 64, 1, 1), dtype=np.float32)
    want = torch_pixels(teacher, z)[:, 0]
    for tile, ref in zip(tiles(got, 32, 4), want, strict=True):
        assert np.abs(tile[..., 0] - ref).max() <= 1
    assert len({t.tobytes() for t in tiles(got, 32, 4)}) == 4  # four different samples


def test_run_noise_artifact_matches_torch_for_the_same_seed(tmp_path, ort_noise, dcgan):
    out = tmp_path / "noise.png"
    r = edgedistill("run", str(ort_noise), "--seed", "3", "--count", "3", "-o", str(out), "--threads", "1")
    assert r.returncode == 0, r.stderr
    z = np.random.default_rng(3).standard_normal((3, 16, 1, 1), dtype=np.float32)
    want = torch_pixels(dcgan[0], z)[:, 0]
    for tile, ref in zip(tiles(pixels(out), 32, 3), want, strict=True):
        assert np.abs(tile[..., 0] - ref).max() <= 1
    single = tmp_path / "one.png"
    assert edgedistill("run", str(ort_noise), "--seed", "3", "-o", str(single)).returncode == 0
    assert Image.open(single).mode == "L" and np.abs(pixels(single) - want[0]).max() <= 1


def test_run_bad_inputs_give_one_line(tmp_path, ort_image, ort_noise, photo):
    out = tmp_path / "x.png"
    cases = [
        (
            ("run", str(ort_image), "--input", str(tmp_path / "nope.png"), "-o", str(out)),
            "input image not found",
        ),
        (("run", str(ort_image), "-o", str(out)), "give --input"),
        (("run", str(ort_noise), "--input", str(photo), "-o", str(out)), "generates from noise"),
        (
            ("run", str(ort_image), "-i", str(photo), "--count", "4", "-o", str(out)),
            "are for noise generators",
        ),
        (("run", str(ort_image), "--input", str(photo), "-o", str(tmp_path / "x.txt")), "end it in .png"),
        (("run", str(tmp_path / "missing.onnx"), "-o", str(out)), "artifact not found"),
    ]
    for args, message in cases:
        one_line(edgedistill(*args), message)
    assert not out.exists()


# ------------------------------------------------------------------------------------------ bundle
def test_bundle_runner_runs_standalone_and_agrees_with_run(tmp_path, ort_image, photo):
    app = tmp_path / "app.zip"
    r = edgedistill("bundle", str(ort_image), "--out", str(app))
    assert r.returncode == 0, r.stderr
    names = set(zipfile.ZipFile(app).namelist())
    assert names == {"model.onnx", "manifest.json", "run_model.py", "requirements.txt", "README.md",
                     "cpp/main.cpp", "cpp/CMakeLists.txt"}  # fmt: skip
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(app).extractall(unpacked)
    reqs = (unpacked / "requirements.txt").read_text()
    assert [line.split(">")[0] for line in reqs.splitlines() if not line.startswith("#")] == [
        "numpy",
        "onnxruntime",
    ]
    readme = (unpacked / "README.md").read_text()
    for word in ("`image`", "`output`", "[-1, 1]", "pixel / 127.5 - 1", "Ort::Session", "SetIntraOpNumThreads",
                 "allow_spinning", "shape{1, 3, 32, 32}", "[N, 3, H, W]", "multiples of 4"):  # fmt: skip
        assert word in readme, word
    assert "$" not in readme.replace("$ ", "")  # every template field filled

    # The runner: no edgedistill, no torch, not even Pillow; its result is `edgedistill run`'s.
    r = standalone(unpacked / "run_model.py", "--input", str(photo), "--output", "out.png", cwd=unpacked)
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref.png"
    assert edgedistill("run", str(ort_image), "-i", str(photo), "-o", str(ref)).returncode == 0
    assert np.abs(pixels(unpacked / "out.png") - pixels(ref)).max() <= 1


def test_bundle_noise_runner_with_pillow_makes_the_same_grid(tmp_path, ort_noise):
    app = tmp_path / "noise.zip"
    assert edgedistill("bundle", str(ort_noise), "-o", str(app)).returncode == 0
    zipfile.ZipFile(app).extractall(tmp_path / "u")
    r = standalone(tmp_path / "u" / "run_model.py", "--seed", "5", "--count", "4", "--output", "g.png",
                   cwd=tmp_path / "u", block=("torch", "edgedistill"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref.png"
    assert edgedistill("run", str(ort_noise), "--seed", "5", "--count", "4", "-o", str(ref)).returncode == 0
    assert np.abs(pixels(tmp_path / "u" / "g.png") - pixels(ref)).max() <= 1


def test_bundle_refuses_what_is_not_an_artifact(tmp_path, ort_image):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "model.onnx").write_bytes(b"not really")
    out = tmp_path / "app.zip"
    one_line(edgedistill("bundle", str(plain), "--out", str(out)), "no manifest.json")
    one_line(edgedistill("bundle", str(tmp_path / "none"), "--out", str(out)), "not an artifact directory")
    one_line(edgedistill("bundle", str(ort_image), "--out", str(tmp_path / "app.tar")), "ending in .zip")
    assert not out.exists() and not list(tmp_path.glob(".app.zip.*"))


def test_bundle_is_atomic_and_reproducible(tmp_path, ort_image):
    from edgedistill.ship.bundle import bundle

    a, b = bundle(ort_image, tmp_path / "a.zip"), bundle(ort_image, tmp_path / "b.zip")
    assert a.path.read_bytes() == b.path.read_bytes()
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((ort_image / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps(manifest))  # lists model.onnx, which is absent
    from edgedistill.core.errors import EdgeDistillError

    a.path.write_bytes(b"old")
    with pytest.raises(EdgeDistillError, match=r"listed in manifest\.json but missing"):
        bundle(broken, a.path)
    assert a.path.read_bytes() == b"old"


# --------------------------------------------------------------------------------------- openvino
@pytest.fixture(scope="module")
def ov_image(exported):
    return exported("resnet", "x86-openvino", "fp32")


def test_openvino_artifact_run_and_bundle_agree_with_onnxruntime(tmp_path, ov_image, ort_static, photo):
    # x86-openvino exports a fixed input size: both runs resize the photo to 32x32 the same way
    ov_out, ort_out = tmp_path / "ov.png", tmp_path / "ort.png"
    r = edgedistill("run", str(ov_image), "-i", str(photo), "-o", str(ov_out), block_torch=True)
    assert r.returncode == 0, r.stderr
    assert "resized/center-cropped to 32x32" in r.stdout and pixels(ov_out).shape == (32, 32, 3)
    assert edgedistill("run", str(ort_static), "-i", str(photo), "-o", str(ort_out)).returncode == 0
    assert np.abs(pixels(ov_out) - pixels(ort_out)).max() <= 1  # fp32 really ran fp32, not bf16
    app = tmp_path / "ov.zip"
    assert edgedistill("bundle", str(ov_image), "-o", str(app)).returncode == 0
    zipfile.ZipFile(app).extractall(tmp_path / "u")
    assert {"model.xml", "model.bin"} <= set(zipfile.ZipFile(app).namelist())
    readme = (tmp_path / "u" / "README.md").read_text()
    assert "ov::Core" in readme and "inference_precision(ov::element::f32)" in readme
    assert (
        "openvino>=" in (tmp_path / "u" / "requirements.txt").read_text()
        or "openvino\n" in (tmp_path / "u" / "requirements.txt").read_text()
    )
    r = standalone(  # with Pillow: the static model needs the photo resized
        tmp_path / "u" / "run_model.py", "--input", str(photo), "--output", "o.png", cwd=tmp_path / "u",
        block=("torch", "edgedistill"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert np.abs(pixels(tmp_path / "u" / "o.png") - pixels(ov_out)).max() <= 1


# ------------------------------------------------------------------------------ the runner's own PNG
def _load_template():
    spec = importlib.util.spec_from_file_location("run_model_template", TEMPLATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png_with_filters(img):
    """A PNG whose rows use all five filter types in turn (Pillow only writes some of them)."""
    h, w, c = img.shape
    raw = img.reshape(h, w * c).astype(np.int32)
    rows = []
    for y in range(h):
        cur = raw[y]
        up = raw[y - 1] if y else np.zeros_like(cur)
        left = np.concatenate([np.zeros(c, np.int32), cur[:-c]])
        up_left = np.concatenate([np.zeros(c, np.int32), up[:-c]])
        kind = y % 5
        if kind == 0:
            pred = np.zeros_like(cur)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = up
        elif kind == 3:
            pred = (left + up) // 2
        else:
            p = left + up - up_left
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
        rows.append(bytes([kind]) + ((cur - pred) & 0xFF).astype(np.uint8).tobytes())
    color = {1: 0, 3: 2, 4: 6}[c]

    def chunk(tag, data):
        return len(data).to_bytes(4, "big") + tag + data + zlib.crc32(tag + data).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, color, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )  # fmt: skip


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_runner_png_reader_and_writer_agree_with_pillow(tmp_path, channels):
    runner = _load_template()
    rng = np.random.default_rng(channels)
    img = rng.integers(0, 256, (13, 11, channels), dtype=np.uint8)
    path = tmp_path / "f.png"
    path.write_bytes(_png_with_filters(img))
    ours = runner._png_read(path)
    with Image.open(path) as im:
        assert np.array_equal(
            ours, np.asarray(im.convert("L" if channels == 1 else "RGB")).reshape(ours.shape)
        )
        gray_by_pillow = np.asarray(im.convert("L"), dtype=np.float32) / 255
    if channels == 3:  # the runner's own RGB -> gray equals Pillow's "L"
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(sys.modules, "PIL", None)
            gray = runner.read_image(path, 1)[0]
        assert np.array_equal(gray, gray_by_pillow)
    out = tmp_path / "w.png"
    runner.save_image(ours.transpose(2, 0, 1) / 255.0, out)
    assert np.array_equal(np.asarray(Image.open(out)).reshape(ours.shape), ours)
