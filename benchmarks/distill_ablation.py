"""Which distillation ingredient matters? Same teacher, width, steps and seed; one ingredient at a time.

    python benchmarks/distill_ablation.py                       # both embedded teachers
    python benchmarks/distill_ablation.py --teachers digits-dcgan --steps 300

  (a) scratch  : student from scratch on the data alone, no teacher: adversarial (+ L1 to the
                 ground truth when the data is paired, as the teacher itself was trained)
  (b) pix      : pixel KD only (scratch init)
  (c) pix+feat : pixel + feature KD (scratch init)
  (d) full     : pixel + feature KD + adversarial, student inherits the teacher's strongest channels
  (e) full-scratch : (d) without the inherited init, to separate init from losses

Writes benchmarks/results/distill_ablation.json and .md (a markdown table for README).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from edgedistill.core.atomic import write_text_atomic
from edgedistill.distiller.api import distill
from edgedistill.distiller.config import DEFAULT_WEIGHTS, DistillConfig
from edgedistill.models.loading import load_generator

RESULTS = Path(__file__).parent / "results"


def variants(kind: str) -> dict[str, dict]:
    w = DEFAULT_WEIGHTS[kind]
    return {
        # no teacher: the student trained on the data as the teacher was (GAN, + L1 to targets when paired)
        "(a) scratch, GAN + data": {
            "init": "scratch",
            "lambda_pix": 0.0,
            "lambda_feat": 0.0,
            "lambda_adv": 1.0,
            "lambda_gt": w["lambda_pix"] if kind == "image" else 0.0,
            "d_from_teacher": False,
        },
        "(b) pixel KD": {
            "init": "scratch",
            "lambda_pix": w["lambda_pix"],
            "lambda_feat": 0.0,
            "lambda_adv": 0.0,
        },
        "(c) pixel + feature KD": {
            "init": "scratch",
            "lambda_pix": w["lambda_pix"],
            "lambda_feat": w["lambda_feat"],
            "lambda_adv": 0.0,
        },
        "(d) full (inherit)": {"init": "inherit", **w},
        "(e) full, scratch init": {"init": "scratch", **w},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teachers", nargs="+", default=["photo-restore", "digits-dcgan"])
    ap.add_argument(
        "--width", type=float, default=0.22, help="0.22: ngf 64 -> 14, >= 16x fewer MACs on photo-restore"
    )
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cache", type=int, default=1024, help="teacher outputs precomputed for N inputs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="variant letters to run, e.g. a d")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.out / "ablation_runs"
    rows = []
    for teacher in args.teachers:
        kind = load_generator(teacher).spec.kind
        for label, opts in variants(kind).items():
            if args.only and label[1] not in args.only:
                continue
            out = work / teacher / label[1]
            shutil.rmtree(out, ignore_errors=True)
            cfg = DistillConfig(
                teacher=teacher, out=str(out), width=args.width, steps=args.steps, batch=args.batch,
                cache=args.cache, seed=args.seed, threads=args.threads, sample_every=args.steps,
                checkpoint_every=max(args.steps // 4, 1), **opts,
            )  # fmt: skip
            t0 = time.perf_counter()
            distill(cfg)
            metrics = json.loads((out / "metrics.json").read_text())
            rows.append(
                {
                    "teacher": teacher,
                    "variant": label,
                    **opts,
                    **metrics,
                    "total_s": round(time.perf_counter() - t0, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "width": args.width, "steps": args.steps, "batch": args.batch, "cache": args.cache, "seed": args.seed,
        "rows": rows,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "distill_ablation.json", json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    write_text_atomic(args.out / "distill_ablation.md", table)
    print(table)


def markdown(report: dict) -> str:
    lines = [
        f"width {report['width']}, {report['steps']} steps, batch {report['batch']}, seed {report['seed']}, "
        f"teacher cache {report['cache']}; {report['machine']}",
        "",
        "| teacher | variant | PSNR vs teacher (dB) | SSIM vs teacher | feature distance (teacher's) | MACs teacher/student | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        fd = f"{r.get('feature_distance', '-')} ({r.get('feature_distance_teacher', '-')})"
        lines.append(
            f"| {r['teacher']} | {r['variant']} | {r['psnr_vs_teacher']} | {r['ssim_vs_teacher']} | {fd} "
            f"| {r['macs_ratio']}x | {r['wall_s']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
