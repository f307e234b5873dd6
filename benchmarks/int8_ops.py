"""Does INT8 pay on ONNX Runtime? ORT INT8 vs ORT fp32 of the uniform width-0.22 photo-restore student,
with its ConvTranspose upsampling and with resize + conv or PixelShuffle instead, timed interleaved.

    python benchmarks/int8_ops.py all                        # here
    python benchmarks/int8_ops.py prepare --out DIR          # export + compile (torch, quantizer)
    python benchmarks/int8_ops.py time --out DIR             # time (numpy + onnxruntime only)

ORT's CPU EP has no int8 ConvTranspose (QDQ ConvTranspose runs DQ -> fp32 -> Q, onnxruntime #8988):
the table says which ops ran fp32 (search/deploy.py, read from ORT's optimized graph) and what the
INT8 model gains over fp32 per upsampling op. "int8 (all layers)" also quantizes the 3-channel 7x7
first/last convs the x86-onnxruntime target keeps fp32 by default.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEACHER = "photo-restore"
WIDTH = 0.22
UPSAMPLES = ("convtranspose", "nearest", "bilinear", "pixelshuffle")
VARIANTS = ("fp32", "int8", "int8-all")  # int8-all: keep_io_layers off


def prepare(out: Path, size: int) -> None:
    from edgedistill.core.spec import spec_for_family
    from edgedistill.core.targets import get_target
    from edgedistill.models.embedded import EMBEDDED_DIR
    from edgedistill.models.registry import create
    from edgedistill.search.deploy import fallbacks, ort_placements
    from edgedistill.search.latency import compile_whole

    # the teacher's architecture from its model.json: latency needs no trained weights
    kw = dict(json.loads((EMBEDDED_DIR / TEACHER / "model.json").read_text())["kwargs"])
    kw["ngf"] = max(1, round(int(kw["ngf"]) * WIDTH))
    plan: dict[str, Any] = {
        "size": size,
        "teacher": TEACHER,
        "width": WIDTH,
        "student_kwargs": kw,
        "models": [],
    }
    for up in UPSAMPLES:
        skw = {**kw, "upsample": up}
        module = create("resnet", **skw)
        spec = spec_for_family("resnet", skw, default_size=(size, size))
        for variant in VARIANTS:
            precision = "fp32" if variant == "fp32" else "int8"
            tgt = get_target("x86-onnxruntime", precision)
            if variant == "int8-all":
                tgt = replace(tgt, options={**tgt.options, "keep_io_layers": False})
            name = f"{up}-{variant}"
            art = compile_whole(module, spec, tgt, (size, size), out / name)
            fell = []
            if precision == "int8":
                fell = [p.to_dict() for p in fallbacks(ort_placements(art / "model.onnx"))]
            plan["models"].append(
                {
                    "name": name,
                    "upsample": up,
                    "variant": variant,
                    "dir": str(art.relative_to(out)),
                    "fp32_ops": fell,
                }
            )
            print(f"{name}: {len(fell)} op(s) in fp32: {', '.join(p['op_type'] for p in fell)}", flush=True)
    (out / "plan.json").write_text(json.dumps(plan, indent=1))


def _cpu_times(
    sources: list[Any], threads: int, min_time: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Median process CPU ms per call in interleaved rounds (one thread on a shared machine: a
    call's wall time would count the time it waited for a core)."""
    import time

    import numpy as np

    from edgedistill.runtime.sources import make_inputs

    live = []
    for src in sources:
        runner = src.load(threads)
        feed = make_inputs(src, runner, None, 1, 0)
        for _ in range(3):
            runner.run(feed)
        live.append((src.label, runner, feed))
    times: dict[str, list[int]] = {n: [] for n, _, _ in live}
    start, rounds = time.perf_counter(), 0
    while rounds < 20 or time.perf_counter() - start < min_time:
        for n, runner, feed in live:
            t0 = time.process_time_ns()
            runner.run(feed)
            times[n].append(time.process_time_ns() - t0)
        rounds += 1
    p50 = {n: float(np.median(t)) / 1e6 for n, t in times.items()}
    cv = {n: float(np.std(t) / np.mean(t)) for n, t in times.items()}
    return p50, cv


def time_all(out: Path, threads: int, min_time: float, results: Path, clock: str = "wall") -> None:
    from edgedistill.core.artifact import load_artifact
    from edgedistill.runtime.hostinfo import host_info
    from edgedistill.runtime.session import ProfileOptions, run_profile
    from edgedistill.runtime.sources import artifact_source

    plan = json.loads((out / "plan.json").read_text())
    sources = [artifact_source(load_artifact(out / m["dir"]), m["name"], m["name"]) for m in plan["models"]]
    if clock == "cpu":
        p50, cv = _cpu_times(sources, threads, min_time)
    else:
        opts = ProfileOptions(
            threads=threads, warmup=5, iterations=30, min_time=min_time, layers=0, roofline=False
        )
        report = run_profile(sources, opts)
        p50 = {m.name: m.stats.p50 for m in report.models if m.stats}
        cv = {m.name: m.stats.cv for m in report.models if m.stats}
    host = host_info(threads)
    rows = []
    for up in UPSAMPLES:
        fp = p50[f"{up}-fp32"]
        for variant in ("int8", "int8-all"):
            m = next(x for x in plan["models"] if x["name"] == f"{up}-{variant}")
            rows.append({
                "upsample": up, "variant": variant, "fp32_ms": round(fp, 3), "int8_ms": round(p50[m["name"]], 3),
                "speedup_vs_fp32": round(fp / p50[m["name"]], 3), "cv_int8": cv[m["name"]],
                "ops_in_fp32": sorted({p["op_type"] for p in m["fp32_ops"]}),
            })  # fmt: skip
    lines = [
        f"CPU: {host['cpu']} ({', '.join(host['isa'])}), {threads} threads, {clock} clock, onnxruntime "
        f"{host['versions'].get('onnxruntime')}; student: {TEACHER} resnet x{WIDTH} at {plan['size']}x{plan['size']}",
        "",
        "| upsampling | int8 variant | ORT fp32 ms | ORT int8 ms | int8 speedup | ops left fp32 |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['upsample']} | {r['variant']} | {r['fp32_ms']:.2f} | {r['int8_ms']:.2f} | {r['speedup_vs_fp32']:.2f}x | "
        f"{', '.join(r['ops_in_fp32']) or '-'} |"
        for r in rows
    ]
    text = "\n".join(lines)
    print(text)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        json.dumps({"host": host, "clock": clock, "plan": plan, "rows": rows, "p50": p50}, indent=1) + "\n"
    )
    results.with_suffix(".md").write_text(text + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=("prepare", "time", "all"))
    ap.add_argument("--out", type=Path, default=ROOT / "scratch" / "latency" / "int8_ops")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=10.0)
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time (shared machine, 1 thread)",
    )
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "int8_ops.json")
    args = ap.parse_args()
    if args.phase in ("prepare", "all"):
        prepare(args.out, args.size)
    if args.phase in ("time", "all"):
        time_all(args.out, args.threads, args.min_time, args.results, args.clock)


if __name__ == "__main__":
    main()
