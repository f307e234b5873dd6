"""Do the students meet the targets of "students worth shipping"? Reads run directories' metrics.json
(what `edgedistill distill` writes: held-out scores with bootstrap intervals) and checks each against
its teacher's targets; prints a table and writes JSON.

    python benchmarks/student_targets.py runs/p43 runs/digits ...      # run dirs or metrics.json files
    python benchmarks/student_targets.py --keep benchmarks/results/students runs/*   # also copy them here

Targets, per MACs ratio: photo-restore at ≥ 40x: PSNR vs ground truth ≥ the teacher's − 0.3 dB and
feature distance ≤ 1.5x the teacher's; at ~19x: feature distance ≤ 1.1x and mean channel shift vs the
teacher ≤ 1 % of range; digits-dcgan at ≥ 20x: feature distance ≤ 1.2x. Each run's config.json (next to
its metrics) says how it was trained; the table shows steps, learning rate, device and wall time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def checks(m: dict[str, Any], teacher: str) -> dict[str, bool]:
    """The targets that apply to this run, each pass/fail."""
    fd_ratio = m["feature_distance"] / m["feature_distance_teacher"]
    ratio = m["macs_ratio"]
    out: dict[str, bool] = {}
    if teacher == "photo-restore" and ratio >= 40:
        out["psnr_gt >= teacher - 0.3"] = m["psnr_vs_target"] >= m["teacher_psnr_vs_target"] - 0.3
        out["fd <= 1.5x"] = fd_ratio <= 1.5
    elif teacher == "photo-restore":
        out["fd <= 1.1x"] = fd_ratio <= 1.1
        out["shift <= 1 %"] = m["max_channel_shift_pct"] <= 1.0
    elif teacher == "digits-dcgan" and ratio >= 20:
        out["fd <= 1.2x"] = fd_ratio <= 1.2
    return out


def load(path: Path) -> dict[str, Any]:
    """A run directory's metrics with its config under "config", or a file `keep` wrote."""
    if not path.is_dir():
        return json.loads(path.read_text())
    doc = json.loads((path / "metrics.json").read_text())
    if (path / "config.json").exists():
        doc["config"] = json.loads((path / "config.json").read_text())
        doc["config"]["out"] = f"runs/{path.name}"  # where it ran is no evidence, and an absolute path leaks
    return doc


def row(path: Path) -> dict[str, Any]:
    m = load(path)
    cfg = m.get("config", {})
    teacher = cfg.get("teacher", "?")
    return {
        "run": path.name if path.is_dir() else path.stem,
        "teacher": teacher,
        "macs_ratio": m["macs_ratio"],
        "steps": m["steps"],
        "lr": cfg.get("lr"),
        "seed": cfg.get("seed"),
        "device": m.get("device", cfg.get("device")),
        "wall_s": m.get("wall_s"),
        "psnr_vs_teacher": m["psnr_vs_teacher"],
        "psnr_vs_target": m.get("psnr_vs_target"),
        "teacher_psnr_vs_target": m.get("teacher_psnr_vs_target"),
        "fd": round(m["feature_distance"], 2),
        "fd_teacher": round(m["feature_distance_teacher"], 2),
        "fd_ratio": round(m["feature_distance"] / m["feature_distance_teacher"], 3),
        # student and teacher resampled together (runs evaluated before it was kept have none)
        "fd_ratio_ci": [round(v, 3) for v in m["feature_distance_ratio_ci"]]
        if "feature_distance_ratio_ci" in m
        else None,
        "max_shift_pct": m.get("max_channel_shift_pct"),
        "checks": checks(m, teacher),
    }


def keep(path: Path, into: Path) -> None:
    """Copy a run's metrics + config into one JSON (`into/NAME.json`): the evidence, without weights."""
    into.mkdir(parents=True, exist_ok=True)
    (into / f"{path.name}.json").write_text(json.dumps(load(path), indent=1) + "\n")


def _interval(ci: list[float] | None) -> str:
    return f" [{ci[0]}, {ci[1]}]" if ci else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--keep", type=Path, help="also copy each run's metrics + config here")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "student_targets.json")
    args = ap.parse_args()
    rows = []
    for p in args.runs:
        if args.keep and p.is_dir():
            keep(p, args.keep)
        rows.append(row(p))
    head = "| run | teacher | MACs ÷ | steps | lr | seed | PSNR vs T | PSNR vs GT (T) | FD (T) | FD ratio | max shift % | targets |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        gt = f"{r['psnr_vs_target']} ({r['teacher_psnr_vs_target']})" if r["psnr_vs_target"] else "–"
        ok = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r["checks"].items()) or "–"
        print(
            f"| {r['run']} | {r['teacher']} | {r['macs_ratio']} | {r['steps']} | {r['lr']} | {r['seed']} | "
            f"{r['psnr_vs_teacher']} | {gt} | {r['fd']} ({r['fd_teacher']}) | {r['fd_ratio']}{_interval(r['fd_ratio_ci'])} | "
            f"{r['max_shift_pct']} | {ok} |"
        )
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
