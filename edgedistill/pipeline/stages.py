"""Skip a finished stage whose inputs and options are unchanged: compress re-runs resume, not redo.

DIR/stages.json maps a stage name to the fingerprint it finished with: a hash of its options, of
its input files' bytes (teacher checkpoints, student weights) and of a manifest of its data folders
(names, sizes, modification times: cheap for thousands of images). A stage is skipped when its
fingerprint matches and its outputs still exist, so a teacher or --data changed in place re-runs it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.hashing import file_sha256

STAGES_FILE = "stages.json"


def fingerprint(
    options: dict[str, Any],
    files: Iterable[Path] = (),
    folders: Iterable[Path | None] = (),
) -> str:
    """Hash of the options (JSON), of the files' bytes and of the folders' manifests."""
    h = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    for path in files:
        h.update(f"{path.name}:{file_sha256(path)}".encode())
    for folder in folders:
        if folder is not None:
            h.update(f"{folder}:{folder_manifest(Path(folder))}".encode())
    return h.hexdigest()[:16]


def folder_manifest(folder: Path) -> str:
    """Digest of every file under `folder` by relative name, size and modification time (ns)."""
    h = hashlib.sha256()
    if folder.is_dir():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            st = path.stat()
            h.update(f"{path.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def teacher_files(teacher: str, weights: str | None = None) -> list[Path]:
    """The files a teacher is loaded from, in each form models/loading.py takes: a run directory's
    files, a checkpoint (FAMILY:PATH or a bare path) with its spec sidecars, and `weights`. An
    embedded teacher's name names no file: it ships with the package."""
    path = Path(teacher)
    _, sep, rest = teacher.partition(":")
    if not path.exists() and sep and Path(rest).exists():
        path = Path(rest)
    found: list[Path] = []
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file())
    elif path.is_file():
        sidecars = [path.with_suffix(".json"), path.parent / "model.json"]
        found = [path, *(p for p in sidecars if p.is_file() and p != path)]
    if weights and Path(weights).is_file():  # a module:Class teacher's spec sits beside its weights
        w = Path(weights)
        beside = [w.with_suffix(".json"), w.parent / "model.json"]
        found += [w, *(p for p in beside if p.is_file() and p != w)]
    return list(dict.fromkeys(found))


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
