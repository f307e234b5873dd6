"""compress's report: latency (the profiler, interleaved) joined with quality on held-out inputs.

report.md / report.json / latency.png / samples.png in the compress directory; the summary table
is what `compress` and `demo` print.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.core.atomic import write_text_atomic
from edgedistill.profiler.plot import plot_report

if TYPE_CHECKING:
    from edgedistill.pipeline.compress import CompressOptions
    from edgedistill.pipeline.quality import Scored
    from edgedistill.runtime.report import ProfileReport


def latency_table(
    models: dict[str, str],
    size: tuple[int, int] | None,
    threads: int | None,
    seconds: float,
    teacher_load: dict[str, Any] | None = None,
) -> ProfileReport:
    """All models timed in interleaved rounds (teacher first, so speedups are against it)."""
    from edgedistill.profiler.api import profile

    return profile(
        models, threads=threads, size=size, min_time=seconds, iterations=10, warmup=3, layers=8,
        **(teacher_load or {}),
    )  # fmt: skip


def summary_rows(
    latency: ProfileReport, scored: list[Scored], manifests: dict[str, dict]
) -> list[dict[str, str]]:
    quality = {s.name: s for s in scored}
    rows = []
    for m in latency.models:
        s, q = m.stats, quality.get(m.name)
        man = manifests.get(m.name, {})
        vs_fp32 = man.get("quality", {}).get("psnr_vs_fp32")
        rows.append({
            "model": m.name,
            "backend": m.backend,
            "precision": m.precision,
            "MACs": _human(m.macs),
            "size MB": f"{m.size_bytes / 1e6:.2f}" if m.size_bytes else "–",
            "p50 ms": f"{s.p50:.2f}" if s else "n/a",  # its runtime is absent here (see profile.md)
            "p90 ms": f"{s.p90:.2f}" if s else "",
            "speedup": f"{m.speedup:.2f}x" if m.speedup else "–",
            "PSNR vs teacher dB": f"{q.psnr_vs_teacher:.2f}" if q and q.psnr_vs_teacher is not None else "–",
            "SSIM vs teacher": f"{q.ssim_vs_teacher:.4f}" if q and q.ssim_vs_teacher is not None else "–",
            "PSNR vs fp32 dB": f"{vs_fp32:.2f}" if vs_fp32 is not None else "–",
        })  # fmt: skip
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    cols = list(rows[0])
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" if i < 3 else "---:" for i in range(len(cols))) + "|",
    ]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_reports(
    opts: CompressOptions,
    models: dict[str, str],
    scored: list[Scored],
    latency: ProfileReport,
    grid: Path,
    log: Callable[[str], None],
    failed: dict[str, str] | None = None,
) -> dict[str, Any]:
    out = opts.out
    manifests = {
        name: json.loads((Path(path) / "manifest.json").read_text())
        for name, path in models.items()
        if (Path(path) / "manifest.json").exists()
    }
    student_metrics = json.loads((Path(models["student"]) / "metrics.json").read_text())
    rows = summary_rows(latency, scored, manifests)
    table = markdown_table(rows)
    files = {
        "report": out / "report.md",
        "report (JSON)": out / "report.json",
        "sample grid": grid,
        "latency chart": plot_report(latency, out / "latency.png"),
        "latency profile": latency.write_markdown(out / "profile.md"),
    }
    first = (
        "input | "
        if json.loads(json.dumps(manifests.get(next(iter(manifests), ""), {}).get("spec", {}))).get("kind")
        == "image"
        else ""
    )
    rows_desc = first + " | ".join(s.name for s in scored)
    md = [
        f"# {opts.teacher} compressed ({_student_shape(opts)}, {student_metrics.get('steps', opts.steps)} steps)",
        "",
        table,
        "",
        *[f"**{name} failed**: {why}" for name, why in (failed or {}).items()],
        *[f"Note — {note}" for note in opts.notes],
        *(
            [
                f"Student norm: {opts.student_norm} (--student-norm; default: the teacher's, measured the better "
                "choice for an InstanceNorm teacher bound for INT8 in benchmarks/instancenorm_int8.py)",
                "",
            ]
            if opts.student_norm
            else []
        ),
        *([""] if failed else []),
        "PSNR/SSIM vs teacher: on held-out inputs (the photo teacher: degraded crops of photos it never saw), "
        "outputs mapped to [0, 1]. PSNR vs fp32: the export's quality gate, artifact vs the fp32 student.",
        *latency.notes(),
        "",
        f"Student (torch, fp32) distillation scores: {json.dumps(student_metrics)}",
        "",
        f"![samples]({grid.name}) rows: {rows_desc}",
        "",
        "![latency](latency.png)",
        "",
    ]
    write_text_atomic(files["report"], "\n".join(md))
    report = {
        "teacher": opts.teacher,
        "options": json.loads(json.dumps(vars(opts), default=str)),  # paths, nested ones too, as text
        "rows": rows,
        "markdown_table": table,
        "student_metrics": student_metrics,
        "artifacts": {k: v for k, v in manifests.items()},
        "latency": latency.to_dict(),
        "quality": [
            {"name": s.name, "psnr_vs_teacher": s.psnr_vs_teacher, "ssim_vs_teacher": s.ssim_vs_teacher}
            for s in scored
        ],
        "files": {k: str(v) for k, v in files.items()},
        "failed": dict(failed or {}),
    }
    log(f"report written: {files['report']}")
    return report


def _human(n: float | None) -> str:
    if not n:
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def _student_shape(opts: Any) -> str:
    """How the student was shaped: a searched or given architecture, else the uniform width."""
    arch = opts.distill_options.get("arch")
    return f"architecture {json.dumps(arch)}" if arch else f"width {opts.width}"
