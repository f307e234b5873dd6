"""`edgedistill.export(...)`: a generator (teacher or student) in, an artifact directory out.

    load -> fp32 ONNX (parity-checked) -> calibration set -> backend.compile -> quality gate
         -> artifact directory (atomic) with manifest.json

Intermediate files live in a scratch directory; the artifact directory appears whole, or not at all.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgedistill.backends import get_backend
from edgedistill.backends.base import Backend, CompileResult, Runner
from edgedistill.core.artifact import Artifact
from edgedistill.core.atomic import atomic_dir
from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.core.targets import Target, get_target
from edgedistill.exporter.gate import (
    Attempt,
    GateOutcome,
    measure_quality,
    reference_outputs,
    run_gate,
    speed_cost,
)
from edgedistill.exporter.manifest import export_manifest, target_dict, write_manifest

DEFAULT_MIN_PSNR = 35.0
DEFAULT_MIN_AGREEMENT = 99.5  # a classifier's gate: % of held-out inputs whose top-1 matches fp32
CLASSIFIER_HOLDOUT = 400  # agreement needs many inputs (one flip in 8 would be 12.5 points)
RANKED_BY_QDQ = "ONNX Runtime QDQ INT8, one layer in int8 at a time"
RANKED_BY_PROBES = (  # OpenVINO: NNCF's INT8, measured under OpenVINO
    "the backend's own INT8 (OpenVINO: NNCF), measured in its runtime: the error each layer adds in "
    "the plain artifact, then the top layers compiled with that one kept at higher precision"
)


@dataclass
class ExportResult:
    out: Path
    manifest: dict[str, Any]


@dataclass
class SourceModel:
    """What is being exported, already as a parity-checked fp32 ONNX in the scratch directory."""

    name: str
    spec: GeneratorSpec
    onnx: Path
    onnx_info: dict[str, Any]
    macs: int | None
    params: int | None


def export(
    model: str | Path,
    target: str | Path,
    out: str | Path | None = None,
    *,
    precision: str | None = None,
    size: tuple[int, int] | None = None,
    calib_data: str | Path | None = None,
    calib_size: int = 64,
    calib_method: str | None = None,
    holdout: int = 8,
    min_psnr: float | None = DEFAULT_MIN_PSNR,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    force: bool = False,
    threads: int | None = None,
    kwargs: dict[str, Any] | None = None,
    weights: str | Path | None = None,
    opset: int = 17,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export `model` for `target`; quantized artifacts must hold `min_psnr` dB vs fp32 (None: no gate)."""
    tgt = get_target(target, precision)
    backend = get_backend(tgt.backend)
    why = backend.available()
    if why is not None and not backend.compiles_offline:
        raise EdgeDistillError(f"target {tgt.name} needs {tgt.backend}, which cannot run here: {why}")
    out_dir = Path(out) if out else Path("exports") / f"{tgt.name}-{tgt.precision}"
    with tempfile.TemporaryDirectory(prefix="edgedistill-export-") as scratch_str:
        scratch = Path(scratch_str)
        src = _fp32_onnx(model, tgt, scratch, size, kwargs, weights, opset, log)
        if src.spec.kind == "classifier":  # gated on top-1 agreement, on inputs the data-free run made
            min_psnr = min_agreement if min_psnr is not None else None
            holdout = max(holdout, CLASSIFIER_HOLDOUT)
            calib_data = calib_data or _synthetic_calibration(model)
        calib, held = _calibration(src, tgt, model, calib_data, calib_size, calib_method, holdout, threads)
        log(f"calibration: {len(calib) if calib else 0} samples + {len(held)} held out ({held.source})")
        qat = _find_qat(model, tgt, log)
        outcome = _compile_and_gate(backend, tgt, src, calib, held, min_psnr, threads, scratch, log, qat)
        if not outcome.passed and not force and src.spec.kind == "classifier":
            raise EdgeDistillError(
                f"{tgt.precision} on {tgt.name} reaches at best {outcome.quality.describe()} vs fp32, below "
                f"--min-agreement {min_psnr} %: nothing written. Choose a higher precision, or add --force"
            )
        if not outcome.passed and not force:
            raise EdgeDistillError(
                f"{tgt.precision} on {tgt.name} reaches at best {outcome.quality.psnr_vs_fp32:.2f} dB PSNR vs fp32, "
                f"below --min-psnr {min_psnr}: nothing written. Lower --min-psnr, choose a higher precision, "
                "or add --force to write the best attempt"
            )
        with atomic_dir(out_dir) as tmp:
            for item in outcome.out_dir.iterdir():
                dest = tmp / item.name
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, dest)
            manifest = export_manifest(src, tgt, outcome, calib, held, min_psnr)
            if qat is not None:  # the scales came from quantization-aware training, not calibration
                manifest["qat"] = {"steps": qat.get("steps"), "scales": len(qat["scales"])}
            manifest = write_manifest(tmp, manifest)
    return ExportResult(out_dir, manifest)


