"""A tiny registry of generator/discriminator families: `create("resnet", ngf=16)`.

Each family is a class registered under a short name, so a model.json can rebuild a model from
`family` + `kwargs` without pickling code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from edgedistill.core.errors import EdgeDistillError

_FAMILIES: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a family creatable by name."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        _FAMILIES[name] = cls
        cls.family = name  # type: ignore[attr-defined]
        return cls

    return add


def list_families() -> list[str]:
    _ensure_loaded()
    return sorted(_FAMILIES)


def family_class(name: str) -> type[nn.Module]:
    _ensure_loaded()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise EdgeDistillError(
            f"unknown model family '{name}': choose one of {', '.join(list_families())}"
        ) from None


def create(family: str, **kwargs: Any) -> nn.Module:
    """Build a registered family with its constructor kwargs."""
    cls = family_class(family)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise EdgeDistillError(f"family '{family}' does not take these arguments: {exc}") from None


def _ensure_loaded() -> None:
    # Importing the family modules registers them; done lazily so the package imports without torch.
    from edgedistill.models import classifier, classifiers, dcgan, feature_nets, patchgan, resnet, unet  # noqa: F401
