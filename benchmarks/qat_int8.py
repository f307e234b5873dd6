"""Post-training quantization vs quantization-aware distillation, on ONNX Runtime and OpenVINO INT8.

    python benchmarks/qat_int8.py --run RUN_DIR [--qat-steps 200] [--size 256]

RUN_DIR is a distilled student without QAT, e.g. from
    edgedistill distill photo-restore --width 0.22 --steps 300 --cache 256 --out RUN_DIR

1. PTQ: the student exported as the exporter does today (x86 profiles: ONNX Runtime keeps its first
   and last conv in fp32, the gate may keep more) and with nothing kept (a profile copy without
   keep_io_layers, gate off).
2. QAT: a copy of the run resumed with --qat-steps N (the distill() hook: the QAT phase alone, as
   the main training is done), then exported with the gate at 45 dB: the trained scales, no
   layer kept by policy.
3. For each artifact on held-out photos at SIZE: PSNR vs its own fp32 student, PSNR vs the teacher,
   layers kept at higher precision, and latency INT8 / fp32 of the same runtime, interleaved.

Writes benchmarks/results/qat_int8.json and .md; prints the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.quality import psnr, to_unit
from edgedistill.runtime.hostinfo import host_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
TARGETS = ("x86-onnxruntime", "x86-openvino")


def run_qat(run: Path, dest: Path, steps: int) -> float:
    """Copy `run` and run the QAT phase on its student with the run's own data and options (the
    phase `distill --qat-steps` runs after training; called directly, so the finished run's
    evaluation is not redone)."""
    from edgedistill.data.sources import make_source
    from edgedistill.distiller.qat import TeacherBatches, run_qat
    from edgedistill.models.loading import load_generator

    if (dest / "qat.json").exists():
        return json.loads((dest / "qat.json").read_text())["wall_s"]
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("qat.pt"))
    cfg = json.loads((run / "config.json").read_text())
    teacher = load_generator(cfg["teacher"])
    student = load_generator(str(dest))
    val = Path(cfg["val_data"]) if cfg.get("val_data") else None
    source = make_source(cfg["teacher"], teacher.spec, Path(cfg["data"]) if cfg.get("data") else None,
                         cfg["seed"], cfg["patch"], 0, val_data=val)  # fmt: skip
    t0 = time.perf_counter()
    pix = cfg.get("lambda_pix") or 1.0
    run_qat(student.module, teacher.module.requires_grad_(False), student.spec, TeacherBatches(teacher.module, source),
            dest, steps, lr=cfg["lr"] * 0.1, batch_size=cfg["batch"], lambda_gt=cfg.get("lambda_gt", 0.0) / pix)  # fmt: skip
    return time.perf_counter() - t0


def no_io_profile(target: str, folder: Path) -> Path:
    """A copy of `target`'s profile that keeps no layer at higher precision by policy."""
    import tomllib

    from edgedistill.core.targets import get_target

    src = get_target(target).path
    text = Path(src).read_text()
    if "keep_io_layers" not in text:
        return Path(src)
    if set(tomllib.loads(text).get("options", {})) != {"keep_io_layers"}:
        raise SystemExit(f"{src}: options other than keep_io_layers; edit this benchmark")
    lines = [ln for ln in text.splitlines() if not ln.startswith("options")]
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{target}.toml"
    out.write_text("\n".join(lines) + "\n")
    return out