# ------------------------------------------------------------------------------------------ steps
def _fp32_onnx(
    model: str | Path,
    tgt: Target,
    scratch: Path,
    size: tuple[int, int] | None,
    kwargs: dict[str, Any] | None,
    weights: str | Path | None,
    opset: int,
    log: Callable[[str], None],
) -> SourceModel:
    path = scratch / "model.fp32.onnx"
    if str(model).endswith(".onnx"):
        return _from_onnx(Path(model), path)
    from edgedistill.exporter.onnx_export import export_onnx, program_input_size
    from edgedistill.metrics.complexity import measure_complexity
    from edgedistill.models.loading import load_generator

    loaded = load_generator(model, kwargs=kwargs, weights=weights)
    spec = loaded.spec
    fixed = program_input_size(loaded.module) if spec.kind == "image" else None
    given = size
    size = None if spec.kind != "image" else size or fixed or tgt.input_size or spec.default_size
    report = export_onnx(loaded.module, spec, path, size=size, dynamic=tgt.dynamic_shape, opset=opset)
    log(
        f"ONNX: opset {report.opset}, {report.n_nodes} nodes, parity vs torch max |err| {report.max_abs_err:.2e}"
    )
    report.static_reason = report.static_reason or _not_target_size(fixed if not given else None, tgt)
    if report.static_reason:
        log(f"warning: {report.static_reason}")
    cost = measure_complexity(loaded.module, spec.example_inputs(size=size))
    if spec.kind == "image" and size:
        spec.default_size = tuple(size)  # type: ignore[assignment]
    info = {k: v for k, v in vars(report).items() if k != "path"}
    return SourceModel(str(model), spec, path, _jsonable(info), cost.macs, cost.params)


def _not_target_size(fixed: tuple[int, int] | None, tgt: Target) -> str | None:
    """Why a fixed-size program, exported at its own size unasked, is not at the target's size."""
    if not fixed or not tgt.input_size or tuple(tgt.input_size) == fixed:
        return None
    h, w = tgt.input_size
    return (
        f"exported with static shape {fixed[0]}x{fixed[1]} because the generator is a torch.export program "
        f"(.pt2) saved with its input fixed at that size, not the target's {h}x{w}"
    )


def _from_onnx(given: Path, path: Path) -> SourceModel:
    import onnx

    from edgedistill.exporter.onnx_export import spec_from_onnx
    from edgedistill.onnxtools.checks import load_onnx_checked

    proto = load_onnx_checked(given)
    spec = spec_from_onnx(given)
    if spec is None:
        raise EdgeDistillError(
            f"{given} carries no edgedistill spec in its metadata: export it from the torch model "
            "(edgedistill export MODEL ...) so inputs and value ranges are known"
        )
    onnx.save_model(proto, str(path))
    return SourceModel(str(given), spec, path, {"source_onnx": str(given)}, None, None)


