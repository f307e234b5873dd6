"""The artifact directory (contract 3 in docs/architecture.md): compiled model files plus
manifest.json, as `edgedistill export` writes them and every runner, `run` and `bundle` read them.

The manifest names its files; those names are paths *inside* the directory. A tampered manifest
naming `../secret` or `/etc/hostname` is refused here, once, so no reader can be led outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.jsonfile import read_json

MANIFEST = "manifest.json"


def check_member_name(name: object, where: Path) -> str:
    """A manifest file name that stays inside its directory, or one clear error."""
    bad = (
        not isinstance(name, str)
        or not name
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or PureWindowsPath(name).drive != ""
        or ".." in PurePosixPath(name.replace("\\", "/")).parts
    )
    if bad:
        raise EdgeDistillError(
            f"{where}: manifest file entry {name!r} points outside the artifact directory: "
            "re-run `edgedistill export` (a manifest names files inside its own directory only)"
        )
    return name


def member_path(directory: Path, name: object, where: Path | None = None, links_ok: bool = False) -> Path:
    """`directory / name` for a file the manifest names, refused when the name or a symbolic link
    on the way leads outside `directory` (a clean manifest naming a link to ../secret is no better).
    `links_ok`: the caller named the file itself (a bare model file), so its links are its own."""
    where = where or directory / MANIFEST
    path = directory / check_member_name(name, where)
    if not links_ok and not path.resolve().is_relative_to(directory.resolve()):
        raise EdgeDistillError(
            f"{where}: manifest file entry {name!r} is a link that points outside the artifact directory: "
            "re-run `edgedistill export` (an artifact holds its files, not links to files elsewhere)"
        )
    return path


@dataclass
class Artifact:
    """An artifact directory (contract 3): compiled model files + manifest.json."""

    dir: Path
    manifest: dict[str, Any]

    @property
    def backend(self) -> str:
        return self.manifest["backend"]

    @property
    def precision(self) -> str:
        return self.manifest.get("precision", "fp32")

    @property
    def model_path(self) -> Path:
        # The name is checked here too: an Artifact may be built from a manifest that never went
        # through read_manifest. Links are checked where a manifest is read and where files are
        # shipped, not here: a model file the caller names directly may be a link of theirs.
        return self.dir / check_member_name(self.manifest["files"][0], self.dir / MANIFEST)

    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest.get("spec", {})

    @property
    def name(self) -> str:
        return f"{self.dir.name} ({self.backend} {self.precision})"


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    missing = f"{directory} has no {MANIFEST}: give an artifact directory from `edgedistill export`"
    manifest = read_json(path, missing=missing, fix="re-run `edgedistill export`")
    for key in ("backend", "files"):
        if key not in manifest:
            raise EdgeDistillError(f"{path} lacks '{key}': re-run `edgedistill export`")
    files = manifest["files"]
    if not isinstance(files, list) or not files:
        raise EdgeDistillError(
            f"{path}: 'files' must be a non-empty list of file names: re-run `edgedistill export`"
        )
    for name in files:
        member_path(directory, name, path)
    return manifest


MODEL_SUFFIXES = {
    ".onnx": "onnxruntime",
    ".ort": "onnxruntime",
    ".xml": "openvino",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
}


def load_artifact(path: str | Path) -> Artifact:
    """An artifact directory, or a bare model file (.onnx/.ort/.xml/.engine) with or without a manifest."""
    path = Path(path)
    if path.is_dir():
        return Artifact(path, read_manifest(path))
    if not path.exists():
        raise EdgeDistillError(f"artifact not found: {path}")
    backend = MODEL_SUFFIXES.get(path.suffix)
    if backend is None:
        raise EdgeDistillError(
            f"{path}: not a model file edgedistill can run (use {', '.join(MODEL_SUFFIXES)} or an artifact directory)"
        )
    if (path.parent / MANIFEST).exists():
        manifest = read_manifest(path.parent)
        if path.name in manifest["files"]:
            files = [path.name] + [f for f in manifest["files"] if f != path.name]
            return Artifact(path.parent, {**manifest, "files": files})
    return Artifact(path.parent, {"backend": backend, "files": [path.name], "precision": "unknown"})
