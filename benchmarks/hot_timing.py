"""Interleaved timing vs a model timed alone: must a short model's timed call follow one of its own?

    python benchmarks/hot_timing.py                          # digits DCGAN: 4 uniform + 12 sampled
    python benchmarks/hot_timing.py --teacher photo-restore --random 2

An app calls its one model again and again. The search times many models interleaved in one session
(search/latency.py: time_compiled), each call right after another model's. Each model here is timed
three ways, round after round: alone (its own session), interleaved as they come ("none"), and
interleaved with an untimed call of its own right before each timed one ("all"); printed is each
interleaved time over the same round's alone time. Writes benchmarks/results/hot_timing_TEACHER.json
and .md; prints the CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.targets import get_target
from edgedistill.models.loading import load_generator
from edgedistill.runtime.hostinfo import host_info
from edgedistill.search import space as sp
from edgedistill.search.latency import _size, compile_whole, time_compiled
from edgedistill.search.latency_compile import as_qat_export

RESULTS = Path(__file__).parent / "results"
UNIFORM = {"digits-dcgan": (0.1, 0.2, 0.3, 0.5), "photo-restore": (0.1, 0.15, 0.22)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="digits-dcgan", choices=sorted(UNIFORM))
    ap.add_argument("--random", type=int, default=12, help="candidates sampled from the search space")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    tgt = as_qat_export(get_target("x86-onnxruntime", "int8"))
    spec = load_generator(args.teacher).spec
    space = sp.space_for(spec)
    rng = random.Random(0)
    archs = [sp.uniform_arch(space, w) for w in UNIFORM[args.teacher]]
    archs += [sp.sample(space, rng) for _ in range(args.random)]
    host = host_info(threads=args.threads)
    print(f"{host['cpu']} ({', '.join(host['isa'])}), {args.threads} threads, {tgt.name} int8 (QAT form)")
    rounds = []
    with tempfile.TemporaryDirectory() as work:
        dirs = [
            compile_whole(sp.build(spec, a), spec, tgt, _size(spec, tgt, None), Path(work) / f"m{i}")
            for i, a in enumerate(archs)
        ]
        for _ in range(args.rounds):
            alone = [
                time_compiled([d], tgt, threads=args.threads, min_time=0.3, settle="none")[0] for d in dirs
            ]
            both = {
                s: time_compiled(dirs, tgt, threads=args.threads, min_time=1.5, settle=s)
                for s in ("none", "all")
            }
            rounds.append({"alone": alone, **both})
    rows = []
    for k, r in enumerate(rounds):
        for s in ("none", "all"):
            ratio = [x / a for x, a in zip(r[s], r["alone"], strict=True)]
            rows.append({"round": k, "settle": s, "median": statistics.median(ratio),
                         "min": min(ratio), "max": max(ratio)})  # fmt: skip
    lines = [
        f"{host['cpu']} ({', '.join(host['isa'])}), {args.threads} threads, {tgt.name} int8 (QAT form), "
        f"{args.teacher}: {len(archs)} models, alone {min(rounds[0]['alone']):.2f}-{max(rounds[0]['alone']):.2f} ms",
        "",
        "| round | interleaved | interleaved / alone: median | min | max |",
        "|---:|---|---:|---:|---:|",
        *(
            f"| {r['round']} | {'settled (an untimed call first)' if r['settle'] == 'all' else 'as they come'} | "
            f"{r['median']:.2f} | {r['min']:.2f} | {r['max']:.2f} |"
            for r in rows
        ),
    ]
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    name = f"hot_timing_{args.teacher}"
    write_text_atomic(RESULTS / f"{name}.md", "\n".join(lines) + "\n")
    result = {"host": host, "teacher": args.teacher, "archs": archs, "rounds": rounds, "rows": rows}
    write_text_atomic(RESULTS / f"{name}.json", json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