def export(model: Path, target: str | Path, out: Path, precision: str, size: int, min_psnr: float | None):
    import edgedistill

    if (out / "manifest.json").exists():
        return out
    edgedistill.export(
        str(model), target, out, precision=precision, size=(size, size), calib_size=64, holdout=8,
        min_psnr=min_psnr, threads=2, force=True, log=lambda m: print("   ", m, flush=True),
    )  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a distilled run directory (no QAT)")
    ap.add_argument("--qat-steps", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--images", type=int, default=16, help="held-out photos scored")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved latency rounds")
    ap.add_argument("--work", type=Path, default=ROOT / "scratch" / "qat" / "bench")
    ap.add_argument("--name", default="qat_int8")
    args = ap.parse_args()

    import torch

    from edgedistill.core.artifact import load_artifact
    from edgedistill.data.heldout import heldout_arrays
    from edgedistill.exporter.qat_export import find_qat
    from edgedistill.models.loading import load_generator
    from edgedistill.runtime.sources import artifact_source

    torch.set_num_threads(2)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if find_qat(args.run) is not None:
        raise SystemExit(f"{args.run} already has a QAT phase: give the run before QAT")
    qat_run = work / f"run-qat{args.qat_steps}"
    print(f"QAT: {args.qat_steps} steps on a copy of {args.run}", flush=True)
    qat_wall = run_qat(args.run, qat_run, args.qat_steps)
    qat_info = json.loads((qat_run / "qat.json").read_text())

    run_config = json.loads((args.run / "config.json").read_text())
    teacher_name = run_config["teacher"]
    teacher = load_generator(teacher_name)
    spec = teacher.spec
    arrays = heldout_arrays(teacher_name, spec, (args.size, args.size), args.images)
    name = spec.inputs[0].name
    inputs = arrays[name]
    with torch.no_grad():
        y_teacher = np.concatenate(
            [teacher.module(torch.from_numpy(inputs[i : i + 4])).numpy() for i in range(0, len(inputs), 4)]
        )
    out_range = tuple(spec.output_range)

    def outputs(runner) -> np.ndarray:
        return np.concatenate(
            [runner.run({name: inputs[i : i + 1]})[runner.output_names[0]] for i in range(len(inputs))]
        )

    def vs(a: np.ndarray, b: np.ndarray) -> float:
        return round(psnr(to_unit(a, out_range), to_unit(b, out_range), 1.0), 2)

    rows, runners = [], {}
    refs: dict = {}

    def reference(target: str, key: str) -> np.ndarray:
        """The fp32 student (pre-QAT or QAT) of `target`'s runtime, exported and run once."""
        if (target, key) not in refs:
            src = qat_run if key == "qat" else args.run
            fp = export(src, target, work / target / f"{key}-fp32", "fp32", args.size, None)
            runners[(target, key)] = artifact_source(load_artifact(fp), str(fp)).load(2)
            refs[(target, key)] = outputs(runners[(target, key)])
        return refs[(target, key)]

    profiles = work / "profiles"
    # QAT first: the rows the targets are about come out soonest
    for label in ("QAT", "PTQ, nothing kept", "PTQ (as export does)"):
        for target in TARGETS:
            model, tgt, gate = {
                "PTQ (as export does)": (args.run, target, 35.0),
                "PTQ, nothing kept": (args.run, no_io_profile(target, profiles), None),
                "QAT": (qat_run, target, 45.0),
            }[label]
            fp_key = "qat" if model == qat_run else "pre"
            ref, pre = reference(target, fp_key), reference(target, "pre")
            slug = label.split()[0].lower() + ("-nokeep" if "nothing" in label else "")
            print(f"{target}: {label}", flush=True)
            art_dir = export(model, tgt, work / target / slug, "int8", args.size, gate)
            manifest = json.loads((art_dir / "manifest.json").read_text())
            runner = artifact_source(load_artifact(art_dir), str(art_dir)).load(2)
            runners[(target, label)] = runner
            y = outputs(runner)
            rows.append({
                "target": target, "variant": label,
                "psnr_vs_fp32_student": vs(y, ref),
                "psnr_vs_teacher": vs(y, y_teacher),
                "fp32_student_vs_teacher": vs(ref, y_teacher),
                "pre_qat_fp32_vs_teacher": vs(pre, y_teacher),
                "kept_fp32": len(manifest.get("kept_higher_precision") or []),
                "gate_psnr": manifest["quality"]["psnr_vs_fp32"],
                "fp32_key": fp_key,
            })  # fmt: skip
            print("   ", json.dumps(rows[-1]), flush=True)
            write_text_atomic(work / "partial.json", json.dumps(rows, indent=1) + "\n")

    # latency: every runner of a runtime, interleaved round by round
    sample = {name: inputs[:1]}
    for target in TARGETS:
        mine = {k: r for k, r in runners.items() if k[0] == target}
        times: dict = {k: [] for k in mine}
        for r in mine.values():
            for _ in range(2):
                r.run(sample)
        for _ in range(args.rounds):
            for k, r in mine.items():
                t0 = time.perf_counter()
                r.run(sample)
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        for row in rows:
            if row["target"] == target:
                row["ms"] = round(med[(target, row["variant"])], 2)
                row["latency_int8_over_fp32"] = round(
                    med[(target, row["variant"])] / med[(target, row["fp32_key"])], 3
                )
                row["fp32_ms"] = round(med[(target, row["fp32_key"])], 2)

    result = {
        "host": host_info(2),
        "run": args.run.name,
        "run_config": {**run_config, "out": args.run.name},  # where it ran is no evidence, and a path leaks
        "size": args.size,
        "images": args.images,
        "qat_steps": args.qat_steps,
        "qat_wall_s": round(qat_wall, 1),
        "qat_phase_s": qat_info.get("wall_s"),
        "qat_metrics": qat_info.get("metrics"),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    write_text_atomic(RESULTS / f"{args.name}.json", json.dumps(result, indent=1) + "\n")
    head = "| runtime | variant | PSNR vs fp32 student | PSNR vs teacher | fp32 vs teacher | layers kept fp32 | INT8/fp32 latency |"
    lines = [
        f"CPU: {result['host']['cpu']} ({', '.join(result['host']['isa'])}), 2 threads; {args.images} held-out photos at "
        f"{args.size}x{args.size}; QAT {args.qat_steps} steps ({qat_info.get('wall_s')} s)",
        "",
        head,
        "|---" * 7 + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['variant']} | {r['psnr_vs_fp32_student']} | {r['psnr_vs_teacher']} | "
            f"{r['fp32_student_vs_teacher']} | {r['kept_fp32']} | {r['latency_int8_over_fp32']} |"
        )
    lines.append("")
    lines.append(f"pre-QAT fp32 student vs teacher: {rows[0]['pre_qat_fp32_vs_teacher']} dB")
    text = "\n".join(lines) + "\n"
    write_text_atomic(RESULTS / f"{args.name}.md", text)
    print(text)


if __name__ == "__main__":
    main()