def _calibration(
    src: SourceModel,
    tgt: Target,
    model: str | Path,
    calib_data: str | Path | None,
    calib_size: int,
    calib_method: str | None,
    holdout: int,
    threads: int | None,
) -> tuple[CalibrationSet | None, CalibrationSet]:
    """Calibration samples (int8 only) and held-out samples for the gate, from one source."""
    from edgedistill.data.calibration import MIN_ADVISED, build_calibration, find_recipe

    spec = src.spec
    size = tuple(spec.default_size) if spec.kind == "image" and spec.default_size else None
    needs_calib = tgt.precision == "int8"
    teacher = _teacher_name(model, spec)
    recipe = (find_recipe(teacher) if teacher else None) or {}  # a malformed one raises, naming itself
    method = calib_method or recipe.get("method", "minmax")
    percentile = float(recipe.get("percentile", 99.99))
    count = (calib_size if needs_calib else 0) + holdout
    if needs_calib and calib_size < MIN_ADVISED:
        warnings.warn(
            f"only {calib_size} calibration samples: activation ranges from fewer than {MIN_ADVISED} are "
            "noisy (raise --calib-size)",
            UserWarning,
            stacklevel=3,
        )
    try:
        with warnings.catch_warnings():  # its size warning counts the held-out samples too
            warnings.filterwarnings("ignore", message="only .* calibration samples")
            full = build_calibration(
                spec,
                calib_data,
                count,
                teacher=teacher,
                method=method,
                percentile=percentile,
                input_size=size,
                cache=_cache_dir(),
            )
    except EdgeDistillError:
        if needs_calib or calib_data is not None:
            raise
        arrays = spec.example_arrays(size=size, batch=holdout, seed=1234)  # no data: random inputs
        full = CalibrationSet(arrays, source="random inputs in the spec's range")
    if not needs_calib:
        return None, full
    calib, held = full.split(holdout)
    return calib, held


def _compile_and_gate(
    backend: Backend,
    tgt: Target,
    src: SourceModel,
    calib: CalibrationSet | None,
    held: CalibrationSet,
    min_psnr: float | None,
    threads: int | None,
    scratch: Path,
    log: Callable[[str], None],
    qat: dict[str, Any] | None = None,
) -> GateOutcome:
    from edgedistill.backends.onnxruntime import OnnxRuntimeBackend

    ort = OnnxRuntimeBackend()
    threads = threads or tgt.threads
    reference_runner = ort.load(
        Artifact(src.onnx.parent, {"backend": "onnxruntime", "files": [src.onnx.name]}), threads
    )
    reference = reference_outputs(reference_runner, held)
    shared: dict[str, Any] = {}

    def ranges() -> Any:
        if "ranges" not in shared:
            from edgedistill.onnxtools.qdq import compute_ranges

            work = scratch / "ranges"
            work.mkdir(exist_ok=True)
            if qat is not None:
                from edgedistill.exporter.qat_export import qat_ranges

                shared["ranges"] = qat_ranges(src.onnx, qat, work, symmetric=backend.symmetric_int8)
            else:
                shared["ranges"] = compute_ranges(src.onnx, calib, work)  # type: ignore[arg-type]
        return shared["ranges"]

    keep_io = (
        tgt.precision == "int8" and tgt.options.get("keep_io_layers") and qat is None
    )  # QAT trained them
    base = _io_layers(src.onnx) if keep_io else []
    if base:
        log(f"target keeps its first and last layers at higher precision: {', '.join(base)}")

    compiled: dict[tuple[str, ...], tuple[CompileResult, Path]] = {}

    def compile_into(keep: Sequence[str], tag: str) -> tuple[CompileResult, Path]:
        key = (*base, *(k for k in keep if k not in base))
        if key not in compiled:  # a ranking probe and the gate's attempt with the same layers: one compile
            out = scratch / f"attempt-{tag}"
            out.mkdir()
            extra = {"ranges": ranges()} if backend.takes_ranges and tgt.precision == "int8" else {}
            if qat is not None and not backend.takes_ranges:  # OpenVINO: the trained QDQ, no NNCF
                from edgedistill.exporter.qat_export import compile_openvino_qdq

                result = compile_openvino_qdq(src.onnx, tgt, ranges(), out, list(key))
                compiled[key] = result, out
            else:
                result = backend.compile(src.onnx, tgt, calib, out, keep_higher=list(key), **extra)
                compiled[key] = result, out
        return compiled[key]

    def load(result: CompileResult, out: Path) -> Runner:
        manifest = {
            "backend": backend.name,
            "files": result.files,
            "precision": result.precision,
            "target": target_dict(tgt),
            "backend_info": result.extra,
        }
        if backend.available() is None:
            return backend.load(Artifact(out, manifest), threads)
        if result.portable_onnx is None:
            raise EdgeDistillError(f"{backend.name} cannot run here and wrote no portable ONNX to check")
        return ort.load(Artifact(out, {"backend": "onnxruntime", "files": [result.portable_onnx]}), threads)

    def probe(name: str) -> float:
        result, out = compile_into([name], f"probe{len(compiled)}")
        return measure_quality(load(result, out), held, reference, src.spec.output_range).score

    def rank(plain: Attempt) -> list[dict]:
        if not backend.takes_ranges and qat is None:  # it calibrates itself (NNCF): our QDQ is not what runs
            shared["ranked_by"] = RANKED_BY_PROBES
            return _rank_by_compiling(backend, src, plain, base, held, threads or 1, min_psnr, probe, log)
        from edgedistill.exporter.sensitivity import rank_layers

        shared["ranked_by"] = RANKED_BY_QDQ
        log("below the gate: ranking layers by measured sensitivity (one layer quantized at a time)")
        ranked = rank_layers(
            src.onnx, ranges(), held, threads=threads or 1, output_range=tuple(src.spec.output_range),
            symmetric_activations=backend.symmetric_int8,
        )  # fmt: skip
        return [vars(r) for r in ranked if r.name not in base]

    can_rank = tgt.precision == "int8" and min_psnr is not None
    outcome = run_gate(
        compile_into, load, held, reference, src.spec.output_range, min_psnr, rank if can_rank else None, log
    )
    outcome.policy_kept = base
    outcome.ranked_by = shared.get("ranked_by")
    if outcome.result is not outcome.attempts[0].result:  # the fallback kept layers: what did it cost?
        outcome.speed = speed_cost(outcome, load, held)
    return outcome


