"""edgedistill: distill a big GAN generator, export it for an edge target, profile it there.

Attributes are imported lazily so the runtime part (profile on a device) needs no torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_generator": "edgedistill.models.loading",
    "inspect_model": "edgedistill.inspection",
    "create": "edgedistill.models.registry",
    "list_families": "edgedistill.models.registry",
    "embedded_teachers": "edgedistill.models.embedded",
    "GeneratorSpec": "edgedistill.models.spec",
    "EdgeDistillError": "edgedistill.errors",
}


_STEPS = ("distill", "export", "profile")  # callable subpackages (see edgedistill/_callable.py)


def __getattr__(name: str) -> Any:
    if name in _STEPS:
        import importlib

        return importlib.import_module(f"edgedistill.{name}")
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgedistill' has no attribute '{name}'")


__all__ = [*_LAZY, *_STEPS, "__version__"]
