"""`edgedistill compress`: teacher -> distilled student -> one artifact per target -> side-by-side report.

    DIR/student/           the distillation run (resumed if interrupted)
    DIR/exports/TARGET/    one artifact directory per target
    DIR/samples.png        input | teacher | student | student per target, on held-out inputs
    DIR/latency.png        p50 bars with p90 whiskers
    DIR/report.md, DIR/report.json

Each stage is skipped when its options and inputs are unchanged (DIR/stages.json); --force redoes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.pipeline.stages import StageBook, fingerprint


@dataclass
class CompressOptions:
    teacher: str
    targets: list[str]
    out: Path = Path("compressed")
    width: float = 0.25
    steps: int = 1000
    data: Path | None = None
    cache: int = 512
    precision: str | None = None  # None: each target's default
    size: tuple[int, int] | None = None  # input H W for export and profiling (default: the target's)
    calib_size: int = 64
    min_psnr: float | None = 35.0
    threads: int | None = 2
    profile_seconds: float = 4.0  # minimum measuring time per model in the interleaved profile
    samples: int = 4  # held-out images in the grid
    force: bool = False
    distill_options: dict[str, Any] = field(default_factory=dict)


def compress(opts: CompressOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage; returns the report (also written to DIR/report.json)."""
    from edgedistill.core.targets import get_target

    targets = [get_target(t, opts.precision) for t in opts.targets]  # fail fast on a bad name
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    book = StageBook(out)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    student = _distill_stage(opts, book, log)
    timings["distill_s"] = round(time.perf_counter() - t0, 1)

    artifacts: dict[str, Path] = {}
    for tgt in targets:
        t0 = time.perf_counter()
        artifacts[f"{tgt.name.removeprefix('x86-')} {tgt.precision}"] = _export_stage(
            opts, tgt.name, student, book, log
        )
        timings[f"export_{tgt.name}_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    report = _report_stage(opts, student, artifacts, log)
    timings["report_s"] = round(time.perf_counter() - t0, 1)
    report["timings"] = timings
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report


# ------------------------------------------------------------------------------------------ stages
def _distill_stage(opts: CompressOptions, book: StageBook, log: Callable[[str], None]) -> Path:
    from edgedistill.distiller.api import distill
    from edgedistill.distiller.config import DistillConfig

    run_dir = opts.out / "student"
    cfg = DistillConfig(
        teacher=opts.teacher, out=str(run_dir), width=opts.width, steps=opts.steps,
        data=str(opts.data) if opts.data else None, cache=opts.cache, threads=opts.threads,
        sample_every=max(opts.steps // 2, 1), **opts.distill_options,
    )  # fmt: skip
    fp = fingerprint({**asdict(cfg), "out": None, "threads": None})
    outputs = [run_dir / "model.json", run_dir / "metrics.json"]
    if not opts.force and book.is_done("distill", fp, outputs):
        log(f"distill: unchanged, skipped (student in {run_dir})")
        return run_dir
    resume = False
    if opts.force or book.done.get("distill") not in (None, fp):
        shutil.rmtree(run_dir, ignore_errors=True)
    elif (run_dir / "checkpoints" / "last.pt").exists():
        resume = True
        log(f"distill: resuming the interrupted run in {run_dir}")
    book.forget("distill")
    log(f"distill: {opts.teacher} -> width {opts.width}, {opts.steps} steps")
    distill(cfg, resume=resume)
    book.mark("distill", fp)
    m = json.loads((run_dir / "metrics.json").read_text())
    log(
        f"distill: done in {m.get('wall_s')} s; PSNR vs teacher {m.get('psnr_vs_teacher')} dB, {m.get('macs_ratio')}x fewer MACs"
    )
    return run_dir


def _export_stage(
    opts: CompressOptions, target: str, student: Path, book: StageBook, log: Callable[[str], None]
) -> Path:
    from edgedistill.core.targets import get_target
    from edgedistill.exporter.api import export

    tgt = get_target(target, opts.precision)
    art = opts.out / "exports" / f"{tgt.name}-{tgt.precision}"
    weights = sorted(p for p in student.iterdir() if p.suffix in (".safetensors", ".pt2"))
    options = {"target": tgt.name, "precision": tgt.precision, "size": opts.size, "calib_size": opts.calib_size,
               "min_psnr": opts.min_psnr, "data": str(opts.data) if opts.data else None}  # fmt: skip
    fp = fingerprint(options, weights)
    stage = f"export:{tgt.name}-{tgt.precision}"
    if not opts.force and book.is_done(stage, fp, [art / "manifest.json"]):
        log(f"export {tgt.name} {tgt.precision}: unchanged, skipped ({art})")
        return art
    log(f"export {tgt.name} {tgt.precision} -> {art}")
    result = export(
        str(student), tgt.name, art, precision=tgt.precision, size=opts.size, calib_data=opts.data,
        calib_size=opts.calib_size, min_psnr=opts.min_psnr, threads=opts.threads,
        log=lambda m: log(f"  {m}"),
    )  # fmt: skip
    q = result.manifest["quality"]
    log(
        f"export {tgt.name}: PSNR vs fp32 {q['psnr_vs_fp32']:.2f} dB, kept {len(result.manifest['kept_higher_precision'])} layer(s) higher"
    )
    book.mark(stage, fp)
    return art


def _report_stage(
    opts: CompressOptions, student: Path, artifacts: dict[str, Path], log: Callable[[str], None]
) -> dict[str, Any]:
    from edgedistill.data.heldout import heldout_inputs
    from edgedistill.models.loading import load_generator
    from edgedistill.pipeline.quality import save_sample_grid, score_all
    from edgedistill.pipeline.report import latency_table, write_reports

    spec = load_generator(str(student)).spec
    size = _profile_size(opts, spec, artifacts)
    x = heldout_inputs(opts.teacher, spec, size, max(opts.samples, 8), opts.data)
    log(f"quality: teacher, student and {len(artifacts)} artifact(s) on {len(x)} held-out inputs")
    scored = score_all(spec, x, opts.teacher, student, artifacts, opts.threads)
    grid = save_sample_grid(spec, x, scored, opts.out / "samples.png", opts.samples)
    log("latency: interleaved rounds over teacher, student and artifacts")
    models = {"teacher": opts.teacher, "student": str(student), **{k: str(v) for k, v in artifacts.items()}}
    latency = latency_table(models, size, opts.threads, opts.profile_seconds)
    return write_reports(opts, models, scored, latency, grid, log)


def _profile_size(opts: CompressOptions, spec: Any, artifacts: dict[str, Path]) -> tuple[int, int] | None:
    """One input size for all models: the artifacts' (static ones need it), else --size or the spec's."""
    if spec.kind != "image":
        return None
    for art in artifacts.values():
        m = json.loads((art / "manifest.json").read_text())
        size = m["spec"].get("default_size")
        if size:
            return tuple(size)  # type: ignore[return-value]
    if opts.size:
        return opts.size
    if spec.default_size is None:
        raise EdgeDistillError("give --size H W: the generator's spec has no default input size")
    return tuple(spec.default_size)  # type: ignore[return-value]
