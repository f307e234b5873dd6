"""Teacher, student and every artifact on the same held-out inputs: PSNR/SSIM vs the teacher + a grid.

The profile step times models on whatever inputs; quality is judged here on real held-out inputs
(photos for the photo teacher), because a restorer's error on random noise says little.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedistill.backends import Artifact, get_backend, load_artifact, load_runner
from edgedistill.export.gate import to_unit
from edgedistill.export.image_metrics import psnr_np, ssim_np
from edgedistill.models.spec import GeneratorSpec


@dataclass
class Scored:
    name: str
    outputs: np.ndarray  # (N, C, H, W) in [0, 1]
    psnr_vs_teacher: float | None = None
    ssim_vs_teacher: float | None = None


def torch_outputs(model: str | Path, x: np.ndarray) -> np.ndarray:
    import torch

    from edgedistill.models.loading import load_generator

    net = load_generator(model).module
    with torch.no_grad():
        return np.concatenate([net(torch.from_numpy(x[i : i + 1])).numpy() for i in range(len(x))])


def artifact_outputs(artifact: Path, x: np.ndarray, threads: int | None) -> np.ndarray:
    """Outputs of an artifact; one whose runtime is absent here (TensorRT without a GPU) is judged by the
    portable ONNX its backend wrote (the QDQ ONNX the engine is built from) under ONNX Runtime."""
    art = load_artifact(artifact)
    portable = art.manifest.get("portable_onnx")
    if get_backend(art.backend).available() is not None and portable:
        art = Artifact(art.dir, {**art.manifest, "backend": "onnxruntime", "files": [portable]})
    runner = load_runner(art, threads=threads)
    name, out = runner.input_names[0], runner.output_names[0]
    return np.concatenate([runner.run({name: x[i : i + 1]})[out] for i in range(len(x))])


def score_all(
    spec: GeneratorSpec,
    x: np.ndarray,
    teacher: str,
    student: Path,
    artifacts: dict[str, Path],
    threads: int | None,
) -> list[Scored]:
    """Outputs of every model on `x`, in [0, 1], with PSNR/SSIM against the teacher's."""
    rows = [Scored("teacher", to_unit(torch_outputs(teacher, x), spec.output_range))]
    rows.append(Scored("student", to_unit(torch_outputs(student, x), spec.output_range)))
    for name, path in artifacts.items():
        rows.append(Scored(name, to_unit(artifact_outputs(path, x, threads), spec.output_range)))
    ref = rows[0].outputs
    for row in rows[1:]:
        row.psnr_vs_teacher = round(
            float(np.mean([psnr_np(a, b, 1.0) for a, b in zip(row.outputs, ref, strict=True)])), 3
        )
        if min(ref.shape[-2:]) >= 11:
            ssims = [ssim_np(a[None], b[None], 1.0) for a, b in zip(row.outputs, ref, strict=True)]
            row.ssim_vs_teacher = round(float(np.mean(ssims)), 4)
    return rows


def save_sample_grid(
    spec: GeneratorSpec, x: np.ndarray, rows: list[Scored], path: Path, count: int = 4
) -> Path:
    """One row per model (the input first for image generators): input | teacher | student | targets."""
    import torch

    from edgedistill.imageio import save_grid

    grid = [torch.from_numpy(r.outputs[:count]) for r in rows]
    if spec.kind == "image":
        grid.insert(0, torch.from_numpy(to_unit(x[:count], spec.input_range)))
    return save_grid(grid, path)
