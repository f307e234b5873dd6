"""What each element of the distillation recipe buys: the full recipe, then one element off at a time.

    python benchmarks/distill_ablation.py                                   # both teachers, 3 seeds
    python benchmarks/distill_ablation.py --teachers digits-dcgan --seeds 0 --steps 300
    python benchmarks/distill_ablation.py --device cuda --jobs 8            # many runs at once on a GPU
    python benchmarks/distill_ablation.py --summarise a.jsonl b.jsonl       # the report from `--rows` files

Variants (the defaults of `edgedistill distill` are the full recipe):
  full             inherited init + pixel KD + feature KD (noise kinds) + adversarial (teacher's D) + ground truth
                   (paired data) + D-feature matching + colour (cell-mean) KD + refreshed teacher cache
                   + best validated EMA + colour-augmented training crops + frozen BatchNorm (photos)
  no-inherit       the student starts from scratch instead of the teacher's strongest channels
  no-pixel, no-feature, no-adversarial, no-gt, no-dfeat, no-colour   that loss weight set to 0
  with-feature     feature KD on (off by default for image generators)
  no-refresh       a fixed pool of cached teacher outputs (the recipe before #12)
  no-colour-aug    training crops in their own colours (data/colour_aug.py off)
  hue-aug          colour augmentation with hue turns on top of the RGB order
  batch-bn         BatchNorm by batch statistics while training (distiller/batchnorm.py; photos)
  no-best          the last EMA weights instead of the best validated ones
  no-teacher       GAN + ground truth from scratch: the student trained as the teacher was

Every run is scored on the same held-out set (photos: 512 crops; digits: 10k samples) with 95 %
bootstrap intervals; a row gives the mean ± std over seeds and how much better the full recipe did.
Writes benchmarks/results/distill_ablation.json and .md, and one sample grid per teacher
(distill_ablation_TEACHER.jpg: held-out inputs, the teacher, then each variant's first seed), since
a mean hides a colour cast that one look shows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
METRICS = (
    "psnr_vs_teacher", "ssim_vs_teacher", "psnr_vs_target", "teacher_psnr_vs_target", "feature_distance",
    "feature_distance_teacher", "max_channel_shift_pct", "macs_ratio", "wall_s",
)  # fmt: skip


def variants(kind: str) -> dict[str, dict]:
    image = kind == "image"
    out: dict[str, dict] = {
        "full": {},
        "no-inherit": {"init": "scratch"},
        "no-pixel": {"lambda_pix": 0.0},
        # feature KD is off by default for image generators (measured): the variant turns it on there
        **({"with-feature": {"lambda_feat": 1.0}} if image else {"no-feature": {"lambda_feat": 0.0}}),
        "no-adversarial": {"lambda_adv": 0.0},
        "no-refresh": {"cache_refresh": 0},
        "no-best": {"val_every": 0},
    }
    if image:  # ground truth and D-feature matching exist for paired image data
        out["no-gt"] = {"lambda_gt": 0.0}
        out["no-dfeat"] = {"lambda_dfeat": 0.0}
        out["no-colour"] = {"lambda_colour": 0.0}
        out["no-colour-aug"] = {"colour_aug": "none"}
        out["hue-aug"] = {"colour_aug": "hue"}
        out["batch-bn"] = {"bn_stats": "batch"}
    out["no-teacher"] = {
        "init": "scratch", "lambda_pix": 0.0, "lambda_feat": 0.0, "lambda_dfeat": 0.0, "lambda_colour": 0.0,
        "lambda_adv": 1.0,
        "lambda_gt": 10.0 if image else 0.0, "d_from_teacher": False,
    }  # fmt: skip
    return out


def one_run(args: argparse.Namespace) -> None:
    """A single (teacher, variant, seed) run in this process; prints its metrics as one JSON line."""
    from edgedistill.distiller.api import distill
    from edgedistill.distiller.config import DistillConfig
    from edgedistill.models.loading import load_generator

    kind = load_generator(args.teacher).spec.kind
    opts = {**variants(kind), **arch_variants(args.archs)}[args.variant]
    out = _run_dir(args.work, args.teacher, args.variant, args.seed)
    shutil.rmtree(out, ignore_errors=True)
    cfg = DistillConfig(
        teacher=args.teacher, out=str(out), width=args.width, steps=args.steps, batch=args.batch,
        cache=args.cache, seed=args.seed, threads=args.threads, sample_every=args.steps,
        checkpoint_every=max(args.steps // 4, 1), device=args.device, eval_samples=args.eval_samples, **opts,
    )  # fmt: skip
    t0 = time.perf_counter()
    distill(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    row = {"teacher": args.teacher, "variant": args.variant, "seed": args.seed, **metrics}
    row.update(width=args.width, batch=args.batch, cache=args.cache, threads=args.threads, run_dir=str(out))
    row["total_s"] = round(time.perf_counter() - t0, 1)
    print("ROW " + json.dumps(row), flush=True)


def arch_variants(archs: list[str] | None) -> dict[str, dict]:
    """`--archs NAME=JSON ...`: the full recipe on other student architectures (per-stage widths)."""
    out = {}
    for item in archs or []:
        name, _, spec = item.partition("=")
        out[f"full@{name}"] = {"arch": json.loads(spec)}
    return out


def _slug(label: str) -> str:
    return label.replace("-", "_").replace("@", "_at_")


def _run_dir(work: str, teacher: str, variant: str, seed: int) -> Path:
    return Path(work) / teacher / _slug(variant) / f"seed{seed}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teachers", nargs="+", default=["photo-restore", "digits-dcgan"])
    ap.add_argument(
        "--width", type=float, default=0.22, help="0.22: ngf 64 -> 14, 18.6x fewer MACs on photo-restore"
    )
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cache", type=int, default=384, help="teacher outputs precomputed for N inputs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--eval-samples", type=int, default=None, help="held-out samples (default 512 photos, 10k digits)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (a GPU takes several)")
    ap.add_argument("--only", nargs="*", help="variant labels to run, e.g. full no-gt")
    ap.add_argument(
        "--archs",
        nargs="*",
        help='extra architectures: NAME=\'{"widths": [12, 24, 44, 24, 12], "n_blocks": 3}\'',
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--work", default=None, help="run directories (default: OUT/ablation_runs)")
    ap.add_argument("--rows", type=Path, default=None, help="append each run's row to this JSONL as it ends")
    ap.add_argument(
        "--summarise",
        nargs="+",
        type=Path,
        metavar="ROWS",
        help="no runs: the report from --rows JSONL files",
    )
    ap.add_argument("--one", nargs=3, metavar=("TEACHER", "VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.work = args.work or str(args.out / "ablation_runs")
    if args.one:
        args.teacher, args.variant, args.seed = args.one[0], args.one[1], int(args.one[2])
        one_run(args)
        return
    if args.summarise:
        rows = [
            json.loads(line) for f in args.summarise for line in f.read_text().splitlines() if line.strip()
        ]
    else:
        rows = run_all(args)
    report = summarise(args, rows)
    from edgedistill.core.atomic import write_text_atomic

    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "distill_ablation.json", json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    write_text_atomic(args.out / "distill_ablation.md", table)
    print(table)
    for teacher in report["settings"]:
        runs: dict[str, Path] = {}
        for r in sorted((r for r in rows if r["teacher"] == teacher), key=lambda r: r["seed"]):
            run = Path(r.get("run_dir") or _run_dir(args.work, teacher, r["variant"], r["seed"]))
            if r["variant"] not in runs and (run / "model.json").is_file():  # rows may come without their run
                runs[r["variant"]] = run
        png = sample_grid(teacher, runs, args.out / f"distill_ablation_{teacher}.jpg")
        print(f"sample grid: {png}")


def run_all(args: argparse.Namespace) -> list[dict]:
    """Every (teacher, variant, seed) as its own process, `--jobs` at a time."""
    from edgedistill.models.loading import load_generator

    todo = []
    for teacher in args.teachers:
        kind = load_generator(teacher).spec.kind
        labels = list(variants(kind)) + (list(arch_variants(args.archs)) if kind == "image" else [])
        for label in labels:
            if not args.only or label in args.only or label.startswith("full@"):
                todo += [(teacher, label, seed) for seed in args.seeds]
    base = [sys.executable, __file__, "--width", str(args.width), "--steps", str(args.steps), "--batch",
            str(args.batch), "--cache", str(args.cache), "--threads", str(args.threads), "--device", args.device,
            "--work", args.work, *(["--eval-samples", str(args.eval_samples)] if args.eval_samples else []),
            *(["--archs", *args.archs] if args.archs else [])]  # fmt: skip
    rows, running = [], []
    while todo or running:
        while todo and len(running) < args.jobs:
            teacher, label, seed = todo.pop(0)
            cmd = [*base, "--one", teacher, label, str(seed)]
            log = Path(args.work) / f"{teacher}_{_slug(label)}_seed{seed}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
            proc.log = log  # type: ignore[attr-defined]
            running.append(proc)
        for proc in list(running):
            if proc.poll() is None:
                continue
            running.remove(proc)
            out = proc.stdout.read() if proc.stdout else ""
            got = [json.loads(line[4:]) for line in out.splitlines() if line.startswith("ROW ")]
            if proc.returncode or not got:
                tail = proc.log.read_text(errors="replace")[-600:]  # type: ignore[attr-defined]
                print(f"failed ({proc.returncode}): {' '.join(proc.args[-3:])}\n{tail}", flush=True)
                continue
            rows += got
            print(
                json.dumps({k: got[0].get(k) for k in ("teacher", "variant", "seed", *METRICS)}), flush=True
            )
            if args.rows:
                with args.rows.open("a") as f:
                    f.write(json.dumps(got[0]) + "\n")
        time.sleep(0.5)
    return rows


def summarise(args: argparse.Namespace, rows: list[dict]) -> dict:
    from edgedistill.runtime.hostinfo import host_info

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["teacher"], r["variant"]), []).append(r)
    import torch

    summary = []
    for (teacher, variant), rs in groups.items():
        entry: dict = {"teacher": teacher, "variant": variant, "seeds": sorted(r["seed"] for r in rs)}
        for key in METRICS:
            values = [r[key] for r in rs if isinstance(r.get(key), int | float)]
            if values:
                entry[key] = round(statistics.fmean(values), 3)
                entry[key + "_std"] = round(statistics.stdev(values), 3) if len(values) > 1 else 0.0
        summary.append(entry)
    for entry in summary:  # how much better the full recipe is than the variant, paired seed by seed
        full = {r["seed"]: r for r in groups.get((entry["teacher"], "full"), [])}
        for key, sign in (("psnr_vs_teacher", 1), ("psnr_vs_target", 1), ("feature_distance", -1)):
            diffs = [sign * (full[r["seed"]][key] - r[key]) for r in groups[(entry["teacher"], entry["variant"])]
                     if r["seed"] in full and key in r and key in full[r["seed"]]]  # fmt: skip
            if diffs and entry["variant"] != "full":
                entry["full_gain_" + key] = round(statistics.fmean(diffs), 3)
    settings = {}
    for r in rows:  # the run settings per teacher (rows written before they carried them: the CLI's)
        settings.setdefault(r["teacher"], {
            "width": r.get("width", args.width), "steps": r.get("steps", args.steps),
            "batch": r.get("batch", args.batch), "cache": r.get("cache", args.cache),
            "threads": r.get("threads", args.threads), "macs_ratio": r.get("macs_ratio"),
        })  # fmt: skip
    return {
        "host": host_info(args.threads),
        "device": torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and args.device != "cpu"
        else "cpu",
        "seeds": sorted({r["seed"] for r in rows}),
        "settings": settings,
        "summary": summary,
        "rows": [{k: v for k, v in r.items() if k != "run_dir"} for r in rows],  # where it ran is no evidence
    }


def markdown(report: dict) -> str:
    host = report["host"]
    lines = [
        f"seeds {report['seeds']} (mean ± std; Δ: how much better the full recipe is than the variant, "
        f"paired seed by seed: + dB, or − feature distance, in its favour); device {report['device']}; {host.get('cpu', '?')} ({', '.join(host.get('isa', []))})",
    ]
    for teacher, st in report["settings"].items():
        lines += [
            "",
            f"**{teacher}**: width {st['width']} ({st['macs_ratio']}× fewer MACs), {st['steps']} steps, batch "
            f"{st['batch']}, teacher cache {st['cache']}, {st['threads']} thread(s) per run",
            "",
            "| variant | PSNR vs teacher | Δ | PSNR vs GT (teacher's) | Δ | feature distance (teacher's) "
            "| Δ | max colour shift % | train s |",
            "|---|---|---:|---|---:|---|---:|---|---:|",
        ]
        for r in (r for r in report["summary"] if r["teacher"] == teacher):

            def pm(key: str, r: dict = r) -> str:
                return f"{r[key]:.2f} ± {r[key + '_std']:.2f}" if key in r else "-"

            def delta(key: str, r: dict = r) -> str:
                return f"{r['full_gain_' + key]:+.2f}" if "full_gain_" + key in r else ""

            gt = (
                f"{pm('psnr_vs_target')} ({r['teacher_psnr_vs_target']:.2f})"
                if "psnr_vs_target" in r
                else "-"
            )
            fd = f"{pm('feature_distance')} ({r.get('feature_distance_teacher', '-')})"
            lines.append(
                f"| {r['variant']} | {pm('psnr_vs_teacher')} | {delta('psnr_vs_teacher')} | {gt} "
                f"| {delta('psnr_vs_target')} | {fd} | {delta('feature_distance')} "
                f"| {pm('max_channel_shift_pct')} | {round(r['wall_s']) if 'wall_s' in r else '-'} |"
            )
    return "\n".join(lines) + "\n"


def sample_grid(teacher: str, runs: dict[str, Path], path: Path, count: int = 4) -> Path:
    """Held-out inputs, the teacher's outputs, then each run's student, one labelled row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from edgedistill.core.atomic import write_atomic
    from edgedistill.core.quality import to_unit
    from edgedistill.data.heldout import heldout_arrays
    from edgedistill.models.loading import load_generator

    loaded = load_generator(teacher)
    spec = loaded.spec
    arrays = heldout_arrays(teacher, spec, (128, 128) if spec.kind == "image" else None, count)
    inputs = tuple(torch.from_numpy(arrays[i.name]) for i in spec.inputs)

    @torch.no_grad()
    def pixels(net: torch.nn.Module) -> np.ndarray:
        return spec.to_pixels(net.eval()(*inputs)).numpy()

    rows = [("teacher", pixels(loaded.module))]
    if spec.kind == "image":
        x = arrays[spec.inputs[0].name][:, : spec.image_channels]
        rows.insert(0, ("input", to_unit(x, spec.input_range)))
    rows += [(label, pixels(load_generator(run).module)) for label, run in runs.items()]
    fig, axes = plt.subplots(len(rows), count, figsize=(1.4 * count + 1.3, 1.4 * len(rows)), squeeze=False)
    for axs, (label, images) in zip(axes, rows, strict=True):
        for ax, img in zip(axs, images, strict=False):
            img = np.clip(img.transpose(1, 2, 0), 0, 1)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axs[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, dpi=110, format="jpeg", pil_kwargs={"quality": 88}))
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
