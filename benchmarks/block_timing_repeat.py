"""Do block timings repeat? The blocks of a prepared latency benchmark timed twice one after another
(each block's calls back to back) and twice in interleaved rounds (search/block_timing.py), and
compared run against run.

    python benchmarks/latency_model.py prepare --out DIR --space photo-restore --size 256 --configs x86-openvino:int8
    python benchmarks/block_timing_repeat.py --bench DIR/x86-openvino-int8

Why: the latency model sums measured blocks, so a block's timing that moves between two runs moves
every prediction that holds it. On a shared 2-vCPU machine a kernel runs at twice its time while a
core is stolen, in bursts longer than one block's few calls; interleaving spreads each block's calls
over the whole measurement. Reports, per mode, the p10-p90 (and extremes) of run2/run1 for each
block and for each model's sum of blocks; writes benchmarks/results/block_timing_repeat.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgedistill.runtime.hostinfo import host_info  # noqa: E402
from edgedistill.search import block_timing  # noqa: E402
from edgedistill.search.latency import BLOCK_CALLS, BLOCK_SECONDS, _load_feed  # noqa: E402

MODES = {"one block after another": 1, "interleaved rounds": block_timing.ROUND_GROUP}


def time_blocks(bench: Path, plan: dict[str, Any], group: int, threads: int) -> dict[str, float]:
    """ms per block key, `group` blocks per interleaved round (1: each block's calls back to back)."""
    keys = list(plan["blocks"])
    dirs = [bench / "blocks" / k for k in keys]
    block_timing.ROUND_GROUP = group
    timed = block_timing.time_local_many(
        [d / "art" for d in dirs], [_load_feed(d) for d in dirs], threads, BLOCK_CALLS, BLOCK_SECONDS
    )
    info = plan["blocks"]
    return {
        k: block_timing.summarize(ks, info[k]["own"], info[k]["other"]).ms
        for k, ks in zip(keys, timed, strict=True)
    }


def spread(ratios: np.ndarray) -> dict[str, float]:
    p10, p50, p90 = np.percentile(ratios, [10, 50, 90])
    return {"p10": round(float(p10), 3), "median": round(float(p50), 3), "p90": round(float(p90), 3),
            "min": round(float(ratios.min()), 3), "max": round(float(ratios.max()), 3)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--bench", type=Path, default=ROOT / "scratch" / "latency" / "space256" / "x86-openvino-int8"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks" / "results" / "block_timing_repeat.json"
    )
    args = ap.parse_args()
    plan = json.loads((args.bench / "plan.json").read_text())
    host = host_info(args.threads)
    print(f"CPU: {host['cpu']} ({', '.join(host['isa'])}), {args.threads} threads; {len(plan['blocks'])} blocks, "
          f"{len(plan['models'])} models ({plan['target']} {plan['precision']})")  # fmt: skip
    bench = args.bench.resolve()
    where = str(bench.relative_to(ROOT)) if bench.is_relative_to(ROOT) else bench.name
    out: dict[str, Any] = {"host": host, "bench": where, "modes": {}}
    lines = ["| mode | blocks: run2/run1 p10-p90 (min-max) | models' block sums: p10-p90 (min-max) | s per run |",
             "|---|---|---|---:|"]  # fmt: skip
    for mode, group in MODES.items():
        runs, secs = [], []
        for _ in range(2):
            t0 = time.perf_counter()
            runs.append(time_blocks(args.bench, plan, group, args.threads))
            secs.append(time.perf_counter() - t0)
        a, b = runs
        per_block = spread(np.array([b[k] / a[k] for k in a if a[k] > 0]))
        per_model = spread(np.array([sum(b[k] for k in m["blocks"]) / sum(a[k] for k in m["blocks"])
                                     for m in plan["models"].values()]))  # fmt: skip
        out["modes"][mode] = {
            "blocks": per_block,
            "models": per_model,
            "seconds": [round(s, 1) for s in secs],
        }
        lines.append(f"| {mode} | {per_block['p10']:.2f}-{per_block['p90']:.2f} ({per_block['min']:.2f}-"
                     f"{per_block['max']:.2f}) | {per_model['p10']:.2f}-{per_model['p90']:.2f} ({per_model['min']:.2f}-"
                     f"{per_model['max']:.2f}) | {np.mean(secs):.0f} |")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    args.results.write_text(json.dumps(out, indent=1) + "\n")
    args.results.with_suffix(".md").write_text(f"CPU: {host['cpu']} ({', '.join(host['isa'])})\n\n{text}\n")


if __name__ == "__main__":
    main()
