"""CLI verbs of the profile step (registered on the typer app by edgedistill.cli.app)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgedistill.cli.ssh import Identity, RemotePython, SshOptions

if TYPE_CHECKING:
    from edgedistill.runtime.report import ProfileReport


def register(app: typer.Typer) -> None:
    """Add this step's commands to `app`."""
    app.command()(profile)


def profile(
    models: Annotated[
        list[str],
        typer.Argument(
            help="models to time side by side, the teacher first: artifact directories or model files "
            "(.onnx/.ort/.xml/.engine), or torch models (teacher name, run directory, checkpoint)"
        ),
    ],
    target: Annotated[
        str | None,
        typer.Option("--target", "-t", help="device profile: threads, input size, peak ops for % of peak"),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="run on a device over SSH: user@host[:port] (artifacts only)")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the full report as JSON")] = None,
    md: Annotated[Path | None, typer.Option("--md", help="write the table as Markdown")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="write a PNG: p50 bars with p90 whiskers, top layers")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="threads for every runtime (default: the target's, else all CPUs)")
    ] = None,
    warmup: Annotated[int, typer.Option(help="warm-up calls per model")] = 5,
    warmup_time: Annotated[float, typer.Option(help="... and at least this many seconds of warm-up")] = 0.0,
    iterations: Annotated[
        int, typer.Option("--iterations", "-n", help="at least this many interleaved rounds")
    ] = 20,
    min_time: Annotated[float, typer.Option(help="... and at least this many seconds of measuring")] = 3.0,
    max_time: Annotated[float | None, typer.Option(help="stop measuring after this many seconds")] = None,
    layers: Annotated[int, typer.Option(help="slowest layers to report per model (0: no layer pass)")] = 10,
    size: Annotated[tuple[int, int] | None, typer.Option(help="input H W (default: the artifacts')")] = None,
    batch: Annotated[int, typer.Option()] = 1,
    seed: Annotated[int, typer.Option(help="seed of the random inputs")] = 0,
    inputs: Annotated[
        Path | None, typer.Option(help="inputs to feed instead of random ones (.npz by input name, or .npy)")
    ] = None,
    cv_warn: Annotated[
        float, typer.Option(help="warn that the machine is noisy above this coefficient of variation")
    ] = 0.10,
    roofline: Annotated[
        bool, typer.Option(help="measure this machine's GEMM peak for % of peak (about a second)")
    ] = True,
    ssh_option: SshOptions = None,
    identity: Identity = None,
    remote_python: RemotePython = "python3",
    ssh_timeout: Annotated[
        float | None, typer.Option(help="seconds one SSH step (copy, the run there) may take [default: 900]")
    ] = None,
    arg: Annotated[
        list[str] | None,
        typer.Option("--arg", help="constructor argument k=v of the first MODEL (module:Class teacher)"),
    ] = None,
    weights: Annotated[
        Path | None, typer.Option(help="weights of the first MODEL when it is module:Class")
    ] = None,
) -> None:
    """Time teacher, students and exported artifacts side by side, here or on a device over SSH."""
    from edgedistill.cli.console import console, parse_kwargs
    from edgedistill.profiler.api import profile as run_profile

    report = run_profile(
        models, target=target, threads=threads, host=host, warmup=warmup, warmup_time=warmup_time,
        iterations=iterations, min_time=min_time, max_time=max_time, layers=layers, size=size, batch=batch,
        seed=seed, inputs=inputs, cv_warn=cv_warn, roofline=roofline, ssh_options=ssh_option or (),
        identity=identity, remote_python=remote_python, json_path=json_out, md_path=md, plot_path=plot,
        ssh_timeout=ssh_timeout,
        kwargs=parse_kwargs(arg), weights=weights,
    )  # fmt: skip
    print_report(report, layers_shown=min(layers, 5))
    for label, path in (("JSON", json_out), ("Markdown", md), ("plot", plot)):
        if path is not None:
            console.print(f"{label} written: {path}", highlight=False)


def print_report(report: ProfileReport, layers_shown: int = 5) -> None:
    """The summary table, what was timed, the slowest layers, then any warnings."""
    from rich.markup import escape
    from rich.table import Table

    from edgedistill.cli.console import console

    where = f" on {report.remote}" if report.remote else ""
    table = Table(title=f"latency{escape(where)}")
    rows = report.table_rows()
    left = ("model", "backend", "precision")
    for col in rows[0]:
        table.add_column(col, justify="left" if col in left else "right", no_wrap=col == "model")
    for row in rows:
        table.add_row(*map(escape, row.values()))
    console.print(table)
    for line in report.notes():
        console.print(escape(line.rstrip()), highlight=False, style="dim")
    for m in report.measured:
        if not m.layers or layers_shown <= 0:
            continue
        parts = []
        for layer in m.layers[:layers_shown]:
            kernel = f" [{layer['precision']}]" if layer.get("precision") else ""
            parts.append(f"{layer['name']} {layer['ms']:.2f} ms{kernel}")
        console.print(
            f"[bold]{escape(m.name)}[/] slowest layers: " + escape(", ".join(parts)), highlight=False
        )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
