"""CLI verbs of the ship step: `run` (one inference, to check by eye) and `bundle` (the zip an app embeds)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this step's commands to `app`."""
    app.command("run")(run)
    app.command()(bundle)


def run(
    model: Annotated[
        str,
        typer.Argument(
            help="artifact directory or model file (.onnx/.ort/.xml/.engine), or a teacher name, "
            "run directory or checkpoint (runs in torch)"
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="image to write (.png)")],
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="input image (image -> image generators)")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="noise seed (noise generators), or an inpainter's hole seed; default 0")
    ] = None,
    count: Annotated[int, typer.Option(help="images to generate (noise generators): one grid")] = 1,
    threads: Annotated[int | None, typer.Option(help="inference threads")] = None,
    compare: Annotated[bool, typer.Option(help="write input | output side by side")] = False,
    size: Annotated[
        tuple[int, int] | None, typer.Option(help="resize/center-crop the input to H W first")
    ] = None,
    label: Annotated[
        int | None,
        typer.Option(help="class to generate (label-conditioned generators; default: each in turn)"),
    ] = None,
    mask: Annotated[
        Path | None,
        typer.Option(
            help="inpainters: mask image of the input's size, white where missing (default: random holes)"
        ),
    ] = None,
) -> None:
    """Run MODEL once on an image (or on noise) with the spec's preprocessing and save the picture."""
    from edgedistill.cli.console import console
    from edgedistill.ship.run import run as run_once

    result = run_once(
        model, output, input=input, seed=seed, count=count, threads=threads, compare=compare, size=size,
        label=label, mask=mask,
    )  # fmt: skip
    for note in result.notes:
        console.print(f"  {note}", highlight=False, soft_wrap=True)
    per = f", {result.ms / result.calls:.1f} ms per call" if result.calls > 1 else ""
    console.print(
        f"inference {result.ms:.1f} ms ({result.calls} call(s) on {result.input_shape}{per}; "
        f"{result.label}; a single cold run, not a benchmark)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"wrote {result.output}", highlight=False, soft_wrap=True)


def bundle(
    artifact: Annotated[Path, typer.Argument(help="artifact directory written by `edgedistill export`")],
    out: Annotated[Path, typer.Option("--out", "-o", help="zip to write")] = Path("app.zip"),
) -> None:
    """Pack an artifact for an app: model files, manifest, standalone run_model.py, requirements, README."""
    from edgedistill.cli.console import console, human
    from edgedistill.ship.bundle import bundle as make_bundle

    result = make_bundle(artifact, out)
    console.print(
        f"wrote {result.path} ({human(result.size)}B): {', '.join(result.members)}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"try it: [bold]unzip {shlex.quote(str(result.path))} -d app && cd app && "
        "pip install -r requirements.txt && python run_model.py --help[/]",
        highlight=False,
        soft_wrap=True,
    )
