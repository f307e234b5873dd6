"""Read a JSON file the project wrote, with one clear line when it is missing or damaged. No torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgedistill.core.errors import EdgeDistillError


def read_json(path: str | Path, *, missing: str, fix: str) -> Any:
    """`missing`: the whole message when the file is absent; `fix`: what to do when it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeDistillError(missing) from None
    except json.JSONDecodeError as exc:
        raise EdgeDistillError(f"{path} is not valid JSON ({exc}): {fix}") from None
