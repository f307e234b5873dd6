"""TensorRT, checked end to end on the first machine that has an NVIDIA GPU and TensorRT.

    PYTHONPATH=. python3 scripts/tensorrt_check.py [--out DIR] [--json FILE] [--ledger FILE]

Everything it needs travels with the checkout (no download, no `pip install -e .`): it exports a
small ResNet generator built here for `jetson-orin-nano` at fp16 and INT8 (explicit-QDQ ONNX), runs
that ONNX under ONNX Runtime (what the quality gate scored), and where the GPU half can run builds
each engine with this machine's TensorRT (`edgedistill build-engine`'s code), runs it through the
TensorRT runner, compares its outputs with the ONNX under ONNX Runtime on the same held-out inputs,
profiles it, and runs the GPU-only tests (tests/test_backend_tensorrt.py).

First it says what this machine has: the GPU (nvidia-smi, torch.cuda), the TensorRT Python package,
libnvinfer, cuda-python, trtexec. Each piece the GPU half lacks is one line on stderr; what runs
without it still runs. OpenVINO and NNCF are never imported. The export slims every ONNX with
onnxslim, a pure-Python package: on a machine without it, `--pack-deps` (run where it is installed)
copies it into scratch/trt_deps/, which this script puts on sys.path when it needs it.

Writes its where-it-ran ledger (built here, run on GPU; `python scripts/where_it_ran.py` puts it in
README). Exit 0: all ran and matched; 1: something failed; 3: the GPU half could not run here.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a bare checkout, installed or not

TARGET = "jetson-orin-nano"
SIZE = 64
PRECISIONS = ("fp16", "int8")
DEPS = ROOT / "scratch" / "trt_deps"  # pure-Python packages carried to a machine without them
CARRIED = ("onnxslim",)
LIBNVINFER = ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so")
# Engine vs the same ONNX under ONNX Runtime (PSNR on [-1, 1] outputs mapped to [0, 1]). First-run
# bounds, not yet measured on a GPU: fp16 rounds every layer (10-bit mantissa); int8 kernels may round
# an activation to the neighbouring level where ORT's did not.
MIN_PSNR_DB = {"fp16": 40.0, "int8": 30.0}
# The export's quality gate (int8 vs fp32). This random-weight generator loses ~28 dB to int8, more
# than a trained one; a gate above that would keep most layers out of int8 and leave little int8 for
# TensorRT to prove. The check is engine vs the same ONNX, not int8's quality.
MIN_GATE_DB = 25.0


# ------------------------------------------------------------------------- what travels along
def use_carried_deps(deps: Path = DEPS) -> None:
    """Put `deps` on sys.path when a package it carries is not installed here."""
    if any(importlib.util.find_spec(n) is None for n in CARRIED) and deps.is_dir():
        sys.path.append(str(deps))


def pack_deps(dest: Path = DEPS) -> list[str]:
    """Copy the CARRIED packages (and their dist-info, for versions) from this environment to dest."""
    from importlib.metadata import distribution

    copied = []
    for name in CARRIED:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"{name} is not installed here: pip install {name}, then --pack-deps again")
        src = Path(next(iter(spec.submodule_search_locations)))
        shutil.rmtree(dest / name, ignore_errors=True)
        shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        dist = distribution(name)
        info = Path(dist._path)  # type: ignore[attr-defined]  # the .dist-info folder
        for old in dest.glob(f"{name}-*.dist-info"):
            shutil.rmtree(old)
        shutil.copytree(info, dest / info.name)
        copied.append(f"{name} {dist.version}")
    return copied


# -------------------------------------------------------------------------- what the machine has
def gpu_info() -> dict[str, Any]:
    """The GPU as nvidia-smi and torch see it (either may be absent)."""
    info: dict[str, Any] = {}
    smi = shutil.which("nvidia-smi")
    if smi is None:
        info["nvidia_smi"] = "not found"
    else:
        try:
            done = subprocess.run(
                [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            rows = [[c.strip() for c in line.split(",")] for line in done.stdout.strip().splitlines()]
            info["nvidia_smi"] = (
                [{"name": r[0], "driver": r[1], "memory": r[2]} for r in rows if len(r) == 3]
                if done.returncode == 0
                else f"failed: {(done.stderr or done.stdout).strip()[:200]}"
            )
        except subprocess.TimeoutExpired:
            info["nvidia_smi"] = "did not answer within 30 s"
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["torch_cuda_available"] = bool(torch.cuda.is_available())
        if info["torch_cuda_available"]:
            info["torch_devices"] = [
                f"{torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))})"
                for i in range(torch.cuda.device_count())
            ]
    except ImportError as exc:
        info["torch"] = f"not importable ({exc})"
    return info


def tensorrt_info() -> dict[str, Any]:
    """TensorRT's Python package, its library, cuda-python and trtexec: each found or why not."""
    info: dict[str, Any] = {}
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError as exc:  # also when the package is there but libnvinfer is not
        info["tensorrt"] = f"fails ({exc})"
    for name in LIBNVINFER:
        try:
            ctypes.CDLL(name)
            info["libnvinfer"] = name
            break
        except OSError:
            continue
    else:
        info["libnvinfer"] = f"not found by the dynamic loader ({', '.join(LIBNVINFER)})"
    from edgedistill.backends.tensorrt_runner import cudart
    from edgedistill.core.errors import EdgeDistillError

    try:
        rt = cudart()
        err, count = rt.cudaGetDeviceCount()
        info["cuda_python"] = f"{count} CUDA device(s)" if int(err) == 0 else f"cudaGetDeviceCount: {err}"
    except EdgeDistillError:
        info["cuda_python"] = "not installed"
    except Exception as exc:  # the driver library itself is missing
        info["cuda_python"] = f"installed, no driver ({exc})"
    info["trtexec"] = shutil.which("trtexec") or "not on PATH"
    info["pytest"] = "installed" if importlib.util.find_spec("pytest") else "not installed"
    info["onnxslim"] = onnxslim_source()
    return info


