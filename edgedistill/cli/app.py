"""The `edgedistill` command. Thin: parses options and calls the package's functions."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgedistill.cli import export as export_verbs
from edgedistill.cli import pipeline as pipeline_verbs
from edgedistill.cli import profile as profile_verbs
from edgedistill.cli import ship as ship_verbs
from edgedistill.cli.console import KwargsOpt, ModelArg, WeightsOpt, console, err_console, human, parse_kwargs
from edgedistill.core.errors import EdgeDistillError

app = typer.Typer(
    help="Distill a big GAN generator into a compact student, export it for an edge target, profile it there.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def models() -> None:
    """List generator families and the embedded teachers."""
    from edgedistill.models import list_families
    from edgedistill.models.embedded import embedded_teachers

    console.print("[bold]families:[/] " + ", ".join(list_families()))
    table = Table(title="embedded teachers")
    table.add_column("name", no_wrap=True)
    for col in ("family", "kind", "size", "quality"):
        table.add_column(col)
    notes = []
    for name, teacher in embedded_teachers().items():
        spec = teacher.spec
        q = spec.provenance.get("quality", {})
        quality = ", ".join(f"{k}={v}" for k, v in q.items() if isinstance(v, int | float))
        family = f"{spec.family} " + " ".join(
            f"{k}={v}" for k, v in spec.kwargs.items() if k in ("ngf", "n_blocks", "norm", "nz")
        )
        size = "x".join(map(str, spec.default_size or ()))
        table.add_row(name, family, spec.kind, size, quality)
        notes.append(f"{name}: {spec.provenance.get('task') or spec.provenance.get('data', '')}")
    console.print(table)
    for line in notes:
        console.print(line, highlight=False)


@app.command()
def inspect(
    model: ModelArg,
    size: Annotated[tuple[int, int] | None, typer.Option(help="input H W for image generators")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    top: Annotated[int, typer.Option(help="layers to show, by MACs (0 = all)")] = 15,
    arg: KwargsOpt = None,
    weights: WeightsOpt = None,
) -> None:
    """Show a generator's spec, parameters, MACs and its most expensive layers."""
    from edgedistill.metrics.inspection import inspect_model

    info = inspect_model(
        model, size=size, kwargs=parse_kwargs(arg), weights=str(weights) if weights else None
    )
    if as_json:
        print(json.dumps(info))
        return
    spec = info["spec"]
    console.print(f"[bold]{info['source']}[/]  {spec['family'] or ''} {spec['kwargs']}  kind={spec['kind']}")
    console.print(
        f"input {info['input_shapes'][0]}  params {human(info['params'])}  MACs {human(info['macs'])}"
    )
    table = Table()
    for col in ("layer", "type", "output", "params", "MACs", "% MACs"):
        table.add_column(col, justify="right" if col in ("params", "MACs", "% MACs") else "left")
    layers = sorted(info["layers"], key=lambda r: -r["macs"])
    for row in layers[: top or None]:
        share = 100 * row["macs"] / max(info["macs"], 1)
        table.add_row(
            row["name"],
            row["type"],
            str(row["output_shape"]),
            human(row["params"]),
            human(row["macs"]),
            f"{share:.1f}",
        )
    console.print(table)


@app.command()
def distill(
    teacher: ModelArg,
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/student"),
    width: Annotated[
        float, typer.Option(help="student width: ngf x width for built-in families, kept channels otherwise")
    ] = 0.25,
    init: Annotated[str, typer.Option(help="inherit (teacher's strongest channels) | scratch")] = "inherit",
    student_norm: Annotated[
        str | None, typer.Option(help="instance | batch | none (default: the teacher's)")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="image folder (or A/ + B/ pairs); default: the teacher's own set")
    ] = None,
    val_data: Annotated[
        Path | None, typer.Option(help="held-out image folder (default: a fixed tenth of --data)")
    ] = None,
    steps: Annotated[int, typer.Option()] = 2000,
    batch: Annotated[int, typer.Option()] = 8,
    patch: Annotated[int, typer.Option(help="training crop size for image generators")] = 64,
    lr: Annotated[float, typer.Option()] = 2e-4,
    lambda_pix: Annotated[float | None, typer.Option(help="pixel KD weight (default per kind)")] = None,
    lambda_feat: Annotated[float | None, typer.Option(help="feature KD weight (default per kind)")] = None,
    lambda_adv: Annotated[float | None, typer.Option(help="adversarial weight (default per kind)")] = None,
    lambda_gt: Annotated[float, typer.Option(help="pixel loss to the data's targets (A/B pairs)")] = 0.0,
    pix_loss: Annotated[str, typer.Option(help="l1 | l2")] = "l1",
    feat_mode: Annotated[
        str, typer.Option(help="adapter (GAN Compression) | kernel_alignment (CAT)")
    ] = "adapter",
    gan_loss: Annotated[
        str | None, typer.Option(help="lsgan | hinge | nonsat (default: what the teacher's D used)")
    ] = None,
    ema: Annotated[float, typer.Option(help="EMA decay of the student weights")] = 0.999,
    cache: Annotated[int, typer.Option(help="precompute teacher outputs for N inputs (0 = off)")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    checkpoint_every: Annotated[int, typer.Option()] = 250,
    sample_every: Annotated[int, typer.Option()] = 500,
    feature_net: Annotated[
        str | None, typer.Option(help="feature net for FID-style scores (TorchScript path)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
    arg: KwargsOpt = None,
    weights: WeightsOpt = None,
) -> None:
    """Distill TEACHER into a slim student (pixel + feature KD + adversarial); writes a run directory."""
    from edgedistill.distiller.api import distill as run_distill
    from edgedistill.distiller.config import DistillConfig

    cfg = DistillConfig(
        teacher=teacher, out=str(out), width=width, init=init, student_norm=student_norm,
        data=str(data) if data else None, val_data=str(val_data) if val_data else None, steps=steps, batch=batch, patch=patch, lr=lr, lr_d=lr,
        lambda_pix=lambda_pix, lambda_feat=lambda_feat, lambda_adv=lambda_adv, lambda_gt=lambda_gt, pix_loss=pix_loss,
        feat_mode=feat_mode, gan_loss=gan_loss, ema=ema, cache=cache, seed=seed, threads=threads,
        checkpoint_every=checkpoint_every, sample_every=sample_every, feature_net=feature_net,
        model_kwargs=parse_kwargs(arg) or None, weights=str(weights) if weights else None,
    )  # fmt: skip
    run_dir = run_distill(cfg, resume=resume)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if metrics:
        table = Table(title=f"student in {run_dir}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in metrics.items():
            big = isinstance(value, int) and key.startswith(("macs_", "params_"))
            table.add_row(key, human(value) if big else str(value))
        console.print(table)


# Each pipeline step keeps its verbs in a module of this package; each has `register(app)`.
for _step in (export_verbs, profile_verbs, ship_verbs, pipeline_verbs):
    _step.register(app)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except EdgeDistillError as exc:
        from rich.markup import escape  # a message's "[addr]" is text, not a style tag to drop

        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
