"""TensorRT, checked end to end on the first machine that has an NVIDIA GPU and TensorRT.

    python scripts/tensorrt_check.py [--out trt_check] [--json result.json]

Everything it needs travels with the checkout (no download): it exports a small ResNet generator
built here for `jetson-orin-nano` at fp16 and INT8 (explicit-QDQ ONNX), builds each engine with
this machine's TensorRT (`edgedistill build-engine`'s code), runs it through the TensorRT runner,
compares its outputs with the QDQ ONNX under ONNX Runtime (what the quality gate scored) on the
same held-out inputs, profiles it, and runs the GPU-only tests (tests/test_backend_tensorrt.py).

Where TensorRT, cuda-python or a GPU is missing it says exactly which, still does what runs
without them (export + the ONNX Runtime check of the QDQ ONNX), and exits 3.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a bare checkout, installed or not

SIZE = 64
PRECISIONS = ("fp16", "int8")


def student_run(root: Path) -> Path:
    """A small ResNet generator (BatchNorm, ngf 16, 3 blocks) as a run directory; fixed seed."""
    import torch

    from edgedistill.core.spec import spec_for_family
    from edgedistill.models import create
    from edgedistill.models.weights import save_weights

    torch.manual_seed(0)
    kwargs = {"ngf": 16, "n_blocks": 3, "norm": "batch"}
    net = create("resnet", **kwargs).eval()
    run = root / "student"
    run.mkdir(parents=True, exist_ok=True)
    save_weights(net, run / "generator.safetensors")
    spec_for_family("resnet", kwargs, default_size=(SIZE, SIZE)).save(run / "model.json")
    return run


def calibration_images(folder: Path, count: int = 48) -> Path:
    """Smooth gradients + noise: activation ranges like photos give (no dataset needed)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    for i in range(count):
        base = np.stack([np.sin(3 * xx + i), np.cos(2 * yy + i / 3), xx * yy], -1) * 0.4 + 0.5
        img = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def missing() -> list[str]:
    """What this machine lacks for the GPU half, one line each (empty: all there)."""
    from edgedistill.backends.tensorrt import cuda_unavailable, tensorrt_unavailable

    return [why for why in (tensorrt_unavailable(), cuda_unavailable()) if why]


def onnxruntime_outputs(art: Path, x: np.ndarray) -> np.ndarray:
    """The QDQ ONNX the engine is built from, under ONNX Runtime: the gate's reference."""
    from edgedistill.backends import load_runner
    from edgedistill.core.artifact import Artifact, load_artifact

    a = load_artifact(art)
    runner = load_runner(
        Artifact(a.dir, {**a.manifest, "backend": "onnxruntime", "files": [a.manifest["portable_onnx"]]}), 1
    )
    name, out = runner.input_names[0], runner.output_names[0]
    return np.concatenate([runner.run({name: x[i : i + 1]})[out] for i in range(len(x))])


def check(out: Path) -> dict:
    from edgedistill import export, profile
    from edgedistill.core.quality import max_abs_err, psnr, to_unit

    result: dict = {"missing": missing(), "artifacts": {}}
    run, photos = student_run(out), calibration_images(out / "photos")
    rng = np.random.default_rng(7)
    x = (rng.random((4, 3, SIZE, SIZE), dtype=np.float32) * 2 - 1).astype(np.float32)
    for precision in PRECISIONS:
        art = out / f"jetson-orin-nano-{precision}"
        t0 = time.perf_counter()
        r = export(str(run), "jetson-orin-nano", art, precision=precision, size=(SIZE, SIZE), calib_data=photos,
                   calib_size=32, holdout=4, threads=2, log=lambda m: print(f"  {m}", flush=True))  # fmt: skip
        row = {
            "export_s": round(time.perf_counter() - t0, 1),
            "gate_psnr_vs_fp32": r.manifest["quality"]["psnr_vs_fp32"],
        }
        reference = onnxruntime_outputs(art, x)
        row["qdq_onnx_under_onnxruntime"] = "ran"
        if not result["missing"]:
            from edgedistill.backends import load_runner
            from edgedistill.backends.tensorrt import build_engine

            t0 = time.perf_counter()
            engine = build_engine(art)
            row["engine"], row["build_s"] = engine.name, round(time.perf_counter() - t0, 1)
            runner = load_runner(art, threads=None)
            name, o = runner.input_names[0], runner.output_names[0]
            y = np.concatenate([runner.run({name: x[i : i + 1]})[o] for i in range(len(x))])
            row["tensorrt_vs_onnxruntime"] = {
                "psnr_db": round(psnr(to_unit(y, (-1, 1)), to_unit(reference, (-1, 1))), 2),
                "max_abs_err": round(max_abs_err(y, reference), 5),
            }
            rep = profile([str(art)], size=(SIZE, SIZE), min_time=2.0, iterations=50, progress=False)
            m = rep.models[0]
            row["p50_ms"] = m.stats.p50 if m.stats else None
        result["artifacts"][precision] = row
        print(f"{precision}: {json.dumps(row)}", flush=True)
    if not result["missing"]:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                str(ROOT / "tests" / "test_backend_tensorrt.py")], cwd=ROOT,
                               capture_output=True, text=True)  # fmt: skip
        result["gpu_tests"] = {"returncode": tests.returncode, "tail": tests.stdout[-1500:]}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "scratch" / "trt_check")
    ap.add_argument("--json", type=Path, default=None, help="write the result here too")
    args = ap.parse_args()
    result = check(args.out)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    for why in result["missing"]:
        print(f"missing for the GPU half: {why}", file=sys.stderr)
    if result["missing"]:
        return 3
    return 0 if result.get("gpu_tests", {}).get("returncode") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