def onnxslim_source() -> str:
    spec = importlib.util.find_spec("onnxslim")
    if spec is None:
        return "not installed"
    site = Path(str(spec.origin)).parent.parent
    return f"carried ({site})" if str(site) in sys.path and "-packages" not in site.name else "installed"


def gpu_names(gpu: dict[str, Any]) -> str:
    """`NVIDIA H200 (driver 570.1)` from what was found, or `none`."""
    if isinstance(gpu.get("nvidia_smi"), list) and gpu["nvidia_smi"]:
        return ", ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in gpu["nvidia_smi"])
    if gpu.get("torch_devices"):
        return ", ".join(gpu["torch_devices"])
    return "none"


def missing(gpu: dict[str, Any], trt: dict[str, Any]) -> list[tuple[str, str]]:
    """What the GPU half lacks here: (short, the exact line with its fix) each; empty: it can run."""
    out = []
    if gpu_names(gpu) == "none":
        why = (
            f"nvidia-smi {gpu['nvidia_smi']}"
            if isinstance(gpu.get("nvidia_smi"), str)
            else "nvidia-smi: none"
        )
        torch_says = (
            f"torch {gpu['torch']} (CUDA {gpu.get('torch_cuda') or 'none: a CPU build'}) sees no CUDA device"
            if "torch_cuda" in gpu
            else f"torch {gpu.get('torch')}"
        )
        out.append(("no NVIDIA GPU", f"GPU: none visible ({why}; {torch_says})"))
    if not str(trt["tensorrt"])[:1].isdigit():
        out.append(("no TensorRT Python package", f"TensorRT Python package: `import tensorrt` {trt['tensorrt']}: "
                    "JetPack ships it; elsewhere `pip install tensorrt` from NVIDIA's index"))  # fmt: skip
    if not str(trt["libnvinfer"]).startswith("libnvinfer"):
        out.append(("no libnvinfer", f"libnvinfer (TensorRT's library): {trt['libnvinfer']}"))
    if trt["cuda_python"] == "not installed":
        out.append(("no cuda-python", "cuda-python: not installed (the TensorRT runner takes device memory "
                    "from it): pip install cuda-python"))  # fmt: skip
    elif not trt["cuda_python"][:1].isdigit() or trt["cuda_python"].startswith("0 "):
        out.append(("cuda-python sees no GPU", f"cuda-python: {trt['cuda_python']}"))
    return out


