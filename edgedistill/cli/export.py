"""CLI verbs of the export step: `export`, `targets`, `build-engine` (registered by edgedistill.cli.app)."""

from __future__ import annotations

import json
import platform
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from edgedistill.core.targets import Target


def register(app: typer.Typer) -> None:
    """Add this step's commands to `app`."""
    app.command()(targets)
    app.command()(export)
    app.command("build-engine")(build_engine)


def targets(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """List the device profiles export and profile accept (targets/*.toml)."""
    from rich.table import Table

    from edgedistill.cli.console import console
    from edgedistill.core.targets import load_targets
    from edgedistill.exporter.manifest import target_dict

    found = load_targets()
    here = {name: _runs_here(t) for name, t in found.items()}
    if as_json:
        print(json.dumps({name: {**target_dict(t), "runs_here": here[name]} for name, t in found.items()}))
        return
    table = Table(title="targets")
    for col in ("target", "backend", "device", "precisions (default first)", "threads", "input", "runs here"):
        table.add_column(col, no_wrap=col in ("target", "backend"))
    for name, t in found.items():
        precisions = [t.precision, *[p for p in t.precisions if p != t.precision]]
        size = "x".join(map(str, t.input_size or ())) + ("" if t.dynamic_shape else " static")
        table.add_row(
            name, t.backend, f"{t.device} {t.arch}", ", ".join(precisions), str(t.threads or "-"), size,
            ", ".join(here[name]) or "export only",
        )  # fmt: skip
    console.print(table)


def _runs_here(t: Target) -> list[str]:
    """The target's precisions this host can run (its CPU, its runtimes), default first."""
    from edgedistill.backends import get_backend

    if t.arch != platform.machine():
        return []
    runs = get_backend(t.backend).precisions_here(t.device)
    return [p for p in dict.fromkeys([t.precision, *t.precisions]) if p in runs]


def export(
    model: Annotated[
        str, typer.Argument(help="teacher name, run directory, checkpoint, or an .onnx from edgedistill")
    ],
    target: Annotated[str, typer.Option("--target", "-t", help="device profile (see `edgedistill targets`)")],
    out: Annotated[
        Path | None, typer.Option(help="artifact directory (default exports/TARGET-PRECISION)")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="int8 | fp16 | bf16 | fp32 (default: the target's)")
    ] = None,
    size: Annotated[tuple[int, int] | None, typer.Option(help="input H W (default: the target's)")] = None,
    calib_data: Annotated[
        Path | None, typer.Option(help="image folder for calibration (default: the teacher's set)")
    ] = None,
    calib_size: Annotated[int, typer.Option(help="calibration samples (warns below 32)")] = 64,
    calib_method: Annotated[
        str | None, typer.Option(help="minmax | entropy | percentile (default: the recipe's)")
    ] = None,
    holdout: Annotated[int, typer.Option(help="held-out samples the quality gate scores on")] = 8,
    min_psnr: Annotated[float, typer.Option(help="quality gate: PSNR vs fp32 in dB (0 = no gate)")] = 35.0,
    force: Annotated[
        bool, typer.Option(help="write the best attempt even when the gate does not hold")
    ] = False,
    threads: Annotated[int | None, typer.Option(help="threads for calibration and checks")] = None,
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="constructor argument k=v (repeatable)")
    ] = None,
    weights: Annotated[Path | None, typer.Option(help="weights for a module:Class model")] = None,
) -> None:
    """Export MODEL for a target: ONNX -> calibrated, compiled artifact that passes the quality gate."""
    from edgedistill.cli.console import console, parse_kwargs
    from edgedistill.exporter.api import export as run_export

    result = run_export(
        model, target, out, precision=precision, size=size, calib_data=calib_data, calib_size=calib_size,
        calib_method=calib_method, holdout=holdout, min_psnr=min_psnr or None, force=force, threads=threads,
        kwargs=parse_kwargs(arg), weights=weights, log=lambda m: console.print(f"  {m}", highlight=False),
    )  # fmt: skip
    print_summary(result.out, result.manifest, model, parse_kwargs(arg), weights)


