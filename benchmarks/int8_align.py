"""Channel-aligned INT8 convs on ONNX Runtime (x86): fp32 vs INT8 as compiled before and after
onnxtools/qdq_align.py, for the students the search benchmark chose and the uniform ones, interleaved.

    python benchmarks/int8_align.py                   # ~4 min on 2 cores
    python benchmarks/int8_align.py --tag zen3        # writes int8_align_zen3.*: another CPU's run

Each architecture (random weights: latency does not depend on their values) is compiled for
x86-onnxruntime in fp32 and in INT8 as a quantization-aware student's export is (every layer int8,
the form the search times), with the channel alignment off, at the edges and widened, plus the post-training default
(3-channel first/last convs kept fp32). Alignment (onnxtools/qdq_align.py): "edges" is export's default
(the first and last conv), "widened" the opt-in align_int8_channels = "widen" (every conv it can). All are timed in one interleaved profile
(2 threads, 256x256). Writes benchmarks/results/int8_align.md and .json; prints the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).parent / "results"
TEACHER = "photo-restore"
# name -> search-space architecture (search.json rows; the uniform students' widths from space.uniform_arch)
ARCHS: dict[str, dict] = {
    "ORT half searched (Zen4)": {"widths": [32, 64, 48, 16, 16], "upsample": "bilinear", "n_blocks": 3, "kernel": 3},
    "ORT full searched (Zen4)": {"widths": [32, 64, 128, 64, 32], "upsample": "pixelshuffle", "block": "dwsep",
                                 "n_blocks": 2, "kernel": 3},
    "OpenVINO half searched (Zen4)": {"widths": [16, 48, 32, 16, 24], "block": "dwsep", "n_blocks": 3, "kernel": 3},
    "ORT half searched (Zen3)": {"widths": [32, 48, 48, 32, 8], "upsample": "bilinear", "block": "dwsep",
                                "n_blocks": 2, "kernel": 3},
    "uniform 0.1": {"widths": [6, 12, 24, 12, 6]},
    "uniform 0.125": {"widths": [8, 16, 32, 16, 8]},
    "uniform 0.22": {"widths": [14, 28, 56, 28, 14]},
}  # fmt: skip
VARIANTS = ("fp32", "int8 unaligned", "int8 edges", "int8 widened", "int8 PTQ edges")
ALIGN = {"int8 unaligned": False, "int8 edges": "edges", "int8 widened": "widen", "int8 PTQ edges": "edges"}


def prepare(out: Path) -> dict[str, dict]:
    from edgedistill.core.spec import spec_for_family
    from edgedistill.core.targets import get_target
    from edgedistill.models.embedded import EMBEDDED_DIR
    from edgedistill.search import space as sp
    from edgedistill.search.latency_compile import as_qat_export, compile_whole

    kw = dict(json.loads((EMBEDDED_DIR / TEACHER / "model.json").read_text())["kwargs"])
    spec = spec_for_family("resnet", kw, default_size=(256, 256))
    plan: dict[str, dict] = {}
    for name, arch in ARCHS.items():
        module = sp.build(spec, arch).eval()
        for variant in VARIANTS:
            tgt = get_target("x86-onnxruntime", "fp32" if variant == "fp32" else "int8")
            if variant != "fp32":
                tgt = as_qat_export(tgt) if "PTQ" not in variant else tgt
                tgt = replace(tgt, options={**tgt.options, "align_int8_channels": ALIGN[variant]})
            slug = f"{name}-{variant}".replace(" ", "_").replace("(", "").replace(")", "")
            art = compile_whole(module, spec, tgt, (256, 256), out / slug)
            aligned = json.loads((art / "manifest.json").read_text())["backend_info"].get("aligned_convs", [])
            plan[f"{name} | {variant}"] = {"dir": str(art), "arch": arch, "aligned": aligned}
            print(f"{name} {variant}: {len(aligned)} conv(s) aligned", flush=True)
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "scratch" / "latency" / "int8_align")
    ap.add_argument("--min-time", type=float, default=4.0, help="seconds per model per profile")
    ap.add_argument("--tag", default="", help="suffix of the result files (another CPU kind's run)")
    args = ap.parse_args()
    from edgedistill.profiler.api import profile
    from edgedistill.runtime.hostinfo import host_info

    plan = prepare(args.out)
    stem = "int8_align" + (f"_{args.tag}" if args.tag else "")
    report = profile({k: v["dir"] for k, v in plan.items()}, threads=2, min_time=args.min_time, layers=0,
                     size=(256, 256), roofline=False, progress=False)  # fmt: skip
    p50 = {m.name: m.stats.p50 for m in report.models if m.stats}
    host = host_info(2)
    lines = [
        f"CPU: {host['cpu']} ({', '.join(host['isa'])}), 2 threads, onnxruntime {host['versions'].get('onnxruntime')}; "
        f"one interleaved profile, median ms at 256x256 (`python benchmarks/int8_align.py`)",
        "",
        "| student | fp32 | int8 unaligned (speed-up) | int8 edges, the default (speed-up) | int8 widened (speed-up) | "
        "edges / unaligned | widened / unaligned | PTQ default, edges |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for name in ARCHS:
        ms = {v: p50[f"{name} | {v}"] for v in VARIANTS}
        fp, un, ed, wi = ms["fp32"], ms["int8 unaligned"], ms["int8 edges"], ms["int8 widened"]
        aligned = {v: plan[f"{name} | {v}"]["aligned"] for v in ("int8 edges", "int8 widened")}
        rows.append({"student": name, "arch": ARCHS[name], "ms": ms, "aligned": aligned,
                     "speedup_unaligned": fp / un, "speedup_edges": fp / ed, "speedup_widened": fp / wi})  # fmt: skip
        lines.append(
            f"| {name} | {fp:.2f} | {un:.2f} ({fp / un:.2f}x) | {ed:.2f} (**{fp / ed:.2f}x**) | {wi:.2f} ({fp / wi:.2f}x) | "
            f"{ed / un:.2f} | {wi / un:.2f} | {ms['int8 PTQ edges']:.2f} ({fp / ms['int8 PTQ edges']:.2f}x) |"
        )
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"host": host, "rows": rows, "p50": p50}, indent=1) + "\n"
    )
    (RESULTS / f"{stem}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