# ------------------------------------------------------------------------------ the artifacts
def photo_crops(count: int, split: str, seed: int) -> np.ndarray:
    """(count, 3, SIZE, SIZE) crops in [0, 1] of the photos scikit-image and scikit-learn ship."""
    import torch

    from edgedistill.data.bundled import bundled_photos, random_crops

    return random_crops(bundled_photos(split), count, SIZE, torch.Generator().manual_seed(seed)).numpy()


def calibration_images(folder: Path, count: int = 40) -> Path:
    """Training-split photo crops as PNGs: calibration sees real activation ranges."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(photo_crops(count, "train", 0)):
        Image.fromarray((crop.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def held_out_inputs(count: int = 4) -> np.ndarray:
    """What both runtimes run: held-out photo crops no calibration saw, as the model's [-1, 1] input."""
    return (photo_crops(count, "heldout", 1) * 2 - 1).astype(np.float32)


def student_run(root: Path) -> Path:
    """A small ResNet generator (BatchNorm, ngf 16, 3 blocks) whose output visibly depends on its input (models/probe.py)."""
    from edgedistill.models.probe import probe_run

    return probe_run(root, SIZE, ngf=16, n_blocks=3, seed=0)


def onnxruntime_outputs(art: Path, x: np.ndarray) -> np.ndarray:
    """The ONNX the engine is built from, under ONNX Runtime: the gate's reference."""
    from edgedistill.backends import load_runner
    from edgedistill.core.artifact import Artifact, load_artifact

    a = load_artifact(art)
    runner = load_runner(
        Artifact(a.dir, {**a.manifest, "backend": "onnxruntime", "files": [a.manifest["portable_onnx"]]}), 1
    )
    name, out = runner.input_names[0], runner.output_names[0]
    return np.concatenate([runner.run({name: x[i : i + 1]})[out] for i in range(len(x))])


def qdq_counts(path: Path) -> dict[str, int]:
    import onnx

    ops = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
    return {op: ops.count(op) for op in ("QuantizeLinear", "DequantizeLinear") if op in ops}


# --------------------------------------------------------------------------------- the check
def first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:240]}"


def export_one(run: Path, photos: Path, art: Path, precision: str, x: np.ndarray) -> tuple[dict, np.ndarray]:
    """Export (the device's ONNX + build recipe) and run that ONNX under ONNX Runtime."""
    from edgedistill import export

    t0 = time.perf_counter()
    r = export(str(run), TARGET, art, precision=precision, size=(SIZE, SIZE), calib_data=photos, calib_size=32,
               holdout=4, min_psnr=MIN_GATE_DB, threads=4, log=lambda m: print(f"  [{precision}] {m}", flush=True))  # fmt: skip
    onnx_file = r.manifest["portable_onnx"]
    row: dict[str, Any] = {"export_s": round(time.perf_counter() - t0, 1), "onnx": onnx_file,
                           "files": r.manifest["files"], "gate_psnr_vs_fp32": r.manifest["quality"]["psnr_vs_fp32"],
                           "qdq_nodes": qdq_counts(art / onnx_file)}  # fmt: skip
    reference = onnxruntime_outputs(art, x)
    row["onnxruntime"] = {
        "ran": True,
        "output_std": round(float(reference.std()), 4),
    }  # flat would match anything
    return row, reference


