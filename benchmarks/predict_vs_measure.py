"""Does the latency table price different kinds of students alike? Predicted vs measured, one session.

    python benchmarks/predict_vs_measure.py                              # fresh table, QAT form
    python benchmarks/predict_vs_measure.py --cache ~/.cache/edgedistill # the table the search grew
    python benchmarks/predict_vs_measure.py --teacher digits-dcgan --random 20  # + 20 sampled candidates

The uniform-width ladder (7x7 stem/head, ConvTranspose) and a searched student (3x3 stem/head,
resize + conv) are predicted by the target's table, then measured whole, together, in interleaved
rounds (search/latency.py: measure_models), each round one session. What the table must get right
for the search to choose well is not one model's ratio measured/predicted (that moves with this
VM's speed from minute to minute) but that the ratios of one round agree: a table that prices one
kind of student 25 % apart from another chooses between them wrongly. A fresh table (the default:
a temporary cache) is built in one go; `--cache` reads one grown over a search's sessions.
`--random N` adds N candidates sampled from the teacher's search space (search/space.py: sample) and
reports how many land within ±10 % of their prediction (the latency model's target) in each round.
Writes benchmarks/results/predict_vs_measure.json and .md (another --teacher, --target, --no-qat,
--cache and --random add _TEACHER, _TARGET, _ptq, _given_cache and _randomN to the name); prints the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
from pathlib import Path

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.targets import get_target
from edgedistill.models.loading import load_generator
from edgedistill.runtime.hostinfo import host_info
from edgedistill.search import space as sp
from edgedistill.search.latency import measure_models, predict_many
from edgedistill.search.latency_compile import as_qat_export

RESULTS = Path(__file__).parent / "results"
# the student the search chose for ORT INT8 at half budget on a Zen3 (README)
SEARCHED = {"widths": [32, 64, 32, 16, 24], "upsample": "bilinear", "n_blocks": 2, "kernel": 3}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="photo-restore")
    ap.add_argument("--target", default="x86-onnxruntime")
    ap.add_argument("--widths", type=float, nargs="+", default=[0.1, 0.125, 0.15, 0.22])
    ap.add_argument("--cache", type=Path, help="the latency cache to read (default: a fresh one)")
    ap.add_argument("--no-qat", action="store_true", help="INT8 as calibration compiles it, not QAT")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--random", type=int, default=0, help="add this many candidates sampled from the space")
    ap.add_argument("--seed", type=int, default=0, help="the sampled candidates' seed")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    tgt = get_target(args.target, "int8")
    tgt = tgt if args.no_qat else as_qat_export(tgt)
    spec = load_generator(args.teacher).spec
    space = sp.space_for(spec)
    archs = {f"uniform {w:g}": sp.uniform_arch(space, w) for w in args.widths}
    if args.teacher == "photo-restore":
        archs["searched (Zen3 ORT half)"] = SEARCHED
    rng = random.Random(args.seed)
    while len(archs) < len(args.widths) + (args.teacher == "photo-restore") + args.random:
        arch = sp.sample(space, rng)
        archs.setdefault(f"sampled {sp.describe(arch)}", arch)
    models = [sp.build(spec, a) for a in archs.values()]
    size = tuple(spec.default_size or (256, 256))
    host = host_info(threads=args.threads)
    print(f"{host['cpu']} ({', '.join(host['isa'])}), {args.threads} threads, {tgt.name} int8")
    with tempfile.TemporaryDirectory() as fresh:
        os.environ["EDGEDISTILL_CACHE"] = str(args.cache or fresh)
        preds = predict_many(models, spec, tgt, "int8", size, threads=args.threads, progress=True)
        rounds = [
            measure_models(models, [spec] * len(models), tgt, "int8", size, threads=args.threads)
            for _ in range(args.rounds)
        ]
    rows = []
    for i, (name, p) in enumerate(zip(archs, preds, strict=True)):
        measured = [r[i] for r in rounds]
        rows.append({"student": name, "predicted_ms": round(p.ms, 3), "blocks_ms": round(p.blocks_ms, 3),
                     "measured_ms": [round(m, 3) for m in measured],
                     "ratio": [round(m / p.ms, 3) for m in measured]})  # fmt: skip
    spread = [max(r["ratio"][k] for r in rows) / min(r["ratio"][k] for r in rows) for k in range(args.rounds)]
    within = [sum(abs(r["ratio"][k] - 1) <= 0.1 for r in rows) / len(rows) for k in range(args.rounds)]
    lines = [
        f"{host['cpu']} ({', '.join(host['isa'])}), {args.threads} threads, {tgt.name} int8"
        f"{'' if args.no_qat else ' (QAT form)'}, table: {'given cache' if args.cache else 'fresh'}",
        "",
        "| student | predicted ms | measured ms per round | measured / predicted |",
        "|---|---:|---:|---:|",
        *(
            f"| {r['student']} | {r['predicted_ms']:.2f} | {' / '.join(f'{m:.2f}' for m in r['measured_ms'])} | "
            f"{' / '.join(f'{x:.2f}' for x in r['ratio'])} |"
            for r in rows
        ),
        "",
        f"within a round, largest / smallest ratio: {' / '.join(f'{x:.2f}' for x in spread)} "
        f"(median {statistics.median(spread):.2f}; 1.00 = every kind priced alike)",
        f"within ±10 % of the prediction, per round: {' / '.join(f'{x:.0%}' for x in within)} of {len(rows)}",
    ]
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    name = "predict_vs_measure"
    if args.teacher != "photo-restore":
        name += f"_{args.teacher}"
    if args.target != "x86-onnxruntime":
        name += f"_{args.target}"
    if args.no_qat:
        name += "_ptq"
    if args.cache:
        name += "_given_cache"
    if args.random:
        name += f"_random{args.random}"
    write_text_atomic(RESULTS / f"{name}.md", "\n".join(lines) + "\n")
    result = {"host": host, "target": tgt.name, "qat_form": not args.no_qat, "fresh_table": not args.cache,
              "rows": rows, "round_spread": spread, "within_10pct": within}  # fmt: skip
    write_text_atomic(RESULTS / f"{name}.json", json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
