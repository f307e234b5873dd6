"""Teacher, student and every artifact on the same held-out inputs: PSNR/SSIM vs the teacher + a grid.

The profile step times models on whatever inputs; quality is judged here on real held-out inputs
(photos for the photo teacher), because a restorer's error on random noise says little.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.core.artifact import Artifact
from edgedistill.core.quality import psnr, ssim, to_unit
from edgedistill.core.spec import GeneratorSpec
from edgedistill.runtime.sources import artifact_source, resolve


@dataclass
class Scored:
    name: str
    outputs: np.ndarray  # (N, C, H, W) in [0, 1]
    psnr_vs_teacher: float | None = None
    ssim_vs_teacher: float | None = None


def model_outputs(
    model: str | Path, x: np.ndarray | dict[str, np.ndarray], threads: int | None, **load: Any
) -> np.ndarray:
    """Outputs of any model on `x`, one sample per call, opened as every command opens one
    (runtime.sources.resolve). An artifact whose runtime is absent here (TensorRT without a GPU) is
    judged by the portable ONNX its backend wrote (the QDQ ONNX the engine is built from) under
    ONNX Runtime."""
    source = resolve(model, **load)
    art = source.artifact
    if art is not None and source.unavailable() is not None and art.manifest.get("portable_onnx"):
        portable = {**art.manifest, "backend": "onnxruntime", "files": [art.manifest["portable_onnx"]]}
        source = artifact_source(Artifact(art.dir, portable), str(model))
    runner = source.load(threads)
    arrays = x if isinstance(x, dict) else {runner.input_names[0]: x}  # a dict: every input by name
    if set(arrays) != set(runner.input_names) and len(arrays) == len(runner.input_names):
        arrays = dict(zip(runner.input_names, arrays.values(), strict=True))  # same order, other names
    out, n = runner.output_names[0], len(next(iter(arrays.values())))
    return np.concatenate([runner.run({k: v[i : i + 1] for k, v in arrays.items()})[out] for i in range(n)])


def score_all(
    spec: GeneratorSpec,
    x: np.ndarray | dict[str, np.ndarray],
    teacher: str,
    student: Path,
    artifacts: dict[str, Path],
    threads: int | None,
    teacher_load: dict[str, Any] | None = None,
) -> list[Scored]:
    """Outputs of every model on `x`, in [0, 1], with PSNR/SSIM against the teacher's; `teacher_load`
    (kwargs/weights) builds a module:Class teacher."""
    models = {"teacher": teacher, "student": student, **artifacts}
    rows = [
        Scored(
            name,
            to_unit(
                model_outputs(m, x, threads, **(teacher_load or {}) if name == "teacher" else {}),
                spec.output_range,
            ),
        )
        for name, m in models.items()
    ]
    ref = rows[0].outputs
    for row in rows[1:]:
        row.psnr_vs_teacher = round(
            float(np.mean([psnr(a, b, 1.0) for a, b in zip(row.outputs, ref, strict=True)])), 3
        )
        if min(ref.shape[-2:]) >= 11:
            ssims = [ssim(a[None], b[None], 1.0) for a, b in zip(row.outputs, ref, strict=True)]
            row.ssim_vs_teacher = round(float(np.mean(ssims)), 4)
    return rows


def save_sample_grid(
    spec: GeneratorSpec, x: np.ndarray, rows: list[Scored], path: Path, count: int = 4
) -> Path:
    """One row per model (the input first for image generators): input | teacher | student | targets."""
    import torch

    from edgedistill.data.imageio import save_grid

    grid = [torch.from_numpy(r.outputs[:count]) for r in rows]
    if spec.kind == "image":
        grid.insert(0, torch.from_numpy(to_unit(x[:count, : spec.image_channels], spec.input_range)))
    return save_grid(grid, path)


def save_input_picture(spec: GeneratorSpec, x: np.ndarray, path: Path) -> Path:
    """One model input (C, H, W) in the spec's input range, as an image file."""
    from edgedistill.data.images import save_pixels

    return save_pixels(to_unit(x, spec.input_range), path)
