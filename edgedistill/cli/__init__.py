"""The `edgedistill` command: `app.py` builds the typer app from one module of verbs per step
(export, profile, ship, pipeline); `console.py` holds what the verbs share. Verbs import
`console`, never `app`, so imports run one way."""

from edgedistill.cli.app import app, main

__all__ = ["app", "main"]
