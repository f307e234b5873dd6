"""`compress` for a classifier teacher: data-free student -> one artifact per target -> report.

    DIR/student/           the data-free (or, with --data, KD) run: datafree/api.py's run directory,
                           whose calibration.npz (synthetic inputs) calibrates INT8 and feeds the gate
    DIR/exports/TARGET/    one artifact per target, gated on top-1 agreement with fp32
    DIR/report.md, DIR/report.json   top-1 on held-out real images (evaluation only), agreement with
                           the teacher, latency measured interleaved

Stages are skipped when their options and inputs are unchanged, as in pipeline/compress.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.pipeline.stages import StageBook, fingerprint, teacher_files

COLUMNS = {"model": "model", "precision": "prec", "MACs": "MACs", "size MB": "MB", "p50 ms": "p50 ms",
           "speedup": "×", "top-1 %": "top-1 %", "agreement %": "agree w/ T %"}  # fmt: skip


def compress_classifier(opts: Any, method: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Distill (data-free unless opts.data), export per target, score and profile; returns the report."""
    from edgedistill.core.targets import get_target

    targets = [get_target(t, opts.precision) for t in opts.targets]
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    book = StageBook(out)
    student = _distill_stage(opts, method, book, log)
    artifacts: dict[str, Path] = {}
    failed: dict[str, str] = {}
    for given, tgt in zip(opts.targets, targets, strict=True):
        name = f"{tgt.name.removeprefix('x86-')} {tgt.precision}"
        try:
            artifacts[name] = _export_stage(opts, given, tgt, student, book, log)
        except EdgeDistillError as exc:
            failed[name] = str(exc)
            log(f"export {tgt.name} {tgt.precision}: FAILED: {exc}")
    if not artifacts:
        raise EdgeDistillError("no target exported: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    report = _report(opts, student, artifacts, failed, log)
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def _distill_stage(opts: Any, method: str, book: StageBook, log: Callable[[str], None]) -> Path:
    from edgedistill.datafree.api import distill_classifier

    run_dir = opts.out / "student"
    width = None if opts.width == 0.25 else opts.width  # 0.25 is the generators' default: use the family's
    options = {
        "method": method,
        "steps": opts.steps,
        "width": width,
        "data": str(opts.data) if opts.data else None,
    }
    fp = fingerprint(options, teacher_files(opts.teacher, None), [])
    if not opts.force and book.is_done("distill", fp, [run_dir / "model.json", run_dir / "metrics.json"]):
        log(f"distill: unchanged, skipped (student in {run_dir})")
        return run_dir
    resume = (run_dir / "checkpoints" / "last.pt").exists() and book.done.get("distill") in (None, fp)
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    book.forget("distill")
    how = f"KD on {opts.data}" if opts.data else f"data-free ({method})"
    log(f"distill: {opts.teacher} -> classifier student, {how}, {opts.steps} steps")
    run = distill_classifier(
        opts.teacher, run_dir, method=method, data=opts.data, steps=opts.steps, width=width,
        threads=opts.threads, resume=resume,
    )  # fmt: skip
    book.mark("distill", fp)
    m = run.metrics
    log(
        f"distill: done in {m['train_seconds']} s; held-out top-1 {m.get('student_top1')} "
        f"(teacher {m.get('teacher_top1')}), {m['macs_ratio']}x fewer MACs"
    )
    return run_dir


def _export_stage(
    opts: Any, given: str, tgt: Any, student: Path, book: StageBook, log: Callable[[str], None]
) -> Path:
    from edgedistill.exporter.api import export

    art = opts.out / "exports" / f"{tgt.name}-{tgt.precision}"
    weights = sorted(p for p in student.iterdir() if p.suffix in (".safetensors", ".npz"))
    options = {
        "target": tgt.name,
        "precision": tgt.precision,
        "calib_size": opts.calib_size,
        "gate": opts.min_psnr,
    }
    fp = fingerprint(options, weights, [])
    stage = f"export:{tgt.name}-{tgt.precision}"
    if not opts.force and book.is_done(stage, fp, [art / "manifest.json"]):
        log(f"export {tgt.name} {tgt.precision}: unchanged, skipped ({art})")
        return art
    log(f"export {tgt.name} {tgt.precision} -> {art}")
    result = export(
        str(student), given, art, precision=tgt.precision, calib_size=opts.calib_size,
        min_psnr=opts.min_psnr, threads=opts.threads, log=lambda m: log(f"  {m}"),
    )  # fmt: skip
    q = result.manifest["quality"]
    log(f"export {tgt.name}: {100 * q['agreement']:.2f} % top-1 agreement with fp32 on {q['samples']} inputs")
    book.mark(stage, fp)
    return art


def _report(
    opts: Any, student: Path, artifacts: dict[str, Path], failed: dict[str, str], log: Callable[[str], None]
) -> dict[str, Any]:
    from edgedistill.datafree import datasets
    from edgedistill.models.loading import load_generator
    from edgedistill.pipeline.quality import model_outputs
    from edgedistill.pipeline.report import latency_table, markdown_table

    spec = load_generator(opts.teacher).spec
    held = datasets.real_images(None, spec, "heldout")  # evaluation only, never training
    models = {"teacher": opts.teacher, "student": str(student), **{k: str(v) for k, v in artifacts.items()}}
    top1: dict[str, float | None] = {}
    agree: dict[str, float | None] = {}
    if held is not None:
        x, y = held[0].numpy().astype(np.float32), held[1]
        log(
            f"quality: top-1 of teacher, student and {len(artifacts)} artifact(s) on {len(x)} held-out images"
        )
        preds = {k: model_outputs(m, x, opts.threads).argmax(1) for k, m in models.items()}
        for k, p in preds.items():
            top1[k] = round(100 * float((p == y.numpy()).mean()), 2) if y is not None else None
            agree[k] = round(100 * float((p == preds["teacher"]).mean()), 2)
    log("latency: interleaved rounds over teacher, student and artifacts")
    latency = latency_table(models, None, opts.threads, opts.profile_seconds)
    rows = []
    for m in latency.models:
        s = m.stats
        rows.append({
            "model": m.name, "backend": m.backend, "precision": m.precision,
            "MACs": f"{m.macs / 1e6:.2f}M" if m.macs else "–",
            "size MB": f"{m.size_bytes / 1e6:.3f}" if m.size_bytes else "–",
            "p50 ms": f"{s.p50:.3f}" if s else "n/a", "p90 ms": f"{s.p90:.3f}" if s else "",
            "speedup": f"{m.speedup:.2f}x" if m.speedup else "–",
            "top-1 %": str(top1.get(m.name, "–")), "agreement %": str(agree.get(m.name, "–")),
        })  # fmt: skip
    md = f"# compress {opts.teacher} (classifier)\n\n" + markdown_table(rows) + "\n"
    if failed:
        md += "\nFailed targets:\n" + "".join(f"- {k}: {v}\n" for k, v in failed.items())
    write_text_atomic(opts.out / "report.md", md)
    metrics = json.loads((student / "metrics.json").read_text())
    return {
        "teacher": opts.teacher,
        "kind": "classifier",
        "columns": COLUMNS,
        "rows": rows,
        "student": metrics,
        "failed": failed,
        "files": {"report": str(opts.out / "report.md"), "student": str(student)},
        "next": [f"edgedistill profile {next(iter(artifacts.values()))}"],
    }
