"""Generator families, discriminators, the embedded teachers and safe loading.

Attributes are imported lazily: `edgedistill.core.spec` (numpy only) must import on a device
that has no torch, and importing a submodule runs this file first.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "GeneratorSpec": "edgedistill.core.spec",
    "TensorSpec": "edgedistill.core.spec",
    "spec_for_family": "edgedistill.core.spec",
    "create": "edgedistill.models.registry",
    "family_class": "edgedistill.models.registry",
    "list_families": "edgedistill.models.registry",
    "register": "edgedistill.models.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgedistill.models' has no attribute '{name}'")


__all__ = list(_LAZY)
