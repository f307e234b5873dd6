"""TensorRT backend: the ONNX a Jetson builds its engine from, and the engine built from it.

An engine is tied to the GPU and the TensorRT version that built it, so export (on a workstation)
writes what the device needs and the device builds the engine:

    model.onnx | model.qdq.onnx   fp32/fp16: the fp32 ONNX (FP16 is a builder flag);
                                  int8: explicit quantization, symmetric int8 Q/DQ (zero point 0),
                                  per-channel weights; keep_higher nodes' weights get no Q/DQ, so
                                  TensorRT runs them in fp16
    build.json                    what build_engine() reads: precision, shapes, workspace, DLA core
    build.sh                      the same build as one trtexec line (no Python needed on the device)
    calibration.json              int8: the activation ranges the Q/DQ scales came from
    model.engine                  written by `edgedistill build-engine .` on the device, or here when
                                  TensorRT and an NVIDIA GPU are present

Without TensorRT here, CompileResult.portable_onnx names the ONNX so the quality gate runs that file
under ONNX Runtime (the int8 one carries the same Q/DQ TensorRT will honour). Runtime code imports
numpy, tensorrt and cuda-python lazily: no torch on the device.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.backends.base import CompileResult, Runner
from edgedistill.backends.tensorrt_build import (
    BUILD_FILE,
    ENGINE_FILE,
    TIMING_CACHE,
    build_engine,
    trtexec_command,
)
from edgedistill.core.artifact import Artifact, member_path
from edgedistill.core.atomic import write_atomic, write_text_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.onnxtools.tensorrt_qdq import check_symmetric_qdq, prepare_for_tensorrt

if TYPE_CHECKING:
    from edgedistill.core.calibset import CalibrationSet
    from edgedistill.core.targets import Target

__all__ = [
    "TensorRtBackend",
    "build_engine",
    "check_symmetric_qdq",
    "cuda_unavailable",
    "tensorrt_unavailable",
]

PRECISIONS = ("fp32", "fp16", "int8")
BUILD_COMMAND = "edgedistill build-engine ."  # run inside the artifact directory on the device
CALIBRATION_CACHE = "calibration.json"


def tensorrt_unavailable() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (JetPack ships it; `pip install tensorrt` needs NVIDIA's index)"
    return None


def cuda_unavailable() -> str | None:
    """None when cuda-python sees at least one CUDA device (the runner's device memory comes from it)."""
    try:
        from edgedistill.backends.tensorrt_runner import cudart
    except EdgeDistillError as exc:
        return str(exc)
    try:
        err, count = cudart().cudaGetDeviceCount()
    except Exception as exc:  # the driver library itself is missing
        return f"no NVIDIA GPU visible ({exc})"
    if int(err) != 0 or count < 1:
        return "no NVIDIA GPU visible (cudaGetDeviceCount found none)"
    return None


class TensorRtBackend:
    name = "tensorrt"
    compiles_offline = True  # the ONNX for the device is written anywhere; the engine is built there
    takes_ranges = True
    symmetric_int8 = True  # explicit quantization wants int8 Q/DQ with zero point 0 (the gate ranks alike)

    def available(self) -> str | None:
        return tensorrt_unavailable() or cuda_unavailable()

    def precisions_here(self, device: str = "GPU") -> tuple[str, ...]:
        return ("fp32", "fp16", "int8") if self.available() is None else ()

    # ------------------------------------------------------------------------------ compile
    def compile(
        self,
        onnx_path: Path,
        target: Target,
        calib: CalibrationSet | None,
        out_dir: Path,
        keep_higher: Sequence[str] = (),
        ranges: Any = None,
    ) -> CompileResult:
        """Write the device's ONNX, build.json and build.sh; build model.engine too where TensorRT runs.

        `ranges` (from export.qdq.compute_ranges) may be passed in so repeated gate attempts share one
        calibration pass; without it the ranges are computed from `calib`.
        """
        precision = _check_precision(target)
        dla_core = int(target.options.get("dla_core", -1))
        if dla_core >= 0 and precision == "fp32":
            raise EdgeDistillError(
                f"target {target.name}: a DLA runs fp16 or int8, not fp32 (set dla_core = -1)"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        notes: list[str] = []
        extra: dict[str, Any] = {}
        if precision == "int8":
            onnx_name = "model.qdq.onnx"
            ranges = _quantize(onnx_path, out_dir / onnx_name, calib, ranges, keep_higher)
            extra["qdq"] = {
                **prepare_for_tensorrt(out_dir / onnx_name),
                **check_symmetric_qdq(out_dir / onnx_name),
            }
            # Explicit Q/DQ has no calibrator and so no calibration cache: the ranges are the record.
            ranges.save(out_dir / CALIBRATION_CACHE)
            extra["calibration_cache"] = CALIBRATION_CACHE
            notes.append(
                "INT8 by explicit quantization: symmetric int8 Q/DQ (zero point 0), per-channel weights; "
                "layers without Q/DQ run in fp16"
            )
        else:
            onnx_name = "model.onnx"
            _copy_onnx(onnx_path, out_dir / onnx_name)
            if keep_higher:
                notes.append(f"keep_higher has no effect at {precision}: nothing is quantized")
        plan = {
            "onnx": onnx_name,
            "precision": precision,
            "engine": ENGINE_FILE,
            "timing_cache": TIMING_CACHE,
            "workspace_mb": int(target.options.get("workspace_mb", 1024)),
            "dla_core": dla_core,
            "shapes": optimization_shapes(out_dir / onnx_name, target),
            "tf32": bool(target.options.get("allow_tf32", False)),
            "target": target.name,
        }
        write_text_atomic(out_dir / BUILD_FILE, json.dumps(plan, indent=2) + "\n")
        trtexec = trtexec_command(plan)
        write_text_atomic(out_dir / "build.sh", _build_script(plan, trtexec))
        (out_dir / "build.sh").chmod(0o755)
        extra.update(
            {
                "onnx": onnx_name,
                "build_command": BUILD_COMMAND,
                "trtexec": shlex.join(trtexec),
                "workspace_mb": plan["workspace_mb"],
                "dla_core": dla_core,
                "engine": ENGINE_FILE,
            }
        )
        files = [onnx_name, BUILD_FILE, "build.sh"] + ([CALIBRATION_CACHE] if precision == "int8" else [])
        why = self.available()
        if why is None:
            build_engine(out_dir)
            files.insert(0, ENGINE_FILE)
            extra["built_here"] = True
            notes.append(
                f"{ENGINE_FILE} was built for this machine's GPU; engines do not move between GPUs or "
                f"TensorRT versions: on {target.name} run `{BUILD_COMMAND}` in the artifact directory"
            )
        else:
            notes.append(
                f"engine not built here ({why}): in the artifact directory on the device run "
                f"`{BUILD_COMMAND}` (or `sh build.sh`, plain trtexec)"
            )
        return CompileResult(
            files=files,
            precision=precision,
            kept_higher_precision=list(keep_higher) if precision == "int8" else [],
            portable_onnx=onnx_name,
            notes=notes,
            extra=extra,
        )

    # ------------------------------------------------------------------------------ load
    def load(self, artifact: Artifact, threads: int | None = None, profile_layers: bool = False) -> Runner:
        """An engine in the artifact -> TensorRtRunner; `threads` does not apply to a GPU."""
        why = self.available()
        if why is not None:
            raise EdgeDistillError(f"{artifact.dir}: TensorRT cannot run here: {why}")
        from edgedistill.backends.tensorrt_runner import TensorRtRunner

        return TensorRtRunner(engine_path(artifact), profile_layers=profile_layers)


def engine_path(artifact: Artifact) -> Path:
    """The artifact's engine, or one line saying how to build it on the device."""
    if artifact.model_path.suffix in (".engine", ".plan") and artifact.model_path.exists():
        return artifact.model_path
    info = artifact.manifest.get("backend_info") or {}
    candidate = member_path(artifact.dir, info.get("engine", ENGINE_FILE))  # never an engine from outside
    if candidate.exists():
        return candidate
    trtexec = info.get("trtexec")
    alt = f" (or: {trtexec})" if trtexec else ""
    raise EdgeDistillError(
        f"{artifact.dir} has no TensorRT engine yet: on the device run "
        f"`cd {shlex.quote(str(artifact.dir))} && {BUILD_COMMAND}`{alt}"
    )


# ---------------------------------------------------------------------------------- helpers
def _check_precision(target: Target) -> str:
    allowed = target.precisions or (target.precision,)
    if target.precision not in allowed:
        raise EdgeDistillError(
            f"target {target.name} supports {', '.join(allowed)}, not '{target.precision}'"
        )
    if target.precision not in PRECISIONS:
        raise EdgeDistillError(
            f"the TensorRT backend builds {', '.join(PRECISIONS)}, not '{target.precision}'"
        )
    return target.precision


def _quantize(
    onnx_path: Path, out: Path, calib: CalibrationSet | None, ranges: Any, keep_higher: Sequence[str]
) -> Any:
    """Explicit-quantization ONNX: TensorRT wants symmetric int8 activations (zero point 0)."""
    from edgedistill.onnxtools.qdq import compute_ranges, quantize_qdq

    with tempfile.TemporaryDirectory(prefix="edgedistill-ranges-") as work:  # holds the pre-processed model
        if ranges is None:
            if calib is None:
                raise EdgeDistillError(
                    "int8 needs a calibration set: give --calib-data or a larger --calib-size"
                )
            ranges = compute_ranges(onnx_path, calib, Path(work))
        quantize_qdq(
            onnx_path, out, ranges, exclude=keep_higher, per_channel=True, symmetric_activations=True
        )
    return ranges


def _copy_onnx(src: Path, dest: Path) -> None:
    """The fp32 ONNX for the device as one file (external weights, if any, inlined)."""
    import onnx

    from edgedistill.onnxtools.checks import load_onnx_checked

    model = load_onnx_checked(src, check=False)
    external = any(
        t.data_location == onnx.TensorProto.EXTERNAL
        for t in onnx.load(str(src), load_external_data=False).graph.initializer
    )
    if external:
        write_atomic(dest, lambda p: onnx.save_model(model, str(p)))
    else:
        write_atomic(dest, lambda p: shutil.copyfile(src, p))


def optimization_shapes(onnx_path: Path, target: Target) -> dict[str, dict[str, Any]]:
    """min/opt/max per input for the builder's optimization profile.

    Static targets: min = opt = max = batch 1 at target.input_size (noise inputs keep their dims).
    Dynamic ones: opt at input_size, min half and max twice its sides (options min_size / max_size).
    """
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    init_names = {t.name for t in proto.graph.initializer}
    size = tuple(target.input_size) if target.input_size else None
    shapes: dict[str, dict[str, Any]] = {}
    for inp in proto.graph.input:
        if inp.name in init_names:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]

        def at(hw: tuple[int, int] | None, dims: list[int | None] = dims, name: str = inp.name) -> list[int]:
            out = []
            for i, d in enumerate(dims):
                if d is not None:
                    out.append(d)
                elif i == 0:
                    out.append(1)
                elif len(dims) == 4 and i in (2, 3) and hw:
                    out.append(int(hw[i - 2]))
                else:
                    raise EdgeDistillError(
                        f"target {target.name}: input '{name}' dim {i} is free and the target gives no "
                        "input_size: add input_size to the target profile"
                    )
            return out

        opt = at(size)
        if target.dynamic_shape and size and None in dims[2:]:
            lo = target.options.get("min_size") or [max(1, s // 2) for s in size]
            hi = target.options.get("max_size") or [s * 2 for s in size]
            shapes[inp.name] = {"min": at(tuple(lo)), "opt": opt, "max": at(tuple(hi)), "free": True}
        else:
            shapes[inp.name] = {"min": opt, "opt": opt, "max": opt, "free": None in dims}
    return shapes


def _build_script(plan: dict[str, Any], trtexec: list[str]) -> str:
    return (
        "#!/bin/sh\n"
        f"# Build the TensorRT engine for {plan['target']} ({plan['precision']}) on the device itself:\n"
        "# engines are tied to the GPU and the TensorRT version that built them.\n"
        f"# With edgedistill installed there, `{BUILD_COMMAND}` does the same and updates manifest.json.\n"
        "# TensorRT < 8.4 (JetPack 4): replace --memPoolSize=workspace:NM with --workspace=N.\n"
        'cd "$(dirname "$0")" || exit 1\n'
        f"{shlex.join(trtexec)}\n"
    )