def run_engine(art: Path, precision: str, x: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Build the engine, run it, compare with ONNX Runtime, profile it."""
    from edgedistill import profile
    from edgedistill.backends import load_runner
    from edgedistill.backends.tensorrt import build_engine
    from edgedistill.core.quality import max_abs_err, psnr, to_unit

    t0 = time.perf_counter()
    engine = build_engine(art)
    row: dict[str, Any] = {"engine": engine.name, "build_s": round(time.perf_counter() - t0, 1)}
    runner = load_runner(art, threads=None)
    name, o = runner.input_names[0], runner.output_names[0]
    y = np.concatenate([runner.run({name: x[i : i + 1]})[o] for i in range(len(x))])
    row["psnr_vs_onnxruntime_db"] = round(psnr(to_unit(y, (-1, 1)), to_unit(reference, (-1, 1))), 2)
    row["max_abs_err_vs_onnxruntime"] = round(max_abs_err(y, reference), 5)
    row["matches"] = row["psnr_vs_onnxruntime_db"] >= MIN_PSNR_DB[precision]
    rep = profile([str(art)], size=(SIZE, SIZE), min_time=2.0, iterations=50, progress=False)
    m = rep.models[0]
    row["p50_ms"] = round(m.stats.p50, 4) if m.stats else None
    return row


def gpu_tests() -> dict[str, Any]:
    if importlib.util.find_spec("pytest") is None:
        return {"ran": False, "why": "pytest is not installed here: tests/test_backend_tensorrt.py not run"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "test_backend_tensorrt.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    return {"ran": True, "returncode": done.returncode, "tail": done.stdout[-1500:]}


def check(out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    gpu, trt = gpu_info(), tensorrt_info()
    lacks = missing(gpu, trt)
    result: dict[str, Any] = {"target": TARGET, "gpu": gpu, "tensorrt": trt, "gpu_names": gpu_names(gpu),
                              "missing": [line for _, line in lacks], "artifacts": {}}  # fmt: skip
    print(f"GPU: {result['gpu_names']}; TensorRT: {trt['tensorrt']}; libnvinfer: {trt['libnvinfer']}; "
          f"cuda-python: {trt['cuda_python']}; onnxslim: {trt['onnxslim']}", flush=True)  # fmt: skip
    for _, line in lacks:
        print(f"missing for the GPU half: {line}", file=sys.stderr, flush=True)
    x = held_out_inputs()
    if trt["onnxslim"] == "not installed":
        why = ("onnxslim is not installed here (the export slims every ONNX with it): run "
               "`python scripts/tensorrt_check.py --pack-deps` where it is, and carry scratch/trt_deps along")  # fmt: skip
        result["artifacts"] = {p: {"error": why} for p in PRECISIONS}
        print(why, file=sys.stderr)
    else:
        run, photos = student_run(out), calibration_images(out / "photos")
        for precision in PRECISIONS:
            row: dict[str, Any] = {}
            try:
                row, reference = export_one(run, photos, out / f"{TARGET}-{precision}", precision, x)
                if not lacks:
                    row["tensorrt"] = run_engine(out / f"{TARGET}-{precision}", precision, x, reference)
            except Exception as exc:  # recorded, not raised: the other precision still runs
                row["error"] = first_line(exc)
            result["artifacts"][precision] = row
            print(f"{precision}: {json.dumps(row)}", flush=True)
        if not lacks:
            result["gpu_tests"] = gpu_tests()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def passed(result: dict[str, Any]) -> bool:
    rows = result["artifacts"].values()
    if any("error" in r for r in rows):
        return False
    if result["missing"]:
        return True
    tests = result.get("gpu_tests", {})
    return all(r["tensorrt"]["matches"] for r in rows) and (not tests.get("ran") or tests["returncode"] == 0)


# ------------------------------------------------------------------- the where-it-ran ledger
def ledger(result: dict[str, Any], command: str) -> Any:
    """This run as README's "Where it has run" cells: built here, run on GPU (or why not)."""
    wir = sys.modules.get("where_it_ran")
    if wir is None:  # imported by path (scripts/ is no package); registered first, as dataclasses need
        spec = importlib.util.spec_from_file_location("where_it_ran", ROOT / "scripts" / "where_it_ran.py")
        wir = sys.modules["where_it_ran"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(wir)
    led = wir.new_ledger(
        "tensorrt",
        f"scripts/tensorrt_check.py: {TARGET}'s ONNX for the engine exported and run under ONNX Runtime; "
        "where TensorRT and a GPU are, the engine built, run against it and profiled",
        command,
    )
    led.host["gpu"] = result["gpu_names"]
    trt = result["tensorrt"]
    if str(trt["tensorrt"])[:1].isdigit():
        led.versions["tensorrt"] = trt["tensorrt"]
    lacks = ", ".join(short for short, _ in missing(result["gpu"], trt))
    for precision, row in result["artifacts"].items():
        if "gate_psnr_vs_fp32" not in row:
            led.add(TARGET, precision, "built", "fail", row.get("error", "export failed"))
            continue
        qdq = f", {sum(row['qdq_nodes'].values())} Q/DQ nodes" if row["qdq_nodes"] else ""
        led.add(TARGET, precision, "built", "pass", f"{row['onnx']}{qdq} + build.sh; gate "
                f"{row['gate_psnr_vs_fp32']:.1f} dB vs fp32 under ONNX Runtime")  # fmt: skip
        if lacks:
            seen = "" if result["gpu_names"] == "none" else f" (GPU: {result['gpu_names']})"
            led.add(TARGET, precision, "gpu", "skip", f"{lacks}{seen}")
        elif "error" in row:
            led.add(TARGET, precision, "gpu", "fail", row["error"])
        else:
            t = row["tensorrt"]
            led.add(TARGET, precision, "gpu", "pass" if t["matches"] else "fail",
                    f"TensorRT {trt['tensorrt']} engine {t['psnr_vs_onnxruntime_db']:.1f} dB vs ONNX Runtime "
                    f"(bound {MIN_PSNR_DB[precision]:g}), p50 {t['p50_ms']} ms")  # fmt: skip
    return led


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "scratch" / "trt_check", help="exports go here")
    ap.add_argument("--json", type=Path, default=None, help="the full result (default: OUT/result.json)")
    ap.add_argument("--ledger", type=Path, default=ROOT / "benchmarks" / "results" / "where_it_ran" / "tensorrt.json",
                    help="the where-it-ran ledger (scripts/where_it_ran.py puts it in README)")  # fmt: skip
    ap.add_argument("--pack-deps", action="store_true", help=f"copy {', '.join(CARRIED)} into DEPS and exit")
    ap.add_argument(
        "--deps", type=Path, default=DEPS, help="where carried packages are (default: %(default)s)"
    )
    args = ap.parse_args(argv)
    if args.pack_deps:
        print(f"copied {', '.join(pack_deps(args.deps))} into {args.deps}")
        return 0
    use_carried_deps(args.deps)
    from edgedistill.core.atomic import write_text_atomic

    result = check(args.out)
    result["platform"] = f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
    write_text_atomic(args.json or args.out / "result.json", json.dumps(result, indent=2) + "\n")
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["PYTHONPATH=. python3 scripts/tensorrt_check.py", *given])
    led = ledger(result, command)
    led.write(args.ledger)
    ok = passed(result)
    half = (
        f"; the GPU half did not run ({len(result['missing'])} missing, above)" if result["missing"] else ""
    )
    print(f"tensorrt check: {'ok' if ok else 'FAILED'}{half} in {result['wall_s']} s; wrote "
          f"{args.json or args.out / 'result.json'} and {args.ledger}")  # fmt: skip
    if not ok:
        return 1
    return 3 if result["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
