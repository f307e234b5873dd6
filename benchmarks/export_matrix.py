"""What does each CPU-runnable target x precision cost in quality and buy in speed? One distilled student.

    python benchmarks/export_matrix.py                         # distills scratch/matrix_student first
    python benchmarks/export_matrix.py --student runs/student --size 128 128

For a photo-restore student, every row below is exported with the quality gate into
scratch/matrix/<target>-<precision> (int8 rows must hold --min-psnr-int8 dB vs fp32, the issue's
target; fp rows --min-psnr-fp), then all runnable artifacts are timed in ONE interleaved profile
session (same input, same threads), so each row's speedup is against the fp32 of its own backend
measured in the same rounds.

    x86-onnxruntime   fp32, fp16, int8
    x86-openvino      fp32, bf16, fp16, int8
    arm64-mobile-ort  int8 (.ort; runs on x86 ONNX Runtime too; its fp32 reference is x86-onnxruntime fp32)
    jetson-orin-nano  int8 (QDQ ONNX, gate checked under ONNX Runtime; latency needs the Jetson)

An export whose gate cannot hold is recorded with its error and exported again with force=True
("gate not held"), so the row still has numbers. Writes benchmarks/results/export_matrix.json and .md.

--all-targets exports every precision of every target profile instead (README's "Where it has run"
rows); each run also writes its where-it-ran ledger (--ledger, default
benchmarks/results/where_it_ran/export_matrix.json: built here, run here), which
`python scripts/where_it_ran.py` puts in README.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.errors import EdgeDistillError

ROOT = Path(__file__).resolve().parent.parent


def repo_relative(path: Path) -> str:
    """Paths in the results are relative to the checkout, so they mean the same on every machine."""
    full = Path(path).resolve()
    return str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else str(path)


RESULTS = Path(__file__).parent / "results"
SCRATCH = ROOT / "scratch"
TEACHER = "photo-restore"
# (target, precision, the fp32 row whose p50 is this row's speedup reference, profiled here?)
ROWS: list[tuple[str, str, str, bool]] = [
    ("x86-onnxruntime", "fp32", "x86-onnxruntime-fp32", True),
    ("x86-onnxruntime", "fp16", "x86-onnxruntime-fp32", True),
    ("x86-onnxruntime", "int8", "x86-onnxruntime-fp32", True),
    ("x86-openvino", "fp32", "x86-openvino-fp32", True),
    ("x86-openvino", "bf16", "x86-openvino-fp32", True),
    ("x86-openvino", "fp16", "x86-openvino-fp32", True),
    ("x86-openvino", "int8", "x86-openvino-fp32", True),
    ("arm64-mobile-ort", "int8", "x86-onnxruntime-fp32", True),
    ("jetson-orin-nano", "int8", "", False),
]
TARGET_PSNR, TARGET_SPEEDUP = 38.0, 1.6  # the INT8 targets
LEDGER = RESULTS / "where_it_ran" / "export_matrix.json"


def all_rows() -> list[tuple[str, str, str, bool]]:
    """--all-targets: every precision of every target profile, as README's "Where it has run" lists them.

    Profiled here: CPU targets (an ARM target's artifact runs on x86 ONNX Runtime too); not an NPU's
    or a GPU's. Speedups are against the same target's fp32 where it has one.
    """
    from edgedistill.core.targets import PRECISIONS, load_targets

    rows = []
    for t in sorted(load_targets().values(), key=lambda t: t.name):
        ref = f"{t.name}-fp32" if "fp32" in t.precisions else ""
        for p in sorted(t.precisions, key=PRECISIONS.index):
            rows.append((t.name, p, ref, t.device == "CPU" and t.backend != "tensorrt"))
    return rows


# ------------------------------------------------------------------------------------- student
def ensure_student(args: argparse.Namespace) -> Path:
    """The given run directory, or one distilled (once) into scratch/matrix_student."""
    if args.student is not None:
        if not (args.student / "model.json").is_file():
            raise EdgeDistillError(
                f"--student {args.student}: no model.json there (give a distill run directory)"
            )
        return args.student
    out = SCRATCH / "matrix_student"
    if (out / "model.json").is_file():
        print(f"reusing the student in {out}", flush=True)
        return out
    from edgedistill.distiller.api import distill
    from edgedistill.distiller.config import DistillConfig

    print(f"distilling a {TEACHER} student into {out} ({args.steps} steps, width {args.width})", flush=True)
    cfg = DistillConfig(
        teacher=TEACHER, out=str(out), width=args.width, steps=args.steps, cache=args.cache,
        threads=args.threads,
    )  # fmt: skip
    return distill(cfg)


# ------------------------------------------------------------------------------------- exports
def main_file_bytes(art_dir: Path, files: list[str]) -> int:
    """The file the runtime loads (files[0]); an OpenVINO .xml brings its .bin."""
    names = [files[0]] + ([files[0][:-4] + ".bin"] if files[0].endswith(".xml") else [])
    return sum((art_dir / n).stat().st_size for n in names if (art_dir / n).is_file())


def export_row(student: Path, target: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    """Export one row with the gate; below the gate, record why and export again with force=True."""
    from edgedistill.exporter.api import export

    label = f"{target}-{precision}"
    out = args.artifacts / label
    min_psnr = args.min_psnr_int8 if precision == "int8" else args.min_psnr_fp
    row: dict[str, Any] = {"label": label, "target": target, "precision": precision, "min_psnr": min_psnr}

    def log(msg: str) -> None:
        print(f"  [{label}] {msg}", flush=True)

    common = dict(
        precision=precision, size=tuple(args.size), calib_size=args.calib_size, holdout=args.holdout,
        min_psnr=min_psnr, threads=args.threads, log=log,
    )  # fmt: skip
    t0 = time.perf_counter()
    try:
        res = export(str(student), target, out, **common)
        row["gate"] = "held"
    except EdgeDistillError as exc:
        row["error"] = str(exc)
        log(f"export failed: {exc}")
        if "--min-psnr" not in str(exc):  # not a gate failure: force would not help
            row["gate"] = "export failed"
            row["export_s"] = round(time.perf_counter() - t0, 1)
            return row
        try:
            res = export(str(student), target, out, force=True, **common)
            row["gate"] = "gate not held"
        except Exception as exc2:  # recorded, not raised: one broken row must not lose the others
            row["error"] += f" | force=True: {type(exc2).__name__}: {exc2}"
            row["gate"] = "export failed"
            row["export_s"] = round(time.perf_counter() - t0, 1)
            return row
    except Exception as exc:  # a bug in the export code: keep its traceback in the log, the line in the row
        traceback.print_exc()
        row.update(gate="export failed", error=f"{type(exc).__name__}: {exc}")
        row["export_s"] = round(time.perf_counter() - t0, 1)
        return row
    row["export_s"] = round(time.perf_counter() - t0, 1)
    m = res.manifest
    q = m["quality"]
    kept = m.get("kept_higher_precision") or []
    gate = m["gate"]
    if "kept_by_target" in gate:  # the manifest says which layers the target's policy kept
        by_target = len(gate["kept_by_target"])
    else:  # older manifests: a target with keep_io_layers keeps the first and last layer
        io = precision == "int8" and m["target"].get("options", {}).get("keep_io_layers")
        by_target = min(2 if io else 0, len(kept))
    row.update(
        dir=repo_relative(res.out),
        backend=m["backend"],
        runs_as=(m.get("backend_info") or {}).get("inference_precision") or precision,
        files=m["files"],
        main_file=m["files"][0],
        main_file_mb=round(main_file_bytes(res.out, m["files"]) / 1e6, 3),
        psnr_before_gate=q["before_fallback"]["psnr_vs_fp32"],
        ssim_before_gate=q["before_fallback"]["ssim_vs_fp32"],
        psnr_gated=q["psnr_vs_fp32"],
        ssim_gated=q["ssim_vs_fp32"],
        max_abs_err=q["max_abs_err"],
        held_out=q["samples"],
        kept=len(kept),
        kept_by_target=by_target,
        kept_by_gate=len(kept) - by_target,
        kept_layers=kept,
        gate_attempts=gate["attempts"],
        gate_speed=gate.get("speed"),
        calibration=m["calibration"],
        notes=m.get("notes"),
    )
    log(
        f"{row['gate']}: PSNR {row['psnr_before_gate']:.2f} -> {row['psnr_gated']:.2f} dB, "
        f"{row['kept']} layer(s) kept, {row['main_file_mb']} MB, {row['export_s']} s"
    )
    return row


# ------------------------------------------------------------------------------------- latency
def measure_latency(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """One interleaved profile session over every runnable artifact; speedups from its p50s."""
    from edgedistill.profiler.api import profile

    runnable = {r["label"]: str(ROOT / r["dir"]) for r in rows if r.get("profiled") and r.get("dir")}
    if not runnable:
        return {"error": "no artifact to profile"}
    print(f"profiling {len(runnable)} artifacts interleaved ({args.min_time} s each)", flush=True)
    try:
        report = profile(
            runnable, threads=args.threads, size=tuple(args.size), warmup=5, iterations=20,
            min_time=args.min_time * len(runnable), layers=0, roofline=False, progress=False,
        )  # fmt: skip
    except Exception as exc:  # recorded: the exports' numbers are still worth writing
        traceback.print_exc()
        for r in rows:
            r.setdefault("latency_note", f"profile failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    by_label = {m.name: m for m in report.models}
    for r in rows:
        m = by_label.get(r["label"])
        if m is None:
            continue
        if m.stats is None:
            r["latency_note"] = m.skipped or "not measured"
            continue
        r["p50_ms"] = round(m.stats.p50, 3)
        r["p90_ms"] = round(m.stats.p90, 3)
        r["min_ms"] = round(m.stats.min, 3)
        r["cv"] = round(m.stats.cv, 4)
        r["calls"] = m.stats.n
        r["psnr_vs_first_on_profile_input"] = m.psnr_vs_first
    p50 = {r["label"]: r.get("p50_ms") for r in rows}
    for r in rows:
        ref = p50.get(r.get("reference", ""))
        if ref and r.get("p50_ms"):
            r["speedup_vs_fp32"] = round(ref / r["p50_ms"], 3)
    return {"settings": report.settings, "warnings": report.warnings}


# ------------------------------------------------------------------------------------- report
def verdict(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's INT8 targets per backend: gated PSNR >= 38 dB and >= 1.6x its backend's fp32."""
    out = {}
    for label in ("x86-onnxruntime-int8", "x86-openvino-int8", "arm64-mobile-ort-int8"):
        r = next((x for x in rows if x["label"] == label), None)
        if r is None:
            continue
        psnr, speed = r.get("psnr_gated"), r.get("speedup_vs_fp32")
        out[label] = {
            "psnr_gated": psnr,
            "speedup_vs_fp32": speed,
            "psnr_ok": psnr is not None and psnr >= TARGET_PSNR and r.get("gate") == "held",
            "speedup_ok": speed is not None and speed >= TARGET_SPEEDUP,
        }
    return out


def _f(v: Any, fmt: str = "{:.2f}", none: str = "-") -> str:
    return none if v is None else fmt.format(v)


def markdown(report: dict[str, Any]) -> str:
    mach = report["machine"]
    v = mach["versions"]
    h, w = report["size"]
    lines = [
        f"Student: `{report['student']}` ({report['student_info']}), input {h}x{w}, batch 1, "
        f"{report['threads']} threads; calibration: {report['calibration']}.",
        f"Machine: {mach['cpu']} (ISA {'+'.join(mach.get('isa') or ['?'])}, {mach['logical_cpus']} logical CPUs, "
        f"shared), torch {v.get('torch')}, "
        f"onnxruntime {v.get('onnxruntime')}, openvino {v.get('openvino')}, nncf {v.get('nncf', '?')}.",
        f"Command: `{report['command']}` ({report['wall_s']:.0f} s wall).",
        f"Latency: one interleaved profile session over every runnable artifact ({report['min_time']} s each, "
        "p50 of synchronous calls); speedup = p50 of the same backend's fp32 / p50. PSNR/SSIM vs the fp32 "
        f"ONNX on {report['holdout']} held-out calibration inputs; gate: int8 >= {report['min_psnr_int8']} dB, "
        f'fp >= {report["min_psnr_fp"]} dB. "no gate" = the plain compile (ORT int8 targets already keep '
        "their first and last layer in fp32); layers kept = total (by the target + added by the gate).",
        "",
        "| target | backend | precision (runs as) | main file MB | PSNR no gate dB | PSNR gated dB | SSIM gated "
        "| layers kept (target+gate) | gate | p50 ms | speedup vs fp32 | export s |",
        "|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in report["rows"]:
        shown = (
            r.get("runs_as") not in (None, r["precision"]) and r["precision"] != "int8"
        )  # int8: rest's hint
        prec = r["precision"] + (f" ({r['runs_as']})" if shown else "")
        kept = f"{r['kept']} ({r['kept_by_target']}+{r['kept_by_gate']})" if "kept" in r else "-"
        latency = _f(r.get("p50_ms"), none=r.get("latency_note", "-"))
        speed = _f(r.get("speedup_vs_fp32"), "{:.2f}x", none="-" if "p50_ms" not in r else "n/a")
        gate = r.get("gate", "-")
        if r.get("error") and gate != "held":
            gate += " (see JSON)"
        lines.append(
            f"| {r['target']} | {r.get('backend', '-')} | {prec} | {_f(r.get('main_file_mb'), '{:.3f}')} "
            f"| {_f(r.get('psnr_before_gate'))} | {_f(r.get('psnr_gated'))} | {_f(r.get('ssim_gated'), '{:.4f}')} "
            f"| {kept} | {gate} | {latency} | {speed} | {_f(r.get('export_s'), '{:.1f}')} |"
        )
    lines.append("")
    for label, v in report["verdict"].items():
        ok = v["psnr_ok"] and v["speedup_ok"]
        lines.append(
            f"- {label}: PSNR gated {_f(v['psnr_gated'])} dB (>= {TARGET_PSNR}: {'yes' if v['psnr_ok'] else 'NO'}), "
            f"speedup {_f(v['speedup_vs_fp32'], '{:.2f}x')} (>= {TARGET_SPEEDUP}x: "
            f"{'yes' if v['speedup_ok'] else 'NO'}) -> target {'met' if ok else 'NOT met'}"
        )
    for msg in report.get("profile", {}).get("warnings", []):
        lines.append(f"- profile: {msg}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- the where-it-ran ledger
def write_ledger(report: dict[str, Any], path: Path) -> Path:
    """Each row as README's "Where it has run" cells (scripts/where_it_ran.py): built, run here."""
    import importlib.util

    wir = sys.modules.get("where_it_ran")
    if wir is None:  # imported by path (scripts/ is no package); registered first, as dataclasses need
        spec = importlib.util.spec_from_file_location("where_it_ran", ROOT / "scripts" / "where_it_ran.py")
        wir = sys.modules["where_it_ran"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(wir)
    h, w = report["size"]
    led = wir.new_ledger(
        "export_matrix",
        f"benchmarks/export_matrix.py: the quality-gated export of one photo-restore student ({h}x{w}), then "
        "every CPU artifact timed in one interleaved profile session",
        report["command"],
    )
    from edgedistill.backends import get_backend
    from edgedistill.core.targets import load_targets

    targets = load_targets()
    for r in report["rows"]:
        t, p = r["target"], r["precision"]
        if r.get("gate") == "held":
            led.add(
                t, p, "built", "pass", f"{r['main_file']}, gate {r['psnr_gated']:.1f} dB ≥ {r['min_psnr']:g}"
            )
        elif r.get("gate") == "gate not held":
            led.add(
                t, p, "built", "fail", f"gate {r['psnr_gated']:.1f} dB < {r['min_psnr']:g} (forced export)"
            )
        else:  # a device this machine lacks (an NPU) cannot be compiled for here: not a fault
            error = (r.get("error") or "export failed").splitlines()[0][:200]
            backend = get_backend(targets[t].backend)
            lacks = not backend.compiles_offline and p not in backend.precisions_here(targets[t].device)
            led.add(t, p, "built", "skip" if lacks else "fail", error.rsplit(": ", 1)[0] if lacks else error)
            continue
        if targets[t].backend == "tensorrt":  # its engine runs on the GPU: the tensorrt check's column
            continue
        if r.get("p50_ms") is not None:
            # no milliseconds here: where-it-ran says what ran; latency claims need a quiet machine
            led.add(
                t, p, "run_x86", "pass", f"{r['calls']} timed calls at {h}x{w}, {report['threads']} threads"
            )
        elif not r.get("profiled"):
            led.add(
                t, p, "run_x86", "skip", f"{targets[t].device} target: this check times CPU artifacts only"
            )
        else:
            led.add(t, p, "run_x86", "fail", str(r.get("latency_note") or "not measured")[:200])
    return led.write(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--student", type=Path, help="a distill run directory (default: distill scratch/matrix_student)"
    )
    ap.add_argument("--width", type=float, default=0.22)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--cache", type=int, default=384)
    ap.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--holdout", type=int, default=8)
    ap.add_argument("--min-psnr-int8", type=float, default=TARGET_PSNR)
    ap.add_argument("--min-psnr-fp", type=float, default=35.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=4.0, help="seconds of timing per artifact")
    ap.add_argument(
        "--only", nargs="*", help="row labels to run, e.g. x86-openvino-int8 (fp32 refs are added)"
    )
    ap.add_argument("--artifacts", type=Path, default=SCRATCH / "matrix", help="where the exports go")
    ap.add_argument("--out", type=Path, default=RESULTS / "export_matrix.json")
    ap.add_argument(
        "--all-targets", action="store_true", help="every target x precision (README's where-it-ran rows)"
    )
    ap.add_argument("--ledger", type=Path, default=LEDGER, help="the where-it-ran ledger this run writes")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    student = ensure_student(args)
    wanted = set(args.only or [])
    rows = []
    matrix = all_rows() if args.all_targets else ROWS
    for target, precision, reference, profiled in matrix:
        label = f"{target}-{precision}"
        if (
            wanted
            and label not in wanted
            and not any(ref == label for t, p, ref, _ in matrix if f"{t}-{p}" in wanted)
        ):
            continue
        print(f"exporting {label}", flush=True)
        row = export_row(student, target, precision, args)
        row["reference"], row["profiled"] = reference, profiled
        if not profiled:
            row["latency_note"] = "n/a (needs the Jetson)" if "jetson" in target else "n/a (needs its device)"
        rows.append(row)
    prof = measure_latency(rows, args)

    from edgedistill.core.versions import installed_versions
    from edgedistill.runtime.hostinfo import host_info

    metrics = (
        json.loads((student / "metrics.json").read_text()) if (student / "metrics.json").is_file() else {}
    )
    machine = host_info(args.threads)
    machine["versions"] = {**machine["versions"], **installed_versions(("nncf",))}
    calib = next(
        (r["calibration"] for r in rows if r.get("precision") == "int8" and r.get("calibration")), {}
    )
    report = {
        "what": "export matrix: every CPU-runnable target x precision of one distilled photo-restore student",
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "student": repo_relative(student),
        "student_info": (
            f"{metrics.get('steps', '?')} steps, {metrics.get('macs_ratio', '?')}x fewer MACs, "
            f"PSNR vs teacher {metrics.get('psnr_vs_teacher', '?')} dB"
        ),
        "size": list(args.size),
        "threads": args.threads,
        "min_time": args.min_time,
        "holdout": args.holdout,
        "calib_size": args.calib_size,
        "calibration": f"{calib.get('samples', args.calib_size)} x {calib.get('source', '?')}, "
        f"{calib.get('method', '?')}",
        "min_psnr_int8": args.min_psnr_int8,
        "min_psnr_fp": args.min_psnr_fp,
        "machine": machine,
        "profile": prof,
        "rows": rows,
        "verdict": verdict(rows),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=2, default=str) + "\n")
    table = markdown(report)
    write_text_atomic(args.out.with_suffix(".md"), table)
    print(table)
    write_ledger(report, args.ledger)
    print(f"written: {args.out}, {args.out.with_suffix('.md')} and {args.ledger}")


if __name__ == "__main__":
    main()
