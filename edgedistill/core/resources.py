"""Data that ships with the package: device profiles (targets/) and calibration recipes.

In a checkout they sit at the top of the repository; a wheel carries them under
edgedistill/_data/ (see pyproject's force-include). Both layouts are looked up here.
"""

from __future__ import annotations

from pathlib import Path

from edgedistill.core.errors import EdgeDistillError

_PACKAGE = Path(__file__).resolve().parent.parent  # edgedistill/


def data_dir(name: str) -> Path:
    """The folder of shipped data called `name` ("targets" or "calibration")."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise EdgeDistillError(f"the package's '{name}' data is missing; reinstall edgedistill")


def data_files(name: str, pattern: str = "*.toml") -> list[Path]:
    return sorted(data_dir(name).glob(pattern))