def profile_command(
    out: Path, m: dict, model: str, kwargs: dict | None = None, weights: Path | None = None
) -> str:
    """The `edgedistill profile` line that compares this artifact with its teacher, runnable as
    printed: a `module:Class` teacher keeps the --arg/--weights it was built with."""
    config = ((m.get("spec") or {}).get("provenance", {}).get("config")) or {}
    teacher = config.get("teacher")
    if teacher and teacher != str(model):  # a student run: its teacher comes first
        models, build = [teacher, str(model)], (config.get("model_kwargs") or {}, config.get("weights"))
    else:
        models, build = [str(model)], (kwargs or {}, weights)
    words = ["edgedistill", "profile", *models, str(out)]
    for key, value in build[0].items():
        words += ["--arg", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    if build[1]:
        words += ["--weights", str(build[1])]
    return " ".join(map(shlex.quote, words))


def print_summary(
    out: Path, m: dict, model: str, kwargs: dict | None = None, weights: Path | None = None
) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgedistill.cli.console import console, human

    q = m["quality"]
    table = Table(title=f"artifact {out}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    t = m["target"]
    table.add_row("target", f"{t['name']} ({m['backend']}, {t['device']} {t['arch']})")
    table.add_row("precision", m["precision"])
    table.add_row("files", ", ".join(f"{f} ({human(m['sizes'].get(f, 0))}B)" for f in m["files"]))
    gate = "passed" if q["passed"] else "NOT passed (--force)"
    if q.get("min_psnr") is None and q.get("min_agreement") is None:
        gate = "off"
    measured = f"PSNR {q['psnr_vs_fp32']:.2f} dB, SSIM {q['ssim_vs_fp32']:.4f}"
    if q.get("agreement") is not None:  # a classifier: gated on top-1 agreement
        measured = f"top-1 agreement {100 * q['agreement']:.2f} %"
    table.add_row(
        "quality vs fp32",
        f"{measured}, max |err| {q['max_abs_err']:.3g} on {q['samples']} held-out samples; gate {gate}",
    )
    gate_info = m.get("gate") or {}
    by_target, by_gate = gate_info.get("kept_by_target") or [], gate_info.get("kept_by_gate") or []
    if by_target:
        table.add_row("kept higher", f"{', '.join(by_target)} (the target's first/last-layer policy)")
    if by_gate:
        before = q["before_fallback"]["psnr_vs_fp32"]
        speed = gate_info.get("speed") or {}
        cost = f", {speed['slowdown']}x the plain int8 latency" if speed else ""
        names = ", ".join(by_gate[:6]) + (" …" if len(by_gate) > 6 else "")
        table.add_row(
            "kept by gate",
            f"{len(by_gate)} layer(s): {names} (PSNR {before:.2f} → {q['psnr_vs_fp32']:.2f} dB{cost})",
        )
    for note in m.get("notes") or []:
        table.add_row("note", note)
    console.print(table)
    build = (m.get("backend_info") or {}).get("build_command")
    if build:  # engines are built where they run: the artifact travels, the device builds and profiles
        here = shlex.quote(out.name)
        console.print(
            f"on the device: copy {out} there, then [bold]edgedistill build-engine {here} && "
            f"edgedistill profile {here}[/] (or `sh build.sh` inside it: plain trtexec)",
            highlight=False,
        )
        return
    console.print(
        f"next: [bold]{escape(profile_command(out, m, model, kwargs, weights))}[/]",
        highlight=False,
        soft_wrap=True,
    )


def build_engine(
    artifact: Annotated[
        Path, typer.Argument(help="artifact directory written by `export --target jetson-*`")
    ],
    workspace_mb: Annotated[
        int | None, typer.Option(help="builder workspace (default: the target's)")
    ] = None,
    dla_core: Annotated[
        int | None, typer.Option(help="build for this DLA core (Jetson AGX Orin: 0 or 1)")
    ] = None,
) -> None:
    """On the Jetson: build the TensorRT engine of an exported artifact (engines are tied to a GPU)."""
    from edgedistill.backends.tensorrt import build_engine as build
    from edgedistill.cli.console import console

    engine = build(artifact, workspace_mb=workspace_mb, dla_core=dla_core)
    console.print(f"engine written: {engine}")
    console.print(
        f"next: [bold]edgedistill profile {shlex.quote(str(artifact))}[/]", highlight=False, soft_wrap=True
    )
