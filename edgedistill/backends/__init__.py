"""Backends by name, imported lazily so a device only needs the runtime it uses."""

from __future__ import annotations

import importlib

from edgedistill.backends.base import Backend, CompileResult, LayerTime, Runner
from edgedistill.core.artifact import Artifact, load_artifact
from edgedistill.core.errors import EdgeDistillError

_BACKENDS = {
    "onnxruntime": "edgedistill.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edgedistill.backends.openvino:OpenVinoBackend",
    "tensorrt": "edgedistill.backends.tensorrt:TensorRtBackend",
}


def backend_names() -> list[str]:
    return list(_BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend called `name` (its module imports numpy only; the runtime loads on first use)."""
    if name not in _BACKENDS:
        raise EdgeDistillError(f"unknown backend '{name}': use one of {', '.join(_BACKENDS)}")
    module, cls = _BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def load_runner(artifact: Artifact | str, threads: int | None = None, profile_layers: bool = False) -> Runner:
    """Load an artifact with its backend, or one clear line saying why it cannot run here."""
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    backend = get_backend(art.backend)
    why = backend.available()
    if why is not None:
        raise EdgeDistillError(f"{art.dir}: {art.backend} cannot run here: {why}")
    return backend.load(art, threads=threads, profile_layers=profile_layers)


__all__ = [
    "Artifact",
    "Backend",
    "CompileResult",
    "LayerTime",
    "Runner",
    "backend_names",
    "get_backend",
    "load_artifact",
    "load_runner",
]
