"""INT8 vs fp32 on ONNX Runtime of benchmarks/search.py's ORT students, in one interleaved profile.

    python benchmarks/search_int8_vs_fp32.py      # after benchmarks/search.py's ORT rows; ~2 min
    python benchmarks/search_int8_vs_fp32.py --tag zen3   # writes search_int8_vs_fp32_zen3.*: another CPU's

Each student of the ORT rows (scratch/search/bench/x86-onnxruntime-*ms/{searched,uniform}) is exported
fp32 beside its INT8 export; all eight artifacts are profiled together (2 threads, 256x256).
Writes benchmarks/results/search_int8_vs_fp32.md and .json; prints each student's INT8 speed-up.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from edgedistill.profiler.api import profile

ROOT = Path(__file__).resolve().parent.parent
BENCH = (
    Path("scratch") / "search" / "bench"
)  # relative to ROOT, where main() runs: no machine paths in the JSON
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", default="", help="suffix of the result files (another CPU kind's run)")
    tag = ap.parse_args().tag
    stem = "search_int8_vs_fp32" + (f"_{tag}" if tag else "")
    os.chdir(ROOT)
    models: dict[str, str] = {}
    for row in sorted(BENCH.glob("x86-onnxruntime-*ms")):
        for who in ("searched", "uniform"):
            run = row / who
            fp32 = run / "exports" / "x86-onnxruntime-fp32"
            if not (run / "exports" / "x86-onnxruntime-int8").is_dir():
                continue
            if not fp32.is_dir():
                cmd = [sys.executable, "-m", "edgedistill", "export", str(run / "student"),
                       "-t", "x86-onnxruntime", "--precision", "fp32", "--out", str(fp32)]  # fmt: skip
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            for precision in ("int8", "fp32"):
                models[f"{row.name[:-2]} {who} {precision}"] = str(
                    run / "exports" / f"x86-onnxruntime-{precision}"
                )
    if not models:
        raise SystemExit(
            f"no ORT rows under {BENCH}: run benchmarks/search.py --targets x86-onnxruntime first"
        )
    report = profile(models, threads=2, min_time=10, layers=0, size=(256, 256), roofline=False, progress=False,
                     md_path=RESULTS / f"{stem}.md", json_path=RESULTS / f"{stem}.json")  # fmt: skip
    p50 = {m.name: m.stats.p50 for m in report.models if m.stats}
    for name in models:
        if name.endswith(" int8"):
            fp32 = p50[name[:-4] + "fp32"]
            print(
                f"{name[:-5]:36s} int8 {p50[name]:7.2f} ms  fp32 {fp32:7.2f} ms  speed-up {fp32 / p50[name]:.2f}x"
            )


if __name__ == "__main__":
    main()