def _rank_by_compiling(
    backend: Any,
    src: SourceModel,
    plain: Attempt,
    base: list[str],
    held: CalibrationSet,
    threads: int,
    stop_at: float | None,
    probe: Callable[[str], float],
    log: Callable[[str], None],
) -> list[dict]:
    """The ranking for a backend that quantizes with its own calibration (OpenVINO's NNCF): the error
    its plain INT8 adds at each layer (`backend.layer_noise`, one pass) picks which layers to compile
    keeping just that one at higher precision; their measured lift ranks them."""
    from edgedistill.exporter.sensitivity import MAX_PROBES, rank_by_probes
    from edgedistill.onnxtools.qdq import quantizable_nodes

    names = [n for n in quantizable_nodes(src.onnx) if n not in base]
    log(
        f"below the gate: ranking layers with {backend.name}'s own INT8 (the error each adds, then up to "
        f"{MAX_PROBES} compiled with that one kept at higher precision)"
    )
    noise = backend.layer_noise(src.onnx, plain.out_dir / plain.result.files[0], names, held, threads)
    return rank_by_probes(src.onnx, names, noise, probe, plain.quality.score, stop_at=stop_at)


# ------------------------------------------------------------------------------------------ helpers
def _synthetic_calibration(model: str | Path) -> Path | None:
    """A data-free run's own synthetic inputs (datafree/api.py writes them): calibrating needs no real image."""
    path = Path(model) / "calibration.npz"
    return path if path.is_file() else None


def _find_qat(model: str | Path, tgt: Target, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The student's trained quantization scales, for an INT8 export of a QAT run directory."""
    if tgt.precision != "int8" or str(model).endswith(".onnx"):
        return None
    from edgedistill.exporter.qat_export import find_qat

    qat = find_qat(model)
    if qat is not None:
        log(f"quantization-aware student: {len(qat['scales'])} trained activation scales from {qat['path']}")
    return qat


def _io_layers(onnx_path: Path) -> list[str]:
    """The first and last weighted layers: 3-channel 7x7 convs in most generators, where int8 kernels
    are slow (few channels) and the error is most visible (the last one writes the pixels)."""
    from edgedistill.onnxtools.qdq import quantizable_nodes

    nodes = quantizable_nodes(onnx_path)
    return list(dict.fromkeys([nodes[0], nodes[-1]])) if nodes else []


def _teacher_name(model: str | Path, spec: GeneratorSpec) -> str | None:
    cfg = spec.provenance.get("config") or {}
    return cfg.get("teacher") or str(model)


def _cache_dir() -> Path:
    import os

    root = os.environ.get("EDGEDISTILL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgedistill"
    )
    return Path(root) / "calibration"


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(d, default=str))
