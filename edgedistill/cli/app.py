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
from edgedistill.cli import search as search_verbs
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
    arch: Annotated[
        str | None,
        typer.Option(
            help="student architecture instead of --width: JSON or a .json file, e.g. "
            '\'{"widths": [12, 24, 44, 24, 12], "n_blocks": 3}\' (what `edgedistill search` chose)'
        ),
    ] = None,
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
    steps: Annotated[
        int | None, typer.Option(help="training steps (default 2000; a classifier: its method's own)")
    ] = None,
    batch: Annotated[int, typer.Option()] = 8,
    patch: Annotated[int, typer.Option(help="training crop size for image generators")] = 64,
    lr: Annotated[float, typer.Option()] = 2e-4,
    lambda_pix: Annotated[float | None, typer.Option(help="pixel KD weight (default per kind)")] = None,
    lambda_feat: Annotated[float | None, typer.Option(help="feature KD weight (default per kind)")] = None,
    lambda_adv: Annotated[float | None, typer.Option(help="adversarial weight (default per kind)")] = None,
    lambda_gt: Annotated[
        float | None, typer.Option(help="pixel loss to the data's targets where paired (default per kind)")
    ] = None,
    bn_stats: Annotated[
        str | None,
        typer.Option(
            help="batch | frozen: the student's BatchNorm normalises by each batch, or by statistics of "
            "its own activations fixed before training, so training sees the function that is exported "
            "(default: frozen for image generators, batch for noise-driven ones)"
        ),
    ] = None,
    lambda_dfeat: Annotated[
        float | None, typer.Option(help="D-feature matching, student vs teacher output (default per kind)")
    ] = None,
    lambda_colour: Annotated[
        float | None,
        typer.Option(help="L1 of 8x8-cell means vs the teacher, against casts (default per kind)"),
    ] = None,
    pix_loss: Annotated[str, typer.Option(help="l1 | l2")] = "l1",
    feat_mode: Annotated[
        str, typer.Option(help="adapter (GAN Compression) | kernel_alignment (CAT)")
    ] = "adapter",
    gan_loss: Annotated[
        str | None, typer.Option(help="lsgan | hinge | nonsat (default: what the teacher's D used)")
    ] = None,
    ema: Annotated[float, typer.Option(help="EMA decay of the student weights")] = 0.999,
    cache: Annotated[int, typer.Option(help="precompute teacher outputs for N inputs (0 = off)")] = 0,
    cache_refresh: Annotated[
        int | None, typer.Option(help="cache entries renewed per step (default batch/4; 0 = fixed pool)")
    ] = None,
    val_every: Annotated[
        int | None, typer.Option(help="validate every N steps, keep the best (default steps/10; 0 = off)")
    ] = None,
    colour_aug: Annotated[
        str | None,
        typer.Option(
            help="none | permute | hue: random RGB order (hue: and a hue turn) of training crops, input and "
            "target alike (default: permute on the bundled photos, none on --data; for tasks that treat "
            "channels alike: restoration, denoising, super-resolution)"
        ),
    ] = None,
    eval_samples: Annotated[
        int | None, typer.Option(help="held-out samples scored at the end (default 512 photos / 10k noise)")
    ] = None,
    device: Annotated[
        str, typer.Option(help="auto (a CUDA GPU when torch sees one) | cpu | cuda[:N]")
    ] = "auto",
    train_minutes: Annotated[
        float | None,
        typer.Option(
            help="train this long: the step count is fitted to this machine's measured speed (--steps caps it)"
        ),
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    qat_steps: Annotated[
        int, typer.Option(help="a final quantization-aware KD phase of N steps for INT8 export (0 = off)")
    ] = 0,
    checkpoint_every: Annotated[int, typer.Option()] = 250,
    sample_every: Annotated[int, typer.Option()] = 500,
    feature_net: Annotated[
        str | None, typer.Option(help="feature net for FID-style scores (TorchScript path)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
    data_free: Annotated[
        bool,
        typer.Option("--data-free", help="classifier teacher: no real data (the default without --data)"),
    ] = False,
    method: Annotated[
        str, typer.Option(help="classifier teacher, data-free: replay | dafl | dfad")
    ] = "replay",
    bn_weight: Annotated[
        float | None,
        typer.Option(help="classifier teacher: BN-statistics matching weight (default per method)"),
    ] = None,
    arg: KwargsOpt = None,
    weights: WeightsOpt = None,
) -> None:
    """Distill TEACHER into a slim student (pixel + feature KD + adversarial); writes a run directory.
    A classifier teacher is distilled through a generator without data (DAFL/DFAD), or by KD with --data."""
    from edgedistill.cli.datafree import distill_classifier_verb, wants_classifier

    if wants_classifier(teacher, data_free):
        distill_classifier_verb(
            teacher, out, data_free=data_free, method=method, bn_weight=bn_weight, data=data, steps=steps,
            width=width, seed=seed, threads=threads, resume=resume,
        )  # fmt: skip
        return
    from edgedistill.distiller.api import distill as run_distill
    from edgedistill.distiller.config import BUDGET_STEP_CAP, DistillConfig

    cfg = DistillConfig(
        teacher=teacher, out=str(out), width=width, arch=parse_arch(arch), init=init, student_norm=student_norm,
        data=str(data) if data else None, val_data=str(val_data) if val_data else None, steps=steps or (BUDGET_STEP_CAP if train_minutes else 2000), batch=batch, patch=patch, lr=lr, lr_d=lr,
        lambda_pix=lambda_pix, lambda_feat=lambda_feat, lambda_adv=lambda_adv, lambda_gt=lambda_gt, bn_stats=bn_stats, pix_loss=pix_loss,
        lambda_dfeat=lambda_dfeat, lambda_colour=lambda_colour, cache_refresh=cache_refresh, val_every=val_every, eval_samples=eval_samples, colour_aug=colour_aug,
        device=device, time_budget_s=60.0 * train_minutes if train_minutes else None,
        feat_mode=feat_mode, gan_loss=gan_loss, ema=ema, cache=cache, seed=seed, threads=threads,
        checkpoint_every=checkpoint_every, sample_every=sample_every, feature_net=feature_net, qat_steps=qat_steps,
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
for _step in (export_verbs, profile_verbs, search_verbs, ship_verbs, pipeline_verbs):
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


def parse_arch(text: str | None) -> dict | None:
    """--arch: inline JSON, or a JSON file holding the architecture (or a search result's "arch")."""
    if not text:
        return None
    source = Path(text)
    try:
        raw = source.read_text() if source.suffix == ".json" and source.is_file() else text
        value = json.loads(raw)
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"--arch: not JSON nor a readable .json file ({exc})") from None
    value = value.get("arch", value) if isinstance(value, dict) else value
    if not isinstance(value, dict):
        raise typer.BadParameter("--arch must be a JSON object, e.g. '{\"widths\": [12, 24, 44, 24, 12]}'")
    return value
