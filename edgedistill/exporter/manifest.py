"""manifest.json of an artifact directory (contract 3): what was built, for what, and how good it is."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgedistill.core.artifact import MANIFEST
from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.targets import Target
from edgedistill.core.versions import installed_versions

TOOLS = ("edgedistill", "torch", "onnx", "onnxruntime", "onnxslim", "openvino", "nncf", "tensorrt")


def tool_versions() -> dict[str, str]:
    return installed_versions(TOOLS)


def file_sizes(directory: Path) -> dict[str, int]:
    return {
        str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file()
    }


def target_dict(target: Target) -> dict[str, Any]:
    d = asdict(target)
    d["path"] = None
    d["precisions"] = list(target.precisions)
    return d


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add sizes, tool versions and a timestamp; write atomically; return what was written."""
    manifest = {
        **manifest,
        "sizes": file_sizes(directory),
        "versions": tool_versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest
