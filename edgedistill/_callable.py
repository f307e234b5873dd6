"""`edgedistill.export(...)`, `edgedistill.profile(...)`, `edgedistill.distill(...)` are both a step's
subpackage and its main function: Python binds a subpackage onto its parent once it is imported,
which would shadow a plain function of the same name, so the subpackage itself is made callable."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def make_callable(package: str, module: str, function: str) -> None:
    """Calling the module `package` calls `module.function` (imported on first call)."""

    class _StepPackage(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module(module), function)(*args, **kwargs)

    sys.modules[package].__class__ = _StepPackage
