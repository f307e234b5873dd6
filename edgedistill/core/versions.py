"""Installed versions of the packages a result depends on (for manifests and reports). No imports
of the packages themselves: reading metadata is cheap and works for runtimes that are absent."""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Iterable


def installed_versions(names: Iterable[str]) -> dict[str, str]:
    """{package: version} for those of `names` that are installed."""
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out
