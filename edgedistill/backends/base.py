"""The backend contract (contract 4 in docs/architecture.md): export and profile never branch on a runtime's name.

A backend compiles an fp32 ONNX model for a target into files in an artifact directory, and loads
an artifact into a Runner. Runtime code here imports only numpy (and the backend's own package,
lazily), so `edgedistill profile` runs on a device that has no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from edgedistill.core.artifact import Artifact
    from edgedistill.core.calibset import CalibrationSet
    from edgedistill.core.targets import Target


@dataclass
class LayerTime:
    """Mean time of one layer per inference, as the runtime's own profiler reports it."""

    name: str
    op_type: str
    ms: float
    precision: str = ""  # the kernel/precision that really ran (e.g. OpenVINO's "jit_avx512_I8")
    origin: str = ""  # graph layers fused into it, comma-separated (OpenVINO renames some layers)


@dataclass
class CompileResult:
    """What `Backend.compile` wrote into the artifact directory."""

    files: list[str]  # relative to the artifact directory, the model to load first
    precision: str
    kept_higher_precision: list[str] = field(default_factory=list)  # ONNX node names not quantized
    # An ONNX file (relative) that stands for the compiled model where its runtime is absent here
    # (TensorRT without a GPU: its explicit-QDQ ONNX runs under ONNX Runtime for the quality gate).
    portable_onnx: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # goes into the manifest under "backend_info"


class Runner(Protocol):
    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def layer_times(self) -> list[LayerTime]:
        """Per-layer profile of the runs since load (empty where the runtime has none or
        the runner was loaded without `profile_layers=True`)."""
        ...


class Backend(Protocol):
    name: str
    # True when compile() works without the runtime installed here (TensorRT: it writes the ONNX
    # for the device and the engine is built there); such a CompileResult sets portable_onnx.
    compiles_offline: bool
    # True when compile() takes `ranges=` (export.qdq.TensorRanges, ONNX Runtime's calibration): the
    # quality gate's repeated int8 compiles then calibrate once. OpenVINO calibrates inside NNCF.
    takes_ranges: bool
    symmetric_int8: bool  # int8 activations with zero point 0 (TensorRT): the gate ranks layers alike

    def available(self) -> str | None:
        """None when usable here, else one line saying what is missing and how to get it."""
        ...

    def precisions_here(self, device: str = "CPU") -> tuple[str, ...]:
        """The precisions this host can run on `device` (empty when the runtime is missing): what
        `edgedistill targets` shows as "here", and what tests pick from (CPUs differ: bf16 needs
        AVX-512 BF16 or AMX)."""
        ...

    def compile(
        self,
        onnx_path: Path,
        target: Target,
        calib: CalibrationSet | None,
        out_dir: Path,
        keep_higher: Sequence[str] = (),
    ) -> CompileResult:
        """Compile `onnx_path` (fp32) for `target` at `target.precision` into `out_dir`.

        `keep_higher` names ONNX nodes to leave at higher precision (the quality gate's fallback).
        """
        ...

    def load(
        self, artifact: Artifact, threads: int | None = None, profile_layers: bool = False
    ) -> Runner: ...
