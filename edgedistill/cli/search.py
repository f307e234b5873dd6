"""CLI verb of the search step: a student architecture chosen by the target's latency, not a guessed width."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgedistill.cli.ssh import Identity, RemotePython, SshOptions, ssh_settings

Allow = Annotated[
    list[str] | None,
    typer.Option(
        "--allow",
        help="limit one choice of the search space to these options, KEY=OPTION[,OPTION] (repeatable): "
        "block=plain keeps depthwise-separable blocks out, upsample=pixelshuffle,nearest ConvTranspose",
    ),
]


def register(app: typer.Typer) -> None:
    """Add this step's commands to `app`."""
    app.command()(search)


def search(
    teacher: Annotated[
        str, typer.Argument(help="embedded teacher name or a built-in family's run/checkpoint")
    ],
    target: Annotated[str, typer.Option("--target", "-t", help="target profile (name or .toml)")],
    latency_ms: Annotated[float, typer.Option(help="latency budget per inference on the target, ms")],
    host: Annotated[
        str | None, typer.Option(help="measure the latency table on a device over SSH: user@host[:port]")
    ] = None,
    ssh_option: SshOptions = None,
    identity: Identity = None,
    remote_python: RemotePython = "python3",
    out: Annotated[Path, typer.Option(help="where search.json, pareto.png and arch.json go")] = Path(
        "search"
    ),
    precision: Annotated[str | None, typer.Option(help="fp32 | fp16 | int8 (default: the target's)")] = None,
    size: Annotated[
        tuple[int, int] | None, typer.Option(help="input H W (default: the target's, else the spec's)")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="image folder for the quality proxy (default: the teacher's set)")
    ] = None,
    samples: Annotated[int, typer.Option(help="architectures sampled (MACs only)")] = 60,
    predict_max: Annotated[int, typer.Option(help="of them, how many get a latency prediction")] = 24,
    kd_top: Annotated[int, typer.Option(help="candidates fine-tuned briefly for the final ranking")] = 4,
    kd_steps: Annotated[int, typer.Option(help="KD steps per fine-tuned candidate")] = 300,
    evolve: Annotated[int, typer.Option(help="children grown towards the budget and predicted")] = 12,
    verify: Annotated[
        bool, typer.Option(help="measure the finalists whole on the target; choose the best within budget")
    ] = True,
    qat: Annotated[
        bool,
        typer.Option(
            help="the student will be distilled quantization-aware (compress's default for INT8): "
            "INT8 latency measured as its export compiles it; --no-qat for a calibrated export"
        ),
    ] = True,
    time_budget: Annotated[
        float, typer.Option(help="seconds before the search settles on what it has")
    ] = 600.0,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[int | None, typer.Option(help="torch and runtime threads")] = 2,
    allow: Allow = None,
) -> None:
    """Search TEACHER's family for the student best by a quality proxy within --latency-ms on --target."""
    from rich.table import Table

    from edgedistill.cli.console import console
    from edgedistill.search.api import search as run_search
    from edgedistill.search.result import Candidate
    from edgedistill.search.space import describe, parse_allow

    result = run_search(
        teacher, target, latency_ms, host, out=out, precision=precision, size=size, data=data, samples=samples,
        predict_max=predict_max, kd_top=kd_top, kd_steps=kd_steps, evolve=evolve, verify=verify, qat=qat, time_budget_s=time_budget, seed=seed,
        threads=threads, allow=parse_allow(allow), ssh=ssh_settings(ssh_option, identity, remote_python),
        log=lambda m: console.print(m, highlight=False),
    )  # fmt: skip
    table = Table(title=f"Pareto front: {result.target} {result.precision}, budget {result.budget_ms:g} ms")
    for col in ("predicted ms", "measured ms", "proxy PSNR dB", "GMACs", "architecture"):
        table.add_column(col, justify="left" if col == "architecture" else "right")
    for i in result.pareto:
        c = result.candidates[i]
        mark = " (chosen)" if c is result.chosen else ""
        ms = "–" if c.measured_ms is None else f"{c.measured_ms:.2f}"
        table.add_row(
            f"{c.predicted_ms:.2f}", ms, f"{c.quality:.2f}", f"{c.macs / 1e9:.3f}", describe(c.arch) + mark
        )
    console.print(table)

    def latency(c: Candidate) -> str:
        measured = f", measured {c.measured_ms:.2f} ms" if c.measured_ms is not None else ""
        return f"predicted {c.predicted_ms:.2f} ms{measured}, proxy {c.quality:.2f} dB"

    console.print(f"chosen: {describe(result.chosen.arch)}  {latency(result.chosen)}")
    if result.uniform is not None:
        console.print(f"uniform --width {result.uniform.uniform}: {latency(result.uniform)}")
    if result.measured_ratio is not None:
        console.print(f"finalists measured {result.measured_ratio:.2f}x their predicted latency (median)")
    console.print(f"wrote {out}/search.json, {out}/pareto.png, {out}/arch.json ({result.latency_source})")
