"""Device profiles (targets/*.toml): which backend, precision, threads and peak ops a device has.

Profiles are data, not code, so adding a device is adding a file. A wrong name answers with the
closest names. tomllib is stdlib: this runs on a device without torch.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.resources import data_files

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# INT8 QDQ forms (onnxtools/qdq.py QDQ_FORMS): options.qdq_form = "xnnpack" makes ARM targets quantize
# as XNNPACK executes (int8 activations, symmetric per-channel int8 weights), not ORT x86's u8s8.
QDQ_FORMS = ("u8s8", "xnnpack", "s8s8")


@dataclass(frozen=True)
class Target:
    name: str
    backend: str  # onnxruntime | openvino | tensorrt
    precision: str  # the default; `precisions` lists what the device supports
    precisions: tuple[str, ...] = ()
    device: str = "CPU"  # the runtime's device name (CPU, GPU, NPU, cuda:0 ...)
    arch: str = "x86_64"  # x86_64 | aarch64
    threads: int | None = None
    input_size: tuple[int, int] | None = None  # H, W for image generators
    dynamic_shape: bool = True  # False: export with the fixed input_size (NPU, TensorRT engines)
    peak_gops: dict[str, float] = field(default_factory=dict)  # per precision, for the roofline
    notes: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific (ort_format, dla_core ...)
    path: Path | None = None

    def with_precision(self, precision: str | None) -> Target:
        if precision is None or precision == self.precision:
            return self
        if precision not in (self.precisions or (self.precision,)):
            raise EdgeDistillError(
                f"target {self.name} supports {', '.join(self.precisions or (self.precision,))}, not '{precision}'"
            )
        return replace(self, precision=precision)


def _parse(path: Path) -> Target:
    try:
        raw = tomllib.loads(path.read_text())
        raw.setdefault("name", path.stem)
        raw["precisions"] = tuple(raw.get("precisions", (raw["precision"],)))
        if raw.get("input_size") is not None:
            raw["input_size"] = tuple(raw["input_size"])
        target = Target(**raw, path=path)
    except KeyError as exc:
        raise EdgeDistillError(
            f"{path}: not a valid target profile (missing key {exc}): add it, as the profiles in targets/ do"
        ) from None
    except (tomllib.TOMLDecodeError, TypeError) as exc:
        raise EdgeDistillError(f"{path}: not a valid target profile ({exc})") from None
    form = target.options.get("qdq_form")
    if form is not None and form not in QDQ_FORMS:
        raise EdgeDistillError(
            f"{path}: options.qdq_form must be one of {', '.join(QDQ_FORMS)}, not '{form}'"
        )
    bad = [p for p in target.precisions if p not in PRECISIONS]
    if target.precision not in target.precisions or bad:
        raise EdgeDistillError(
            f"{path}: precisions must be among {', '.join(PRECISIONS)} and include the default"
        )
    return target


def load_targets(extra: Path | None = None) -> dict[str, Target]:
    """All shipped profiles by name (plus the .toml files in `extra`, which win)."""
    files = list(data_files("targets"))
    if extra is not None:
        files += sorted(extra.glob("*.toml"))
    return {t.name: t for t in map(_parse, files)}


def get_target(name: str | Path, precision: str | None = None) -> Target:
    """A target by name or by the path of a .toml profile, at `precision` (default: the profile's)."""
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        return _parse(path).with_precision(precision)
    targets = load_targets()
    if str(name) not in targets:
        close = difflib.get_close_matches(str(name), targets, n=3, cutoff=0.3)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose one of {', '.join(targets)}"
        raise EdgeDistillError(f"no target '{name}': {hint} (`edgedistill targets` lists them)")
    return targets[str(name)].with_precision(precision)
