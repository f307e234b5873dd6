"""The backend contract (DESIGN.md, contract 4): export and profile never branch on a runtime's name.

A backend compiles an fp32 ONNX model for a target into files in an artifact directory, and loads
an artifact into a Runner. Runtime code here imports only numpy (and the backend's own package,
lazily), so `edgedistill profile` runs on a device that has no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgedistill.errors import EdgeDistillError
from edgedistill.jsonfile import read_json

if TYPE_CHECKING:
    from edgedistill.export.calibset import CalibrationSet
    from edgedistill.targets import Target

MANIFEST = "manifest.json"


@dataclass
class LayerTime:
    """Mean time of one layer per inference, as the runtime's own profiler reports it."""

    name: str
    op_type: str
    ms: float
    precision: str = ""  # the kernel/precision that really ran (e.g. OpenVINO's "jit_avx512_I8")


@dataclass
class CompileResult:
    """What `Backend.compile` wrote into the artifact directory."""

    files: list[str]  # relative to the artifact directory, the model to load first
    precision: str
    kept_higher_precision: list[str] = field(default_factory=list)  # ONNX node names not quantized
    # An ONNX file (relative) that stands for the compiled model where its runtime is absent here
    # (TensorRT without a GPU: its explicit-QDQ ONNX runs under ONNX Runtime for the quality gate).
    portable_onnx: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # goes into the manifest under "backend_info"


class Runner(Protocol):
    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def layer_times(self) -> list[LayerTime]:
        """Per-layer profile of the runs since load (empty where the runtime has none or
        the runner was loaded without `profile_layers=True`)."""
        ...


class Backend(Protocol):
    name: str
    # True when compile() works without the runtime installed here (TensorRT: it writes the ONNX
    # for the device and the engine is built there); such a CompileResult sets portable_onnx.
    compiles_offline: bool
    # True when compile() takes `ranges=` (export.qdq.TensorRanges, ONNX Runtime's calibration): the
    # quality gate's repeated int8 compiles then calibrate once. OpenVINO calibrates inside NNCF.
    takes_ranges: bool
    symmetric_int8: bool  # int8 activations with zero point 0 (TensorRT): the gate ranks layers alike

    def available(self) -> str | None:
        """None when usable here, else one line saying what is missing and how to get it."""
        ...

    def compile(
        self,
        onnx_path: Path,
        target: Target,
        calib: CalibrationSet | None,
        out_dir: Path,
        keep_higher: Sequence[str] = (),
    ) -> CompileResult:
        """Compile `onnx_path` (fp32) for `target` at `target.precision` into `out_dir`.

        `keep_higher` names ONNX nodes to leave at higher precision (the quality gate's fallback).
        """
        ...

    def load(
        self, artifact: Artifact, threads: int | None = None, profile_layers: bool = False
    ) -> Runner: ...


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
        return self.dir / self.manifest["files"][0]

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
