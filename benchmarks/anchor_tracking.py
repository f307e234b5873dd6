"""Does the speed anchor read a session's speed well enough to time whole students by it?

    python benchmarks/anchor_tracking.py --search scratch/search/bench/x86-openvino-20.25ms/search

The search measures its finalists whole and judges them against the budget. On a shared VM the same
model runs 20-25 % faster or slower from one minute to the next (benchmarks/results/measure_grouping.md),
so a search whose finalists are timed in a slow minute reads them over budget and chooses smaller
students than the device runs in time. The latency table already reads its blocks and references at
one speed through the speed anchor (search/speed_anchor.py). This checks whether the anchor, a 2 ms
model, tracks the speed of 15-27 ms students: it compiles a search's measured candidates and the
anchor once, times them together in `--sessions` sessions spread over `--span` seconds, and reports
each model's spread across sessions (largest over smallest p50) raw and read at the anchor's median
speed (p50 x the anchor's median / the anchor's time in that session).
Writes benchmarks/results/anchor_tracking.json and .md; prints the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from measure_grouping import load_measured  # benchmarks/ is on sys.path: this script runs from it

from edgedistill.core.atomic import write_text_atomic
from edgedistill.runtime.hostinfo import host_info
from edgedistill.search.latency import time_compiled
from edgedistill.search.speed_anchor import compile_anchor

RESULTS = Path(__file__).parent / "results"


def spread(xs: list[float]) -> float:
    return max(xs) / min(xs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--search", type=Path, required=True, help="a search's out dir (its search.json)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--span", type=float, default=480.0, help="seconds the sessions are spread over")
    args = ap.parse_args()
    run = load_measured(args.search)
    found, tgt, names = run.found, run.tgt, run.names
    n = len(names)
    raw: list[list[float]] = []  # per session: each model's p50, the anchor's last
    with tempfile.TemporaryDirectory(prefix="edgedistill-anchor-tracking-") as work:
        dirs = run.compile(Path(work))
        anchor = compile_anchor(tgt)[0]
        gap = args.span / max(args.sessions - 1, 1)
        for s in range(args.sessions):
            t0 = time.perf_counter()
            ms = time_compiled([*dirs, anchor], tgt, threads=args.threads, hot=[n])
            raw.append(ms)
            print(
                f"session {s}: anchor {ms[-1]:.3f} ms; " + ", ".join(f"{t:.2f}" for t in ms[:-1]), flush=True
            )
            if s < args.sessions - 1:
                time.sleep(max(0.0, gap - (time.perf_counter() - t0)))
    anchors = [r[-1] for r in raw]
    ref = statistics.median(anchors)
    rows = []
    for i, name in enumerate(names):
        xs = [r[i] for r in raw]
        norm = [x * ref / a for x, a in zip(xs, anchors, strict=True)]
        rows.append({"arch": name, "median_ms": round(statistics.median(xs), 2),
                     "spread_raw": round(spread(xs), 3), "spread_anchored": round(spread(norm), 3)})  # fmt: skip
    # how each session's speed (its models' mean time over their median) follows the anchor's
    speed = [statistics.mean(r[i] / statistics.median(q[i] for q in raw) for i in range(n)) for r in raw]
    anchor_speed = [a / ref for a in anchors]
    host = host_info(args.threads)
    lines = [f"{host['cpu']} ({', '.join(host['isa'])}), {args.threads} threads, {found['target']} {found['precision']}; "
             f"{args.sessions} sessions over {args.span:.0f} s; spread = largest / smallest p50 across sessions", "",
             "| architecture | median ms | spread raw | spread read at the anchor's speed |", "|---|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        lines.append(
            f"| {row['arch']} | {row['median_ms']} | {row['spread_raw']} | {row['spread_anchored']} |"
        )
    lines += ["", "| session | anchor / its median | students / their medians (mean) |", "|---:|---:|---:|"]
    lines += [
        f"| {s} | {a:.3f} | {v:.3f} |" for s, (a, v) in enumerate(zip(anchor_speed, speed, strict=True))
    ]
    med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
    lines += ["", f"median spread: raw {med('spread_raw'):.3f}, read at the anchor's speed {med('spread_anchored'):.3f}; "
              f"the anchor's own spread {spread(anchors):.3f}"]  # fmt: skip
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "host": host, "rows": rows,
           "sessions_ms": raw, "anchor_speed": anchor_speed, "students_speed": speed}  # fmt: skip
    write_text_atomic(RESULTS / "anchor_tracking.json", json.dumps(out, indent=2) + "\n")
    write_text_atomic(RESULTS / "anchor_tracking.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
