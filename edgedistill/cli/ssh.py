"""The options that reach a device over SSH, shared by `profile`, `search` and `compress` (--host)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

SshOptions = Annotated[list[str] | None, typer.Option("--ssh-option", help="ssh -o Key=Value (repeatable)")]
Identity = Annotated[Path | None, typer.Option("--identity", "-i", help="ssh private key")]
RemotePython = Annotated[str, typer.Option(help="Python on the device")]


def ssh_settings(ssh_option: list[str] | None, identity: Path | None, remote_python: str) -> dict[str, Any]:
    """What search/latency.py and the compress report pass on to profile's SSH runner."""
    return {"options": list(ssh_option or ()), "identity": identity, "python": remote_python}
