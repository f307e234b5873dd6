"""CLI verbs of the whole job: `compress` (teacher -> shipped student) and `demo` (registered by cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgedistill.cli.search import Allow
from edgedistill.cli.ssh import Identity, RemotePython, SshOptions, ssh_settings


def register(app: typer.Typer) -> None:
    """Add `compress` and `demo` to `app`."""
    app.command()(compress)
    app.command()(demo)


def compress(
    teacher: Annotated[
        str, typer.Argument(help="embedded teacher name, checkpoint (FAMILY:PATH) or run directory")
    ],
    target: Annotated[list[str], typer.Option("--target", "-t", help="device profile (repeatable)")],
    width: Annotated[float, typer.Option(help="student width (ngf x width)")] = 0.25,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("compressed"),
    data: Annotated[Path | None, typer.Option(help="image folder (default: the teacher's own set)")] = None,
    val_data: Annotated[
        Path | None, typer.Option(help="held-out image folder (default: a fixed tenth of --data)")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="distillation steps (default 1000; with --train-minutes a cap)")
    ] = None,
    train_minutes: Annotated[
        float | None,
        typer.Option(help="train this long: the step count is fitted to this machine's measured speed"),
    ] = None,
    cache: Annotated[int, typer.Option(help="teacher outputs precomputed for N inputs")] = 512,
    colour_aug: Annotated[
        str | None,
        typer.Option(
            help="none | permute | hue: recolour training crops, input and target alike (default: permute "
            "on the bundled photos, none on --data; for tasks that treat channels alike)"
        ),
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="precision for every target (default: each target's)")
    ] = None,
    size: Annotated[tuple[int, int] | None, typer.Option(help="input H W (default: the target's)")] = None,
    calib_size: Annotated[int, typer.Option(help="calibration samples")] = 64,
    min_psnr: Annotated[float, typer.Option(help="quality gate vs fp32 in dB (0 = off)")] = 35.0,
    threads: Annotated[int, typer.Option(help="threads for training, checks and profiling")] = 2,
    profile_seconds: Annotated[float, typer.Option(help="minimum measuring time per model")] = 4.0,
    force: Annotated[bool, typer.Option(help="redo every stage even when unchanged")] = False,
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="constructor argument k=v of a module:Class teacher")
    ] = None,
    weights: Annotated[Path | None, typer.Option(help="weights of a module:Class teacher")] = None,
    student_norm: Annotated[
        str | None,
        typer.Option(
            help="batch | instance (default: the teacher's; BatchNorm for an InstanceNorm teacher and INT8)"
        ),
    ] = None,
    qat_steps: Annotated[
        int | None,
        typer.Option(
            help="quantization-aware KD steps after distilling (default: on for INT8 targets; 0 = off)"
        ),
    ] = None,
    data_free: Annotated[
        bool,
        typer.Option("--data-free", help="classifier teacher: distill without data (default without --data)"),
    ] = False,
    method: Annotated[
        str, typer.Option(help="classifier teacher, data-free: replay | dafl | dfad")
    ] = "replay",
    latency_ms: Annotated[
        float | None,
        typer.Option(
            help="latency budget on the first --target, ms: search the student's architecture (not --width)"
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="with --latency-ms: measure the latency table on user@host")
    ] = None,
    ssh_option: SshOptions = None,
    identity: Identity = None,
    remote_python: RemotePython = "python3",
    allow: Allow = None,
) -> None:
    """Distill TEACHER, export the student for each --target, profile them all side by side."""
    from edgedistill.cli.console import console, parse_kwargs
    from edgedistill.cli.datafree import wants_classifier
    from edgedistill.core.errors import EdgeDistillError
    from edgedistill.distiller.config import BUDGET_STEP_CAP
    from edgedistill.pipeline.compress import CompressOptions
    from edgedistill.pipeline.compress import compress as run

    if steps is None:  # a time budget fills itself; a classifier's distillation has none
        fills = train_minutes and not wants_classifier(teacher, data_free)
        steps = BUDGET_STEP_CAP if fills else 1000
    opts = CompressOptions(
        teacher=teacher, targets=list(target), out=out, width=width, steps=steps, data=data, val_data=val_data, cache=cache,
        precision=precision, size=size, calib_size=calib_size, min_psnr=min_psnr or None, threads=threads,
        profile_seconds=profile_seconds, force=force, kwargs=parse_kwargs(arg), weights=weights, student_norm=student_norm,
        qat_steps=qat_steps, latency_ms=latency_ms, host=host, ssh=ssh_settings(ssh_option, identity, remote_python),
        distill_options={"method": method} if data_free or method != "replay" else {},
    )  # fmt: skip
    if allow:
        from edgedistill.search.space import parse_allow

        if latency_ms is None:
            raise EdgeDistillError("--allow limits the architecture search: give --latency-ms with it")
        opts.search_options["allow"] = parse_allow(allow)
    if train_minutes:
        opts.distill_options["time_budget_s"] = 60.0 * train_minutes
    if colour_aug is not None:
        opts.distill_options["colour_aug"] = colour_aug
    if data_free:
        wants_classifier(teacher, data_free)  # a generator teacher: one clear error
        if data is not None:
            raise EdgeDistillError("--data-free and --data contradict each other: drop one")
    report = run(opts, log=lambda m: console.print(m, highlight=False))
    show_report(report)
    for line in report.get("next", []):
        console.print(f"next: {line}", highlight=False, soft_wrap=True, markup=False)
    failed = report.get("failed") or {}
    if failed:
        raise EdgeDistillError(
            f"{len(failed)} target(s) failed ({'; '.join(f'{k}: {v}' for k, v in failed.items())}); "
            f"the other targets and the report are in {out}"
        )


def show_report(report: dict) -> None:
    from rich.table import Table

    from edgedistill.cli.console import console

    # The terminal gets the columns that decide; report.md has them all.
    cols = report.get("columns") or {"model": "model", "precision": "prec", "MACs": "MACs", "size MB": "MB",
            "p50 ms": "p50 ms", "speedup": "×", "PSNR vs teacher dB": "PSNR vs T", "PSNR vs fp32 dB": "PSNR vs fp32"}  # fmt: skip
    table = Table(title=f"{report['teacher']}: teacher | student | artifacts, this machine")
    for key, head in cols.items():
        table.add_column(
            head, justify="left" if key in ("model", "precision") else "right", no_wrap=key == "model"
        )
    for row in report["rows"]:
        table.add_row(*(row[k] for k in cols))
    console.print(table)
    for label, path in report["files"].items():
        console.print(f"{label}: {path}", highlight=False)


def demo(
    out: Annotated[Path, typer.Option(help="where the demo writes its files")] = Path("demo_out"),
    force: Annotated[bool, typer.Option(help="redo every stage")] = False,
) -> None:
    """compress on the embedded photo teacher for ONNX Runtime INT8 and OpenVINO INT8 (a few minutes)."""
    from edgedistill.cli.console import console
    from edgedistill.pipeline.demo import run_demo

    report = run_demo(out, console, force=force)
    show_report(report)
