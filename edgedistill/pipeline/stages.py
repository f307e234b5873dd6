"""Skip a finished stage whose inputs and options are unchanged: compress re-runs resume, not redo.

DIR/stages.json maps a stage name to the fingerprint (hash of its options and input files) it
finished with. A stage is skipped when its fingerprint matches and its outputs still exist.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.hashing import file_sha256

STAGES_FILE = "stages.json"


def fingerprint(options: dict[str, Any], files: list[Path] = ()) -> str:  # type: ignore[assignment]
    """Hash of the options (JSON) and of the input files' bytes."""
    h = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    for path in files:
        h.update(f"{path.name}:{file_sha256(path)}".encode())
    return h.hexdigest()[:16]


class StageBook:
    """Which stages of a compress directory are done, and with what fingerprint."""

    def __init__(self, out: Path) -> None:
        self.path = out / STAGES_FILE
        try:
            self.done: dict[str, str] = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.done = {}

    def is_done(self, stage: str, fp: str, outputs: list[Path]) -> bool:
        return self.done.get(stage) == fp and all(p.exists() for p in outputs)

    def mark(self, stage: str, fp: str) -> None:
        self.done[stage] = fp
        write_text_atomic(self.path, json.dumps(self.done, indent=2) + "\n")

    def forget(self, stage: str) -> None:
        self.done.pop(stage, None)
        write_text_atomic(self.path, json.dumps(self.done, indent=2) + "\n")
