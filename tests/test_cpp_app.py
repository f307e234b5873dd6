"""The C++ app `edgedistill bundle` writes (cpp/main.cpp + cpp/CMakeLists.txt), as a user builds it.

Real exports of the tiny ResNet (tests/conftest.py), bundled by the CLI, built with cmake and g++
against the runtime's own C++ API, run on a held-out photo. Its output tensor must be the bundled
Python runner's (run_model.py, same runtime, same settings) on the same picture, and its p50 near
`edgedistill profile`'s on the same artifact and thread count.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 32  # tests/conftest.py exports every image artifact at this size
THREADS = 2
RUNS = 50
# (target, precision, max |C++ - Python| on the float output). Both sides run the same library with
# the same compiled settings on the same float32 input: fp32 agrees to rounding (measured: 0.0).
# int8 (measured: 0.0 as well) gets 1e-3, room for a reduction split another way, still 8x below one
# step of the 8-bit picture (2/255 over the output range [-1, 1]).
CASES = {
    "openvino-fp32": ("x86-openvino", "fp32", 1e-4),
    "openvino-int8": ("x86-openvino", "int8", 1e-3),
    "onnxruntime-fp32": ("x86-onnxruntime", "fp32", 1e-4),
}
ORT_HEADERS = os.environ.get("ONNXRUNTIME_INCLUDE_DIR", "")

NO_COMPILER = "building the bundled C++ app needs cmake and g++: apt-get install cmake g++ (.ci/run does)"
ROOT = Path(__file__).resolve().parent.parent
# Where this file's where-it-ran ledger goes (cpp_app.json; scripts/where_it_ran.py puts it in README).
# Unset in CI: a test run records nothing unless asked.
LEDGER_DIR = os.environ.get("EDGEDISTILL_WHERE_IT_RAN", "")


@pytest.fixture(scope="module")
def ledger():
    """The C++ app's cells of README's "Where it has run" table, written at the end where asked."""
    wir = sys.modules.get("where_it_ran")
    if wir is None:  # imported by path (scripts/ is no package); registered first, as dataclasses need
        spec = importlib.util.spec_from_file_location("where_it_ran", ROOT / "scripts" / "where_it_ran.py")
        wir = sys.modules["where_it_ran"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(wir)
    led = wir.new_ledger(
        "cpp_app",
        "tests/test_cpp_app.py: the bundle's C++ app built with cmake and g++ against the runtime's C++ API, "
        "its output vs the bundled run_model.py on a held-out photo",
        "EDGEDISTILL_WHERE_IT_RAN=benchmarks/results/where_it_ran pytest tests/test_cpp_app.py "
        "(ONNXRUNTIME_INCLUDE_DIR as .ci/run sets it)",
    )
    for tool in ("g++", "cmake"):
        if shutil.which(tool):
            said = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
            led.versions[tool] = said.split()[-1] if said else "?"
    yield led
    if LEDGER_DIR and led.results:
        led.write(Path(LEDGER_DIR) / "cpp_app.json")


@contextlib.contextmanager
def recorded(ledger, target: str, precision: str):
    """Record this case's outcome in the ledger: pass (with the dict's detail), skip or fail, as it ends."""
    said = {"detail": ""}
    try:
        yield said
    except pytest.skip.Exception as exc:
        ledger.add(target, precision, "cpp_app", "skip", str(exc.msg))
        raise
    except BaseException as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        ledger.add(target, precision, "cpp_app", "fail", first[:200])
        raise
    ledger.add(target, precision, "cpp_app", "pass", said["detail"])


def bundle(artifact: Path, tmp: Path) -> Path:
    """`edgedistill bundle ARTIFACT --out app.zip`, unpacked: the folder a user builds in."""
    app = tmp / "app.zip"
    r = subprocess.run(
        [sys.executable, "-m", "edgedistill", "bundle", str(artifact), "--out", str(app)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    zipfile.ZipFile(app).extractall(tmp / "app")
    return tmp / "app"


def cmake_args(backend: str) -> list[str]:
    """Where the runtime's C++ side is: the pip wheels this Python runs (README.md, "C++ app")."""
    if backend == "openvino":
        import openvino

        return [f"-DOpenVINO_DIR={Path(openvino.__file__).parent / 'cmake'}"]
    import onnxruntime

    if not Path(ORT_HEADERS, "onnxruntime_cxx_api.h").is_file():
        pytest.skip(
            "ONNX Runtime C++ headers not found: set ONNXRUNTIME_INCLUDE_DIR to a folder holding "
            "onnxruntime_cxx_api.h (the onnxruntime wheel has none; .ci/run unpacks them from npm @qvac/onnx)"
        )
    lib = sorted(glob.glob(str(Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime.so*")))[0]
    return [f"-DONNXRUNTIME_INCLUDE_DIR={ORT_HEADERS}", f"-DONNXRUNTIME_LIBRARY={lib}"]


def build(app: Path, where: list[str]) -> Path:
    args = ["cmake", "-S", str(app / "cpp"), "-B", str(app / "build"), *where]
    for cmd in (args, ["cmake", "--build", str(app / "build")]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return app / "build" / "edgedistill_app"


def heldout_ppm(path: Path, size: tuple[int, int] = (SIZE, SIZE)) -> Path:
    """A photo no export calibrated on (the bundled held-out 'chelsea'), center square, resized."""
    from edgedistill.data.bundled import bundled_photos

    img = bundled_photos("heldout")[0]
    h, w = img.shape[:2]
    s = min(h, w)
    square = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    pil = Image.fromarray((square * 255 + 0.5).astype(np.uint8))
    pil.resize(size[::-1], Image.Resampling.BICUBIC).save(path)  # PIL writes binary PPM (P6)
    return path


def python_runner(app: Path, picture: Path) -> tuple[np.ndarray, np.ndarray]:
    """The bundled run_model.py on `picture`: (output tensor, the 8-bit picture its CLI writes)."""
    spec = importlib.util.spec_from_file_location("bundled_run_model", app / "run_model.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    model = runner.Model(app, threads=THREADS)
    lo, hi = model.input_range
    x = (runner.read_image(picture, 3)[None] * (hi - lo) + lo).astype(np.float32)  # as its main() maps
    runner.main(["--input", str(picture), "--output", str(app / "python.png"), "--folder", str(app),
                 "--threads", str(THREADS)])  # fmt: skip
    return model(x), np.asarray(Image.open(app / "python.png")).astype(np.int16)


def profile_p50(artifact: Path, tmp: Path) -> float:
    """`edgedistill profile ARTIFACT --threads 2`'s p50 in ms."""
    out = tmp / "profile.json"
    r = subprocess.run(
        [sys.executable, "-m", "edgedistill", "profile", str(artifact), "--threads", str(THREADS),
         "--json", str(out), "-n", str(RUNS), "--min-time", "1", "--layers", "0", "--no-roofline"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return float(json.loads(out.read_text())["models"][0]["stats"]["p50"])


# ---------------------------------------------------------------------------------------------- tests
def test_bundle_writes_a_filled_cpp_app(exported, tmp_path):
    """No compiler needed: the program and its CMakeLists carry the manifest's contract, every field filled."""
    app = bundle(exported("resnet", "x86-openvino", "fp32"), tmp_path)
    main = (app / "cpp" / "main.cpp").read_text()
    cmake = (app / "cpp" / "CMakeLists.txt").read_text()
    for text in (main, cmake):
        assert not re.search(r"@[a-z0-9_]+@", text)
    for line in ('kModelFile = "model.xml"', 'kInputName = "image"', f"kInputShape{{1, 3, {SIZE}, {SIZE}}}",
                 "kInLo = -1.0f, kInHi = 1.0f", 'kPrecisionHint = "f32"', "ov::inference_num_threads"):  # fmt: skip
        assert line in main, line
    assert "find_package(OpenVINO REQUIRED" in cmake
    readme = (app / "README.md").read_text()
    assert "## C++ app" in readme and "-DOpenVINO_DIR=" in readme and "cpp/main.cpp" in readme


@pytest.mark.parametrize("case", list(CASES))
def test_cpp_app_matches_the_python_runner(case, exported, tmp_path, ledger):
    target, precision, _ = CASES[case]
    with recorded(ledger, target, precision) as said:
        said["detail"] = check_cpp_app(case, exported, tmp_path)


def check_cpp_app(case, exported, tmp_path) -> str:
    """Build, run and compare one case; its one-line result for the ledger."""
    target, precision, tolerance = CASES[case]
    if not (shutil.which("cmake") and shutil.which("g++")):
        pytest.skip(NO_COMPILER)
    where = cmake_args(target.split("-")[1])  # before exporting: a case that cannot build skips at once
    artifact = exported("resnet", target, precision)
    app = bundle(artifact, tmp_path)
    exe = build(app, where)
    picture = heldout_ppm(app / "in.ppm")

    r = subprocess.run(
        [str(exe), "--input", "in.ppm", "--output", "out.ppm", "--raw-output", "out.f32",
         "--runs", str(RUNS), "--threads", str(THREADS)],
        cwd=app, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    p50 = re.search(rf"p50 ([0-9.]+) ms over {RUNS} runs \({THREADS} threads\)", r.stdout)
    assert p50, r.stdout

    y_python, pixels_python = python_runner(app, picture)
    y_cpp = np.fromfile(app / "out.f32", dtype=np.float32)
    assert y_cpp.size == y_python.size == 3 * SIZE * SIZE
    diff = float(np.abs(y_cpp.reshape(y_python.shape) - y_python).max())
    assert np.std(y_python) > 0.05  # a picture, not a flat gray any mapping would reproduce
    assert diff <= tolerance, f"{case}: C++ vs run_model.py max |diff| {diff:.3g} > {tolerance}"
    pixels_cpp = np.asarray(Image.open(app / "out.ppm")).astype(np.int16)
    assert pixels_cpp.shape == pixels_python.shape == (SIZE, SIZE, 3)
    assert np.abs(pixels_cpp - pixels_python).max() <= 1

    # Same artifact, same threads: the C++ p50 near the profiler's. The machine is shared and noisy,
    # so only a loose bound; the ratio is printed for the record (pytest -s).
    ratio = float(p50.group(1)) / profile_p50(artifact, tmp_path)
    print(f"{case}: max |diff| {diff:.3g}; C++ p50 {p50.group(1)} ms = {ratio:.2f}x `edgedistill profile`'s")
    assert 0.2 <= ratio <= 5.0, ratio

    if case == "openvino-fp32":  # a picture of the wrong size: one line and exit code 2, nothing written
        heldout_ppm(app / "big.ppm", (SIZE + 8, SIZE + 4))
        r = subprocess.run([str(exe), "--input", "big.ppm", "--output", "big_out.ppm"], cwd=app,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "resize it first" in r.stderr and not (app / "big_out.ppm").exists()
    headers = (
        f", headers {Path(ORT_HEADERS).name.removesuffix('-include')}"
        if target.endswith("onnxruntime")
        else ""
    )
    return (
        f"max abs vs run_model.py {diff:.2g} ≤ {tolerance:g}; p50 {float(p50.group(1)):.3g} ms = {ratio:.2f}x "
        f"`edgedistill profile`'s ({THREADS} threads{headers})"
    )
