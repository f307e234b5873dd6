"""A calibration set: N samples per model input, already preprocessed as the spec says.

One object feeds ONNX Runtime's CalibrationDataReader, an NNCF Dataset and a TensorRT calibrator
alike (each wants "one dict of batch-1 arrays at a time"). Cached as .npz keyed by input name.
numpy only: it also travels to devices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.core.atomic import write_atomic
from edgedistill.core.errors import EdgeDistillError


@dataclass
class CalibrationSet:
    arrays: dict[str, np.ndarray]  # input name -> (N, ...) float32, in the model's input range
    method: str = "minmax"  # minmax | entropy | percentile
    percentile: float = 99.99
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.arrays or any(len(a) == 0 for a in self.arrays.values()):
            raise EdgeDistillError(
                f"calibration set from {self.source or 'the given source'} is empty: give it images or a larger --calib-size"
            )
        sizes = {len(a) for a in self.arrays.values()}
        if len(sizes) != 1:
            raise EdgeDistillError(f"calibration inputs disagree in sample count: {sizes}")

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def samples(self, batch: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """Dicts of `batch` consecutive samples (the last may be shorter)."""
        for i in range(0, len(self), batch):
            yield {
                k: np.ascontiguousarray(v[i : i + batch], dtype=np.float32) for k, v in self.arrays.items()
            }

    def split(self, holdout: int) -> tuple[CalibrationSet, CalibrationSet]:
        """(calibration, held-out) so the quality gate never scores on the data it calibrated with."""
        if not 0 < holdout < len(self):
            raise EdgeDistillError(f"cannot hold out {holdout} of {len(self)} calibration samples")
        head = {k: v[:-holdout] for k, v in self.arrays.items()}
        tail = {k: v[-holdout:] for k, v in self.arrays.items()}
        return (
            CalibrationSet(head, self.method, self.percentile, self.source, self.meta),
            CalibrationSet(tail, self.method, self.percentile, self.source + " (held out)", self.meta),
        )

    def save(self, path: str | Path) -> Path:
        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.savez_compressed(f, **self.arrays)

        return write_atomic(path, write)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> CalibrationSet:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k].astype(np.float32) for k in data.files}
        except FileNotFoundError:
            raise EdgeDistillError(f"calibration cache not found: {path}") from None
        except (ValueError, OSError) as exc:
            raise EdgeDistillError(
                f"{path} is not a calibration .npz ({exc}): delete it to rebuild"
            ) from None
        return cls(arrays, source=str(path), **kwargs)
