"""CLI verbs of the export step (registered on the typer app by edgedistill.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this step's commands to `app`."""
