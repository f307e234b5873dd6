"""Is a student's feature distance, in units of its teacher's, a property of the student or of the
held-out draw? Re-scores photo-restore runs on held-out sets of several sizes.

    python benchmarks/fd_stability.py runs/A runs/B runs/C                 # 512 and 2048 crops, ~5 min
    python benchmarks/fd_stability.py runs/* --counts 512 2048 4096

For each size N: N held-out crops (the distillation's own held-out set at its default 512), the teacher
and each run's student on them, the feature distance of each to the ground truth, and the ratio
student/teacher with its paired bootstrap interval (metrics/bootstrap.py: student, teacher and the
ground truth resampled together). If the ratio holds from 512 to 2048 crops and its interval is narrow,
seeds that differ by more than it differ as students. Writes benchmarks/results/fd_stability.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from edgedistill.core.atomic import write_text_atomic
from edgedistill.data.sources import make_source
from edgedistill.distiller.evaluate import run_batched
from edgedistill.metrics.bootstrap import frechet_distance, frechet_ratio_ci
from edgedistill.metrics.feature_distance import embed_all, load_feature_net
from edgedistill.models.loading import load_generator
from edgedistill.runtime.hostinfo import host_info

TEACHER = "photo-restore"
RESULTS = Path(__file__).parent / "results"


def score(runs: list[Path], count: int) -> dict:
    teacher = load_generator(TEACHER)
    fnet = load_feature_net(TEACHER)
    held = make_source(TEACHER, teacher.spec, None, 0, 64, eval_count=count).heldout()
    px = teacher.spec.to_pixels
    real = embed_all(fnet, px(held.real)).numpy()
    t_f = embed_all(fnet, px(run_batched(teacher.module.eval(), held))).numpy()
    fd_t = frechet_distance(real, t_f)
    out = {"crops": count, "fd_teacher": round(fd_t, 3), "students": {}}
    for run in runs:
        s_f = embed_all(fnet, px(run_batched(load_generator(str(run)).module.eval(), held))).numpy()
        fd_s = frechet_distance(real, s_f)
        ci = frechet_ratio_ci(real, s_f, t_f, paired_real=True)
        out["students"][run.name] = {"fd": round(fd_s, 3), "ratio": round(fd_s / fd_t, 3),
                                     "ratio_ci": [round(v, 3) for v in ci]}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run directories of photo-restore students")
    ap.add_argument("--counts", nargs="+", type=int, default=[512, 2048])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="fd_stability")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    host = host_info(args.threads)
    print(f"CPU: {host['cpu']} ({', '.join(host['isa'])}), {args.threads} threads", flush=True)
    rows = []
    for count in args.counts:
        t0 = time.perf_counter()
        rows.append(score(args.runs, count))
        print(f"{count} crops: {time.perf_counter() - t0:.0f} s", flush=True)
    lines = ["| run | " + " | ".join(f"FD ratio, {r['crops']} crops [95 % CI]" for r in rows) + " |",
             "|---|" + "---|" * len(rows)]  # fmt: skip
    for run in args.runs:
        cells = [rows[i]["students"][run.name] for i in range(len(rows))]
        lines.append(
            f"| {run.name} | "
            + " | ".join(f"{c['ratio']} [{c['ratio_ci'][0]}, {c['ratio_ci'][1]}]" for c in cells)
            + " |"
        )
    lines.append("| teacher's FD | " + " | ".join(str(r["fd_teacher"]) for r in rows) + " |")
    text = f"CPU: {host['cpu']} ({', '.join(host['isa'])})\n\n" + "\n".join(lines)
    print(text)
    write_text_atomic(
        RESULTS / f"{args.name}.json", json.dumps({"host": host, "rows": rows}, indent=1) + "\n"
    )
    write_text_atomic(RESULTS / f"{args.name}.md", text + "\n")


if __name__ == "__main__":
    main()
