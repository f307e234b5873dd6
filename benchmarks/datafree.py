"""Data-free distillation of the embedded classifiers (issue 14): how close a student gets to the
teacher, and to KD with real data, without ever seeing a training image.

    python benchmarks/datafree.py                      # both teachers, 3 seeds, parallel jobs
    python benchmarks/datafree.py --seeds 1 --jobs 2   # a quick pass on 2 cores

For each embedded classifier (digits-classifier, shapes-classifier): the teacher's held-out top-1;
a student of the same slimmed family trained from scratch on the train split; KD with the train
split; DAFL; DFAD; the best data-free method — each over seeds, mean ± std, with training time and
the MACs ratio. Every job runs single-threaded (torch.set_num_threads(1)) in its own process, so
times are per core and jobs can run side by side. Writes benchmarks/results/datafree.json + .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).parent / "results"

# Steps per teacher and method (a DFAD or replay step is `student_steps` student updates + 1 generator update).
PLAN: dict[str, dict[str, dict[str, Any]]] = {
    "digits-classifier": {
        "scratch": {"steps": 2000},
        "kd": {"steps": 2000},
        "dafl": {"steps": 2000},
        "dfad": {"steps": 400},
        "replay": {"steps": 400},
    },
    "shapes-classifier": {
        "scratch": {"steps": 3000},
        "kd": {"steps": 3000},
        "dafl": {"steps": 3000},
        "dfad": {"steps": 600},
        "replay": {"steps": 2400},
    },
}
DATA_FREE = ("replay", "dafl", "dfad")
STUDENT_STEPS = {"dfad": 5, "replay": 10}  # student updates per step (the default options)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One (teacher, method, seed, options) training + held-out evaluation, single-threaded."""
    import torch
    from rich.console import Console

    torch.set_num_threads(1)
    from edgedistill.datafree import datasets
    from edgedistill.datafree.api import distill_classifier
    from edgedistill.datafree.student import make_student
    from edgedistill.datafree.supervised import accuracy, predict, train_supervised
    from edgedistill.models.loading import load_generator

    teacher, method, seed, opts = job["teacher"], job["method"], job["seed"], dict(job["options"])
    t0 = time.perf_counter()
    if method == "scratch":
        loaded = load_generator(teacher)
        spec = loaded.spec
        torch.manual_seed(seed)
        student, _ = make_student(loaded.module, spec, opts.pop("width", None))
        x, y = datasets.real_images(None, spec, "train")  # type: ignore[misc]
        train_supervised(
            student, x, y, opts["steps"], flip=spec.provenance.get("dataset") == "shapes", seed=seed
        )
        seconds = time.perf_counter() - t0
        xh, yh = datasets.real_images(None, spec, "heldout")  # type: ignore[misc]
        agree = float((predict(student, xh).argmax(1) == predict(loaded.module, xh).argmax(1)).float().mean())
        row = {"student_top1": accuracy(student, xh, yh), "agreement_with_teacher": agree}
        row["teacher_top1"] = accuracy(loaded.module, xh, yh)
        from edgedistill.datafree.evaluate import complexity

        row["macs_ratio"] = complexity(student, loaded.module, spec)["macs_ratio"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data = "builtin" if method == "kd" else None
            spec = load_generator(teacher).spec
            r = distill_classifier(
                teacher,
                Path(tmp) / "run",
                method=method,
                data=spec.provenance.get("dataset") if data else None,
                seed=seed,
                console=Console(stderr=True, quiet=True),
                **opts,
            )
            row = {
                k: v
                for k, v in r.metrics.items()
                if not isinstance(v, list) or k == "synthetic_class_histogram"
            }
        seconds = r.metrics["train_seconds"]  # the training loop alone, as for scratch
    return {**job, **row, "seconds": round(seconds, 1)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per teacher and method label: mean ± std of top-1 and agreement, mean time."""
    out: dict[str, Any] = {}
    for r in rows:
        key = r.get("label") or r["method"]
        out.setdefault(r["teacher"], {}).setdefault(key, []).append(r)
    table: dict[str, Any] = {}
    for teacher, methods in out.items():
        table[teacher] = {}
        for label, rs in methods.items():
            accs = [100 * r["student_top1"] for r in rs]
            agr = [100 * r["agreement_with_teacher"] for r in rs]
            table[teacher][label] = {
                "method": rs[0]["method"],
                "options": rs[0]["options"],
                "seeds": [r["seed"] for r in rs],
                "top1_mean": round(statistics.mean(accs), 2),
                "top1_std": round(statistics.stdev(accs), 2) if len(accs) > 1 else 0.0,
                "agreement_mean": round(statistics.mean(agr), 2),
                "seconds_mean": round(statistics.mean(r["seconds"] for r in rs), 1),
                "teacher_top1": round(100 * rs[0]["teacher_top1"], 2),
                "macs_ratio": rs[0].get("macs_ratio"),
                "per_seed_top1": [round(a, 2) for a in accs],
            }
        free = {k: v for k, v in table[teacher].items() if v["method"] in DATA_FREE}
        if free:
            best = max(free, key=lambda k: free[k]["top1_mean"])
            table[teacher]["best data-free"] = {**free[best], "which": best}
    return table


def markdown(table: dict[str, Any], host: dict[str, Any], jobs: int) -> str:
    lines = [
        f"CPU: {host['cpu']} ({', '.join(host['isa'])}); each job single-threaded, {jobs} side by side.",
        "",
        "| teacher | student | top-1 % (mean ± std) | agreement w/ teacher % | gap to teacher | gap to KD w/ data | MACs ratio | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for teacher, methods in table.items():
        kd = methods.get("kd", {}).get("top1_mean")
        first = next(iter(methods.values()))
        lines.append(f"| {teacher} | teacher | {first['teacher_top1']:.2f} | – | – | – | 1 | – |")
        for label, m in methods.items():
            name = f"{label} ({m['which']})" if label == "best data-free" else label
            gap_kd = f"{m['top1_mean'] - kd:+.2f}" if kd is not None and m["method"] in DATA_FREE else "–"
            lines.append(
                f"| {teacher} | {name} | {m['top1_mean']:.2f} ± {m['top1_std']:.2f} (n={len(m['seeds'])}) | "
                f"{m['agreement_mean']:.2f} | {m['top1_mean'] - m['teacher_top1']:+.2f} | {gap_kd} | "
                f"{m['macs_ratio'] or '–'} | {m['seconds_mean']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teachers", nargs="*", default=list(PLAN))
    ap.add_argument("--methods", nargs="*", default=["scratch", "kd", *DATA_FREE])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed+seeds-1")
    ap.add_argument("--jobs", type=int, default=2, help="processes side by side (each one thread)")
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiply every step count (quick passes)")
    ap.add_argument(
        "--variants", help='JSON {"label": {"teacher":..,"method":..,"options":{..}}} to add (sweeps)'
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "datafree")
    args = ap.parse_args()
    from edgedistill.runtime.hostinfo import host_info

    jobs: list[dict[str, Any]] = []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for teacher in args.teachers:
        for method in args.methods:
            opts = dict(PLAN[teacher][method])
            opts["steps"] = max(1, int(opts["steps"] * args.steps_scale))
            jobs += [{"teacher": teacher, "method": method, "seed": s, "options": opts} for s in seeds]
    for label, v in json.loads(args.variants or "{}").items():
        jobs += [{"label": label, "seed": s, **v} for s in seeds]
    jobs.sort(  # long ones first
        key=lambda j: (
            -j["options"]["steps"] * j["options"].get("student_steps", STUDENT_STEPS.get(j["method"], 1))
        )
    )
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for done in as_completed([pool.submit(run_job, j) for j in jobs]):
            row = done.result()
            rows.append(row)
            print(
                json.dumps(
                    {k: row.get(k) for k in ("teacher", "label", "method", "seed", "student_top1", "seconds")}
                ),
                flush=True,
            )
    table = summarise(rows)
    host = host_info(1)
    result = {"host": host, "jobs": args.jobs, "seeds": args.seeds, "steps_scale": args.steps_scale,
              "wall_seconds": round(time.time() - t0, 1), "table": table, "rows": rows}  # fmt: skip
    md = markdown(table, host, args.jobs)
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from edgedistill.core.atomic import write_text_atomic

    write_text_atomic(args.out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    write_text_atomic(args.out.with_suffix(".md"), md)


if __name__ == "__main__":
    main()
