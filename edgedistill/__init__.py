"""edgedistill: distill a big GAN generator, export it for an edge target, profile it there.

The public Python API is the three steps and a few helpers, as plain functions:

    edgedistill.distill(teacher, ...) -> run directory      (edgedistill/distiller/api.py)
    edgedistill.export(model, target, out, ...) -> artifact (edgedistill/exporter/api.py)
    edgedistill.profile(models, ...) -> ProfileReport       (edgedistill/profiler/api.py)

Each function imports its step when called, so `import edgedistill` stays light and works on a
device that has numpy and a runtime but no torch. The step packages are named distiller/,
exporter/, profiler/ so that these functions never collide with a subpackage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgedistill.core.errors import EdgeDistillError

if TYPE_CHECKING:
    from pathlib import Path

    from edgedistill.core.spec import GeneratorSpec
    from edgedistill.exporter.api import ExportResult
    from edgedistill.runtime.report import ProfileReport

__version__ = "0.1.0"


def distill(*args: Any, **kwargs: Any) -> Path:
    """Teacher in, a student run directory out (see edgedistill.distiller.api.distill)."""
    from edgedistill.distiller.api import distill as run

    return run(*args, **kwargs)


def export(*args: Any, **kwargs: Any) -> ExportResult:
    """A generator in, a quality-gated artifact directory for one target out (exporter.api.export)."""
    from edgedistill.exporter.api import export as run

    return run(*args, **kwargs)


def profile(*args: Any, **kwargs: Any) -> ProfileReport:
    """Teacher, students and artifacts timed side by side, here or over SSH (profiler.api.profile)."""
    from edgedistill.profiler.api import profile as run

    return run(*args, **kwargs)


def load_generator(*args: Any, **kwargs: Any) -> Any:
    """Any supported model reference -> LoadedGenerator (edgedistill.models.loading)."""
    from edgedistill.models.loading import load_generator as load

    return load(*args, **kwargs)


def inspect_model(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Spec, parameters, MACs and the heaviest layers of a model (edgedistill.metrics.inspection)."""
    from edgedistill.metrics.inspection import inspect_model as inspect

    return inspect(*args, **kwargs)


def create(*args: Any, **kwargs: Any) -> Any:
    """A built-in family's generator by name (edgedistill.models.registry.create)."""
    from edgedistill.models.registry import create as make

    return make(*args, **kwargs)


def list_families() -> list[str]:
    """Names of the built-in generator families."""
    from edgedistill.models.registry import list_families as names

    return names()


def embedded_teachers() -> dict[str, Any]:
    """The teachers shipped inside the package, by name."""
    from edgedistill.models.embedded import embedded_teachers as names

    return names()


def __getattr__(name: str) -> Any:
    if name == "GeneratorSpec":  # a class, re-exported without importing it for every user
        from edgedistill.core.spec import GeneratorSpec

        return GeneratorSpec
    raise AttributeError(f"module 'edgedistill' has no attribute '{name}'")


__all__ = [
    "EdgeDistillError",
    "GeneratorSpec",
    "__version__",
    "create",
    "distill",
    "embedded_teachers",
    "export",
    "inspect_model",
    "list_families",
    "load_generator",
    "profile",
]
