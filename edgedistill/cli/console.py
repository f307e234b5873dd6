"""What every CLI verb shares: the consoles, the common MODEL/--arg/--weights options, number
formatting and `k=v` parsing. Commands import this, never the app that registers them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgedistill.core.errors import EdgeDistillError

console = Console()
err_console = Console(stderr=True)

ModelArg = Annotated[
    str, typer.Argument(help="embedded teacher name, FAMILY:PATH, module:Class, or a checkpoint path")
]
KwargsOpt = Annotated[list[str] | None, typer.Option("--arg", help="constructor argument k=v (repeatable)")]
WeightsOpt = Annotated[Path | None, typer.Option(help="weights for a module:Class model (.safetensors/.pth)")]


def parse_kwargs(pairs: list[str] | None) -> dict[str, Any]:
    """`k=v` pairs; values are read as JSON when they parse (ints, floats, true/false), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise EdgeDistillError(f"--arg '{pair}' is not key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"
