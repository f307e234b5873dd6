"""Which level of the speed anchor's past times reads a session's models nearest to what a re-measure reads?

    python benchmarks/anchor_tracking.py --search S --sessions 30 --span 1200   # the sessions
    python benchmarks/typical_level.py                                          # read from its JSON

The search reads each measuring session at the machine's typical speed: a model's time x the typical
anchor time / the anchor's time in that session (LatencyTable.typical_scale), where the typical time
is a level of the anchor's times over every session the table has seen. On a shared VM those times
are not one bell: on a 2-core Zen3 the anchor ran either 5.2-6.0 ms or 7.1-8.4 ms, about half the
minutes each, whatever ran before it in the process. A median of a few such times falls in either
mode; the budget reading moves with it.

This replays anchor_tracking's sessions (each: the search's measured students and the anchor, timed
together) as the search and the benchmark use them. Per trial, `k` sessions are the table's history,
one more is the search's measuring session, and three others the benchmark's re-measure (its
interleaved profiles, their median). Each student's reading (its time in the measuring session at
each level of the history's and that session's anchor times) is compared with its re-measure; the
table gives, per level and history size, the share of readings within 10 % and the median error.
"Raw" is the reading without the anchor. Writes benchmarks/results/typical_level.json and .md (--name).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgedistill.core.atomic import write_text_atomic
from edgedistill.search.latency_table import TYPICAL_LEVEL, log_mean

RESULTS = Path(__file__).parent / "results"
# levels of the anchor's past times the typical speed could be; the last is the search's (TYPICAL_LEVEL)
LEVELS: dict[str, Callable[[list[float]], float] | None] = {
    "raw (no anchor)": None,
    "median": statistics.median,
    "lower quartile": lambda xs: float(np.quantile(xs, 0.25)),
    "log mean": log_mean,
    "log mean of the middle half": TYPICAL_LEVEL,
}
REMEASURES = 3  # the benchmark's interleaved profiles of the chosen student (benchmarks/search.py --repeats)


def replay(
    sessions: list[list[float]], level: Callable[[list[float]], float] | None, k: int, trials: int, seed: int
) -> list[float]:
    """log(reading / re-measure) of every student over `trials` draws of history, session and re-measure."""
    rng = random.Random(seed)
    n = len(sessions[0]) - 1  # the students; the anchor is last
    errs = []
    for _ in range(trials):
        picked = rng.sample(range(len(sessions)), k + 1 + REMEASURES)
        history, now, again = picked[:k], picked[k], picked[k + 1 :]
        anchor_now = sessions[now][-1]
        scale = (
            1.0 if level is None else level([sessions[h][-1] for h in history] + [anchor_now]) / anchor_now
        )
        for i in range(n):
            remeasured = statistics.median(sessions[a][i] for a in again)
            errs.append(math.log(sessions[now][i] * scale / remeasured))
    return errs


def follow_slope(sessions: list[list[float]], i: int) -> float:
    """How student i's log time moves with the anchor's across sessions (least squares): 1 if it slows as
    much as the anchor does; under 1, reading it through the anchor over-corrects a slow minute."""
    la = [math.log(s[-1]) for s in sessions]
    lx = [math.log(s[i]) for s in sessions]
    ma, mx = statistics.fmean(la), statistics.fmean(lx)
    var = sum((a - ma) ** 2 for a in la)
    return sum((a - ma) * (x - mx) for a, x in zip(la, lx, strict=True)) / var if var else 1.0


def summary(errs: list[float]) -> dict[str, float]:
    off = [abs(math.expm1(e)) for e in errs]
    return {
        "within_10pct": round(sum(o <= 0.10 for o in off) / len(off), 3),
        "median_abs_err": round(statistics.median(off), 4),
        "p90_abs_err": round(sorted(off)[int(0.9 * (len(off) - 1))], 4),
        "bias": round(math.expm1(statistics.fmean(errs)), 4),  # > 0: readings over the re-measure
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="source", type=Path, default=RESULTS / "anchor_tracking.json")
    ap.add_argument("--history", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--trials", type=int, default=4000)
    ap.add_argument("--name", default="typical_level", help="results file stem under benchmarks/results/")
    args = ap.parse_args()
    run = json.loads(args.source.read_text())
    sessions: list[list[float]] = run["sessions_ms"]
    anchors = sorted(s[-1] for s in sessions)
    slopes = [follow_slope(sessions, i) for i in range(len(sessions[0]) - 1)]
    rows = []
    for k in args.history:
        if k + 1 + REMEASURES > len(sessions):
            print(f"skipped history {k}: needs {k + 1 + REMEASURES} sessions, the run has {len(sessions)}")
            continue
        for name, level in LEVELS.items():
            rows.append({"history": k, "level": name, **summary(replay(sessions, level, k, args.trials, k))})
    host = run["host"]
    lines = [
        f"{host['cpu']} ({', '.join(host['isa'])}), {len(sessions)} sessions of {len(sessions[0]) - 1} students "
        f"and the anchor ({args.source.name}); {args.trials} trials per row, re-measure = median of {REMEASURES} sessions",
        f"the anchor's times (ms): min {anchors[0]:.2f}, quartiles "
        + ", ".join(f"{anchors[int(q * (len(anchors) - 1))]:.2f}" for q in (0.25, 0.5, 0.75))
        + f", max {anchors[-1]:.2f}",
        "the students' log time per log anchor time across sessions (1: they slow as the anchor does): "
        + ", ".join(f"{b:.2f}" for b in slopes),
        "",
        "| history sessions | level | readings within 10 % | median error | 90th pct error | bias |",
        "|---:|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['history']} | {r['level']} | {r['within_10pct']:.1%} | {r['median_abs_err']:.1%} | "
                     f"{r['p90_abs_err']:.1%} | {r['bias']:+.1%} |")  # fmt: skip
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "args": {**{k: str(v) for k, v in vars(args).items()}, "source": args.source.name},
        "host": host,
        "anchors_ms": anchors,
        "rows": rows,
    }
    write_text_atomic(RESULTS / f"{args.name}.json", json.dumps(out, indent=2) + "\n")
    write_text_atomic(RESULTS / f"{args.name}.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
