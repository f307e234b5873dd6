"""`edgedistill compress`: teacher -> distilled student -> one artifact per target -> side-by-side report.

    DIR/student/           the distillation run (resumed if interrupted)
    DIR/exports/TARGET/    one artifact directory per target
    DIR/samples.png        input | teacher | student | student per target, on held-out inputs
    DIR/latency.png        p50 bars with p90 whiskers
    DIR/report.md, DIR/report.json

Each stage is skipped when its options and inputs are unchanged (DIR/stages.json: the teacher's
bytes and the --data/--val-data folders count, see pipeline/stages.py); --force redoes. One split
of --data (data/images.py) serves all stages: the student trains on its training pairs, INT8
calibrates on training inputs, and the report scores on its validation inputs.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.pipeline.stages import StageBook, fingerprint, teacher_files

if TYPE_CHECKING:  # the step is imported when it runs: `compress --help` stays light
    from edgedistill.distiller.config import DistillConfig


@dataclass
class CompressOptions:
    teacher: str
    targets: list[str]
    out: Path = Path("compressed")
    width: float = 0.25
    steps: int = 1000
    data: Path | None = None
    val_data: Path | None = None  # held-out images; None: a fixed tenth of --data (data/images.py)
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
    # None: the teacher's norm (for an InstanceNorm teacher and INT8 targets measured the better choice
    # against a BatchNorm student: benchmarks/instancenorm_int8.py)
    student_norm: str | None = None
    notes: list[str] = field(default_factory=list)  # choices made for the user, repeated in the report
    kwargs: dict[str, Any] = field(default_factory=dict)  # constructor args of a module:Class teacher
    weights: Path | None = None  # its weights
    qat_steps: int | None = None  # None: QAT_STEPS when a target exports INT8 (distiller/qat.py), else 0
    # a latency budget (ms on the first target) replaces --width: search -> distill the chosen architecture
    latency_ms: float | None = None
    host: str | None = None  # where the search measures its latency table (user@host[:port]); None: here
    # how to reach --host: options, identity, python (as `profile --host` takes them)
    ssh: dict[str, Any] = field(default_factory=dict)
    search_options: dict[str, Any] = field(default_factory=dict)  # edgedistill.search.api.search keywords

    @property
    def teacher_load(self) -> dict[str, Any]:
        """What builds the teacher wherever it is loaded (distill, scoring, profiling)."""
        return {k: v for k, v in (("kwargs", self.kwargs), ("weights", self.weights)) if v}


def compress(opts: CompressOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage; returns the report (also written to DIR/report.json).

    A target whose export fails (its gate cannot hold) does not stop the others: it is listed under
    report["failed"] with the reason, and the CLI exits non-zero after writing everything else."""
    from edgedistill.core.targets import get_target

    targets = [get_target(t, opts.precision) for t in opts.targets]  # fail fast on a bad name
    from edgedistill.models.loading import load_generator

    spec = load_generator(opts.teacher, **opts.teacher_load).spec  # a bad teacher fails before anything
    if spec.kind == "classifier":  # distilled through a generator, without data unless --data
        from edgedistill.pipeline.compress_classifier import compress_classifier

        return compress_classifier(opts, opts.distill_options.get("method", "replay"), log)
    opts = replace(opts, student_norm=choose_student_norm(opts, spec, targets, log))
    if opts.qat_steps is None and spec.family not in ("resnet", "unet", "dcgan") and _qat_steps(opts):
        # a pruned module becomes a torch.export program, which QAT does not rewrite: PTQ + the gate
        note = "no quantization-aware phase: the student of a module that is not a built-in family is pruned"
        log(f"note: {note}")
        opts = replace(opts, qat_steps=0, notes=[*opts.notes, note])
    preflight(opts, spec, targets, log)  # data, calibration and runtimes, before any training
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    book = StageBook(out)
    timings: dict[str, float] = {}

    if opts.latency_ms is not None:
        t0 = time.perf_counter()
        opts = _search_stage(opts, book, log)
        timings["search_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    student = _distill_stage(opts, book, log)
    timings["distill_s"] = round(time.perf_counter() - t0, 1)

    artifacts: dict[str, Path] = {}
    failed: dict[str, str] = {}
    for given, tgt in zip(opts.targets, targets, strict=True):
        t0 = time.perf_counter()
        name = f"{tgt.name.removeprefix('x86-')} {tgt.precision}"
        try:
            artifacts[name] = _export_stage(opts, given, student, book, log)
        except EdgeDistillError as exc:  # one target failing its gate must not cost the others
            failed[name] = str(exc)
            log(f"export {tgt.name} {tgt.precision}: FAILED: {exc}")
        timings[f"export_{tgt.name}_s"] = round(time.perf_counter() - t0, 1)
    if not artifacts:
        raise EdgeDistillError("no target exported: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))

    t0 = time.perf_counter()
    report = _report_stage(opts, student, artifacts, log, failed)
    timings["report_s"] = round(time.perf_counter() - t0, 1)
    report["timings"] = timings
    report["next"] = next_steps(opts, artifacts)
    if opts.latency_ms is not None:
        report["search"] = search_summary(opts, targets[0], artifacts, log)
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def choose_student_norm(
    opts: CompressOptions, spec: Any, targets: list[Any], log: Callable[[str], None]
) -> str | None:
    """The user's --student-norm, else the teacher's norm, said out loud for an InstanceNorm teacher
    bound for INT8. Measured (benchmarks/instancenorm_int8.py, 300 steps): a BatchNorm student
    quantizes with far less loss (45 vs 30-33 dB against its own fp32) but trails the teacher by
    more (19 vs 23 dB for the INT8 artifact), so the teacher's InstanceNorm stays the default."""
    if opts.student_norm is not None:
        return opts.student_norm
    if any(t.precision == "int8" for t in targets) and spec.kwargs.get("norm") == "instance":
        note = ("student: keeps the teacher's InstanceNorm (measured better vs the teacher after INT8 than a "
                "BatchNorm student; --student-norm batch quantizes with less loss but trails the teacher)")  # fmt: skip
        log(note)
        opts.notes.append(note)
    return None


def preflight(opts: CompressOptions, spec: Any, targets: list[Any], log: Callable[[str], None]) -> None:
    """Everything that can fail after a long distillation, checked before it: each target's runtime
    (or offline compile), and for INT8 targets that the calibration data can serve at the target's
    input size (a folder of a few photos smaller than the input fails here, not after training)."""
    from edgedistill.backends import get_backend

    for tgt in targets:
        backend = get_backend(tgt.backend)
        why = backend.available()
        if why is not None and not backend.compiles_offline:
            raise EdgeDistillError(f"target {tgt.name}: {tgt.backend} is not usable here ({why})")
    int8 = [t for t in targets if t.precision == "int8"]
    if not int8 or opts.data is None:
        return
    from edgedistill.data.calibration import build_calibration

    if spec.kind != "image":
        return
    for hw in dict.fromkeys(
        tuple(opts.size or t.input_size or spec.default_size or (256, 256)) for t in int8
    ):
        with warnings.catch_warnings():  # export repeats any warning about the data where it matters
            warnings.simplefilter("ignore")
            build_calibration(spec, opts.data, opts.calib_size + 8, input_size=hw)  # type: ignore[arg-type]
    log(f"checked: {opts.data} serves {opts.calib_size} calibration samples for {len(int8)} INT8 target(s)")


def next_steps(opts: CompressOptions, artifacts: dict[str, Path]) -> list[str]:
    """Commands to try the results, runnable as printed: one held-out input is saved beside them."""
    import shlex

    first = next(iter(artifacts.values()))
    sample = opts.out / "heldout_input.png"
    steps = []
    if sample.exists():
        steps.append(shlex.join(["edgedistill", "run", str(first), "--input", str(sample), "--output",
                                 str(opts.out / "run_output.png"), "--compare"]))  # fmt: skip
    steps.append(shlex.join(["edgedistill", "bundle", str(first), "--out", str(opts.out / "app.zip")]))
    return steps


# ------------------------------------------------------------------------------------ fingerprints
def _distill_config(opts: CompressOptions) -> DistillConfig:
    from edgedistill.distiller.config import DistillConfig

    build = {"model_kwargs": opts.kwargs or None, "weights": str(opts.weights) if opts.weights else None,
             "student_norm": opts.student_norm}  # fmt: skip
    return DistillConfig(
        teacher=opts.teacher, out=str(opts.out / "student"), width=opts.width, steps=opts.steps, **build,
        data=str(opts.data) if opts.data else None, val_data=str(opts.val_data) if opts.val_data else None,
        cache=opts.cache, threads=opts.threads, sample_every=max(min(opts.steps, 10_000) // 2, 1),
        **{"qat_steps": _qat_steps(opts), **opts.distill_options},
    )  # fmt: skip


def _qat_steps(opts: CompressOptions) -> int:
    """Quantization-aware distillation is on by default when any target exports INT8: a fifth of the
    distillation steps, at most QAT_STEPS (a short fine-tune of a trained student)."""
    if opts.qat_steps is not None:
        return opts.qat_steps
    from edgedistill.core.targets import get_target
    from edgedistill.distiller.qat import QAT_STEPS

    int8 = any(get_target(t, opts.precision).precision == "int8" for t in opts.targets)
    return min(QAT_STEPS, max(opts.steps // 5, 1)) if int8 else 0


def distill_fingerprint(opts: CompressOptions) -> str:
    """The distill stage's options, teacher file bytes and data folder manifests."""
    cfg = _distill_config(opts)
    return fingerprint(
        {**asdict(cfg), "out": None, "threads": None},
        teacher_files(opts.teacher, cfg.weights),
        [opts.data, opts.val_data],
    )


def export_fingerprint(opts: CompressOptions, target: str, student: Path) -> str:
    """An export stage's options, the student's weights and the calibration folder's manifest."""
    from edgedistill.core.targets import get_target

    tgt = get_target(target, opts.precision)
    weights = sorted(p for p in student.iterdir() if p.suffix in (".safetensors", ".pt2"))
    options = {"target": tgt.name, "precision": tgt.precision, "size": opts.size, "calib_size": opts.calib_size,
               "min_psnr": opts.min_psnr, "data": str(opts.data) if opts.data else None}  # fmt: skip
    return fingerprint(options, weights, [opts.data])


# ------------------------------------------------------------------------------------------ stages
def _search_stage(opts: CompressOptions, book: StageBook, log: Callable[[str], None]) -> CompressOptions:
    """The architecture within --latency-ms on the first target (DIR/search/), handed to distill."""
    from edgedistill.core.targets import get_target

    tgt = get_target(opts.targets[0], opts.precision)
    out = opts.out / "search"
    qat = _qat_steps(opts) > 0  # the student's INT8 export compiles as QAT's: the search measures that form
    options = {"target": tgt.name, "precision": tgt.precision, "latency_ms": opts.latency_ms, "host": opts.host,
               "size": opts.size, "search": opts.search_options, "data": str(opts.data) if opts.data else None,
               "qat": qat}  # fmt: skip
    fp = fingerprint(
        options, teacher_files(opts.teacher, str(opts.weights) if opts.weights else None), [opts.data]
    )
    if opts.force or not book.is_done("search", fp, [out / "arch.json", out / "search.json"]):
        from edgedistill.search.api import search

        book.forget("search")
        log(f"search: {opts.teacher} within {opts.latency_ms} ms on {tgt.name} {tgt.precision}")
        search(opts.teacher, opts.targets[0], opts.latency_ms, opts.host, out=out, precision=tgt.precision,
               size=opts.size, data=opts.data, threads=opts.threads, ssh=opts.ssh or None, qat=qat,
               log=lambda m: log(f"  {m}"), **opts.search_options, **opts.teacher_load)  # fmt: skip
        book.mark("search", fp)
    else:
        log(f"search: unchanged, skipped (architecture in {out / 'arch.json'})")
    arch = json.loads((out / "arch.json").read_text())
    return replace(opts, distill_options={**opts.distill_options, "arch": arch})


def search_summary(
    opts: CompressOptions,
    target: Any,
    artifacts: dict[str, Path],
    log: Callable[[str], None],
) -> dict:
    """Budget, predicted and re-measured latency of the chosen student, appended to report.md.

    Re-measured as the budget holds: its artifact for the searched target profiled alone, on --host
    (as `profile --host` runs it) when one was given, else here. Not the report's interleaved
    rounds: beside the teacher's large weights and activations, small students measured 25-30 %
    slower on a 2-core VM (26.9-27.0 ms) than in rounds of students only (20.4-21.0 ms)."""
    from edgedistill.search.space import allow_text, describe

    found = json.loads((opts.out / "search" / "search.json").read_text())
    name = f"{target.name.removeprefix('x86-')} {target.precision}"
    measured = _p50_alone(opts, name, artifacts.get(name), log)
    where = f"on {opts.host} (p50)" if opts.host else "here (p50, profiled alone)"
    chosen = found["chosen"]
    allowed = found.get("allowed") or {}
    summary = {
        "target": target.name, "precision": target.precision, "budget_ms": opts.latency_ms,
        "predicted_ms": chosen["predicted_ms"], "measured_ms": measured, "measured_on": opts.host or "here",
        "arch": chosen["arch"], "allowed": allowed,
        "within_10pct": None if measured is None else measured <= 1.1 * float(opts.latency_ms or 0),
        "latency_source": found["latency_source"], "files": {k: str(opts.out / "search" / k) for k in
                                                            ("search.json", "pareto.png", "arch.json")},
    }  # fmt: skip
    scope = f" of a space limited to {allow_text(allowed)}" if allowed else ""  # --allow
    line = (f"Searched student ({describe(chosen['arch'])}{scope}): budget {opts.latency_ms} ms on {target.name} "
            f"{target.precision}, predicted {chosen['predicted_ms']:.2f} ms, measured {where} "
            f"{'–' if measured is None else f'{measured:.2f}'} ms; Pareto front: search/pareto.png")  # fmt: skip
    md = opts.out / "report.md"
    if md.exists():
        write_text_atomic(md, md.read_text() + "\n" + line + "\n")
    log(line)
    return summary


def _p50_alone(
    opts: CompressOptions, name: str, artifact: Path | None, log: Callable[[str], None]
) -> float | None:
    """The searched target's artifact profiled on its own, on --host when given (the budget's device)."""
    if artifact is None:
        return None
    from edgedistill.profiler.api import profile

    log(f"latency: the searched student ({name}) alone on {opts.host or 'this host'}")
    ssh = opts.ssh
    rep = profile(
        {name: str(artifact)}, host=opts.host, threads=opts.threads, min_time=opts.profile_seconds,
        iterations=10, warmup=3, layers=0, ssh_options=ssh.get("options", ()), identity=ssh.get("identity"),
        remote_python=ssh.get("python", "python3"), progress=False,
    )  # fmt: skip
    stats = rep.models[0].stats
    return round(stats.p50, 4) if stats else None


def _distill_stage(opts: CompressOptions, book: StageBook, log: Callable[[str], None]) -> Path:
    from edgedistill.distiller.api import distill
    from edgedistill.distiller.config import BUDGET_STEP_CAP

    cfg = _distill_config(opts)
    run_dir = Path(cfg.out)
    fp = distill_fingerprint(opts)
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
    shape = (
        f"architecture {opts.distill_options['arch']}"
        if "arch" in opts.distill_options
        else f"width {opts.width}"
    )
    budget = opts.distill_options.get("time_budget_s")
    how_long = f"{budget / 60:g} min" if budget and opts.steps == BUDGET_STEP_CAP else f"{opts.steps} steps"
    log(f"distill: {opts.teacher} -> {shape}, {how_long}")
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
    fp = export_fingerprint(opts, target, student)
    stage = f"export:{tgt.name}-{tgt.precision}"
    if not opts.force and book.is_done(stage, fp, [art / "manifest.json"]):
        log(f"export {tgt.name} {tgt.precision}: unchanged, skipped ({art})")
        return art
    log(f"export {tgt.name} {tgt.precision} -> {art}")
    result = export(
        str(student), target, art, precision=tgt.precision, size=opts.size, calib_data=opts.data,
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
    opts: CompressOptions,
    student: Path,
    artifacts: dict[str, Path],
    log: Callable[[str], None],
    failed: dict[str, str],
) -> dict[str, Any]:
    from edgedistill.data.heldout import heldout_arrays
    from edgedistill.models.loading import load_generator
    from edgedistill.pipeline.quality import save_input_picture, save_sample_grid, score_all
    from edgedistill.pipeline.report import latency_table, write_reports

    spec = load_generator(str(student)).spec
    size = _profile_size(opts, spec, artifacts)
    arrays = heldout_arrays(opts.teacher, spec, size, max(opts.samples, 8), opts.data, opts.val_data)
    x = arrays[spec.inputs[0].name]
    log(f"quality: teacher, student and {len(artifacts)} artifact(s) on {len(x)} held-out inputs")
    scored = score_all(spec, arrays, opts.teacher, student, artifacts, opts.threads, opts.teacher_load)
    grid = save_sample_grid(spec, x, scored, opts.out / "samples.png", opts.samples)
    if spec.kind == "image":  # one held-out input as a file: the printed `edgedistill run` uses it
        save_input_picture(spec, x[0, : spec.image_channels], opts.out / "heldout_input.png")
    log("latency: interleaved rounds over teacher, student and artifacts")
    models = {"teacher": opts.teacher, "student": str(student), **{k: str(v) for k, v in artifacts.items()}}
    latency = latency_table(models, size, opts.threads, opts.profile_seconds, opts.teacher_load)
    return write_reports(opts, models, scored, latency, grid, log, failed)


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
