"""Does a model timed right after another runtime's pay for the switch? And does settling fix it?

    python benchmarks/runtime_switch.py            # ~4 min on 2 cores

One photo-restore student (uniform width 0.2, random weights: latency does not hang on them) compiled
for x86-onnxruntime and x86-openvino INT8, each artifact loaded twice, profiled in one session in the
order ORT a, ORT b, OV a, OV b (rounds are cyclic: ORT a follows OV b). Within a runtime, a and b are
the same model, so a/b should read 1.00; the first of each runtime follows the other runtime's model.
Profiles alternate the three settle modes (runtime/session.py: ProfileOptions.settle): none (plain
interleaving), switch (one untimed call before a model that follows another runtime's, the default)
and all (before every model), --repeats times each.
Writes benchmarks/results/runtime_switch.json and .md; prints the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from edgedistill.core.artifact import load_artifact
from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.targets import get_target
from edgedistill.models.loading import load_generator
from edgedistill.runtime.hostinfo import host_info
from edgedistill.runtime.session import ProfileOptions, run_profile
from edgedistill.runtime.sources import artifact_source
from edgedistill.search import space as sp
from edgedistill.search.latency_compile import compile_whole

RESULTS = Path(__file__).parent / "results"
TARGETS = ("x86-onnxruntime", "x86-openvino")
SETTINGS = ("none", "switch", "all")  # ProfileOptions.settle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=0.2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=4, help="profiles per setting, the two alternating")
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()
    spec = load_generator("photo-restore").spec
    net = sp.build(spec, sp.uniform_arch(sp.space_for(spec), args.width)).eval()
    size = (args.size, args.size)
    host = host_info(args.threads)
    print(f"CPU: {host['cpu']} ({', '.join(host['isa'])}), {args.threads} threads")
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="edgedistill-switch-") as work:
        arts = {t: compile_whole(net, spec, get_target(t, "int8"), size, Path(work) / t) for t in TARGETS}
        sources = [
            artifact_source(load_artifact(arts[t]), str(arts[t]), f"{t.split('-')[1]} {ab}")
            for t in TARGETS
            for ab in "ab"
        ]
        for _ in range(args.repeats):
            for setting in SETTINGS:
                opts = ProfileOptions(threads=args.threads, warmup=5, iterations=20, min_time=args.seconds,
                                      layers=0, size=size, roofline=False, settle=setting)  # fmt: skip
                report = run_profile(sources, opts)
                runs[setting].append({m.name: m.stats.p50 for m in report.models if m.stats})
    rows = []
    for setting, profiles in runs.items():
        for rt in ("onnxruntime", "openvino"):
            ratios = [p[f"{rt} a"] / p[f"{rt} b"] for p in profiles]
            rows.append({"settle": setting, "runtime": rt, "a_over_b_median": round(statistics.median(ratios), 3),
                         "a_over_b": [round(r, 3) for r in ratios],
                         "b_ms_median": round(statistics.median(p[f"{rt} b"] for p in profiles), 3)})  # fmt: skip
    lines = [f"CPU: {host['cpu']} ({', '.join(host['isa'])}), {args.threads} threads; uniform {args.width} "
             f"student, INT8, {args.size}x{args.size}; {args.repeats} profiles per setting, alternating",
             "", "| settle | runtime | a / b (median) | a / b per profile | b ms (median) |", "|---|---|---:|---|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['settle']} | {r['runtime']} | {r['a_over_b_median']:.3f} | "
                     f"{', '.join(f'{x:.3f}' for x in r['a_over_b'])} | {r['b_ms_median']:.2f} |")  # fmt: skip
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / "runtime_switch.json", json.dumps({"args": vars(args), "host": host, "rows": rows,
                                                                   "profiles": runs}, indent=2) + "\n")  # fmt: skip
    write_text_atomic(RESULTS / "runtime_switch.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
