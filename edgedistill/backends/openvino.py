"""OpenVINO backend: fp32/fp16/bf16 IR, or INT8 by NNCF post-training quantization.

Two OpenVINO defaults would silently change what was asked for, so both are set explicitly:
`ov.save_model` stores fp16 weights unless `compress_to_fp16=False`, and CPUs with AVX-512 BF16/AMX
run an "fp32" model in bf16 unless INFERENCE_PRECISION_HINT says otherwise. compile() records the
runtime precision in CompileResult.extra ("backend_info" in the manifest) and load() applies it.

Runtime code imports only numpy and openvino (lazily); nncf and onnx are needed only to compile.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.backends.base import CompileResult, LayerTime
from edgedistill.core.artifact import Artifact
from edgedistill.core.errors import EdgeDistillError

if TYPE_CHECKING:
    from edgedistill.core.calibset import CalibrationSet
    from edgedistill.core.targets import Target

INSTALL = "OpenVINO is not installed: pip install 'edgedistill[openvino]' (openvino + nncf)"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
HINTS = ("f32", "f16", "bf16")  # the INFERENCE_PRECISION_HINT values compile() records


def _ov() -> Any:
    try:
        import openvino as ov
    except ImportError:
        raise EdgeDistillError(INSTALL) from None
    return ov


def check_device(core: Any, device: str) -> str:
    """`device` if OpenVINO sees it here ("GPU" matches "GPU.0"; AUTO/HETERO/MULTI check their list)."""
    present = list(core.available_devices)
    if device == "AUTO":
        return device
    wanted = device.split(":", 1)[1].split(",") if ":" in device else [device]
    missing = [d for d in wanted if not any(p == d or p.startswith(d + ".") for p in present)]
    if missing:
        raise EdgeDistillError(
            f"OpenVINO device '{missing[0]}' is not present on this machine (available: {', '.join(present)}): "
            "run on a machine that has it, or choose a target for one of these devices"
        )
    return device


class OpenVinoBackend:
    name = "openvino"
    takes_ranges = False  # NNCF calibrates on the calibration set itself
    symmetric_int8 = False
    compiles_offline = False

    def available(self) -> str | None:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return INSTALL
        return None

    def precisions_here(self, device: str = "CPU") -> tuple[str, ...]:
        """fp32/fp16/int8 wherever OpenVINO runs (fp16 IRs decompress to f32 on CPUs without fp16);
        bf16 only where the device reports BF16 (AVX-512 BF16 or AMX, not Zen3's AVX2)."""
        if self.available() is not None:
            return ()
        import openvino as ov

        core = ov.Core()
        if device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
            return ()
        caps = _capabilities(core, device)
        return ("fp32", "fp16", "int8", *(("bf16",) if "BF16" in caps else ()))

    # ------------------------------------------------------------------------------ compile
    def compile(
        self,
        onnx_path: Path,
        target: Target,
        calib: CalibrationSet | None,
        out_dir: Path,
        keep_higher: Sequence[str] = (),
    ) -> CompileResult:
        from edgedistill.backends.openvino_convert import (
            convert_onnx,
            openvino_names,
            quantize,
            save_ir,
            static_shapes,
        )

        ov = _ov()
        precision = target.precision
        if precision not in PRECISIONS:
            raise EdgeDistillError(f"OpenVINO compiles {', '.join(PRECISIONS)}, not '{precision}'")
        if precision == "int8" and calib is None:
            raise EdgeDistillError("int8 needs a calibration set: give --calib-data or a larger --calib-size")
        core = ov.Core()
        device = check_device(core, target.device)
        hint, notes = runtime_precision(core, device, precision, target.options)
        model = convert_onnx(onnx_path)
        shapes: dict[str, list[int]] = {}
        if not target.dynamic_shape:
            shapes = static_shapes(model, target)
            model.reshape(shapes)
        extra: dict[str, Any] = {"inference_precision": hint, "device": device, "openvino": ov.__version__}
        kept: list[str] = []
        if precision == "int8":
            names = openvino_names(model, onnx_path, keep_higher)
            kept = [n for n in keep_higher if names.get(n)]
            lost = [n for n in keep_higher if not names.get(n)]
            if lost:
                notes.append(f"no OpenVINO op left for {', '.join(lost)} after conversion: nothing to keep")
            ignored = sorted({o for n in kept for o in names[n]})
            model, nncf_info = quantize(model, calib, device, ignored, target.options)
            extra["nncf"] = nncf_info
            extra["keep_higher_openvino_names"] = ignored
            notes.append(
                f"INT8 by NNCF ({nncf_info['preset']} preset, activations: {nncf_info['estimator']})"
            )
        if shapes:
            extra["static_shapes"] = shapes
        compress = precision == "fp16"
        extra["ir_weights"] = "f16" if compress else "f32"
        save_ir(model, out_dir, compress)
        return CompileResult(
            files=["model.xml", "model.bin"],
            precision=precision,
            kept_higher_precision=kept,
            notes=notes,
            extra=extra,
        )

    def layer_noise(
        self,
        onnx_path: Path,
        model_xml: Path,
        nodes: Sequence[str],
        holdout: CalibrationSet,
        threads: int = 1,
    ) -> dict[str, float]:
        """The error NNCF's INT8 in `model_xml` adds at each ONNX node (see openvino_convert): the
        quality gate's cheap pre-rank for a backend that calibrates itself (takes_ranges False)."""
        from edgedistill.backends.openvino_convert import layer_noise

        return layer_noise(onnx_path, model_xml, nodes, holdout, threads)

    # ------------------------------------------------------------------------------ load
    def load(
        self, artifact: Artifact, threads: int | None = None, profile_layers: bool = False
    ) -> OpenVinoRunner:
        """Compile the IR with the recorded precision hint; `threads` defaults to the target's."""
        ov = _ov()
        core = ov.Core()
        target = artifact.manifest.get("target") or {}
        device = check_device(core, target.get("device") or "CPU")
        info = artifact.manifest.get("backend_info") or {}
        hint = info.get("inference_precision")
        if hint not in HINTS:
            hint, _ = runtime_precision(core, device, artifact.precision, target.get("options") or {})
        threads = threads or target.get("threads")  # the device profile's count unless told otherwise
        config = runtime_config(core, device, hint, threads, profile_layers, target.get("options") or {})
        path = artifact.model_path
        if path.suffix != ".xml":
            raise EdgeDistillError(f"{path}: the OpenVINO backend loads an IR .xml (its .bin beside it)")
        try:
            model = core.read_model(str(path))
            compiled = core.compile_model(model, device, config)
        except RuntimeError as exc:
            raise EdgeDistillError(
                f"OpenVINO cannot compile {path} for {device}: {_first_line(exc)}"
            ) from None
        return OpenVinoRunner(compiled, profile_layers, hint)


# ---------------------------------------------------------------------------------- runner
class OpenVinoRunner:
    """One InferRequest, run synchronously; per-layer times averaged over the runs since load."""

    def __init__(self, compiled: Any, profile: bool, inference_precision: str) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.input_names = [p.get_any_name() for p in compiled.inputs]
        self.output_names = [p.get_any_name() for p in compiled.outputs]
        self.inference_precision = inference_precision
        self._shapes = {p.get_any_name(): p.get_partial_shape() for p in compiled.inputs}
        self._profile = profile
        self._runs = 0
        self._layers: dict[str, list[Any]] = {}  # name -> [type, exec_type, total ms]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {}
        for name in self.input_names:
            if name not in inputs:
                raise EdgeDistillError(f"missing model input '{name}' (got {', '.join(inputs) or 'none'})")
            arr = np.ascontiguousarray(inputs[name], dtype=np.float32)
            if not _fits(self._shapes[name], arr.shape):
                raise EdgeDistillError(
                    f"input '{name}' has shape {tuple(arr.shape)}, the model takes {self._shapes[name]}: "
                    "feed that shape, or re-export for this size"
                )
            feed[name] = arr
        self.request.infer(feed, share_inputs=True)  # synchronous: no copy of the inputs needed
        out = {n: self.request.get_output_tensor(i).data.copy() for i, n in enumerate(self.output_names)}
        if self._profile:
            self._collect()
        return out

    def _collect(self) -> None:
        import openvino as ov

        executed = ov.ProfilingInfo.Status.EXECUTED
        self._runs += 1
        for p in self.request.profiling_info:
            if p.status != executed:  # NOT_RUN / OPTIMIZED_OUT: fused into a neighbour
                continue
            entry = self._layers.setdefault(p.node_name, [p.node_type, p.exec_type, 0.0])
            entry[2] += p.real_time.total_seconds() * 1e3

    def layer_times(self) -> list[LayerTime]:
        if not self._runs:
            return []
        fused = self.fused_layers()
        return [
            LayerTime(name, t, ms / self._runs, exec_type, fused.get(name, ""))
            for name, (t, exec_type, ms) in self._layers.items()
        ]

    def fused_layers(self) -> dict[str, str]:
        """Each executed layer's original (IR) layers, comma-separated: OpenVINO renames some layers
        (a ConvTranspose runs as `ConvolutionBackpropData_<id>`), its runtime model says what they were."""
        return {
            op.get_friendly_name(): rt_text(op.get_rt_info(), "originalLayersNames")
            for op in self.compiled.get_runtime_model().get_ops()
        }


# ---------------------------------------------------------------------------------- helpers
def rt_text(rt: Any, key: str) -> str:
    """A runtime-model op's rt_info entry as text ("" when absent): str() of the OVAny it is held
    in reads "<OVAny class>" on OpenVINO 2026, so the value is asked for as a string."""
    if key not in rt:
        return ""
    value = rt[key]
    return str(value.astype(str)) if hasattr(value, "astype") else str(value)


def runtime_precision(core: Any, device: str, precision: str, options: dict) -> tuple[str, list[str]]:
    """The INFERENCE_PRECISION_HINT for `precision` on `device`, never the device's default."""
    notes: list[str] = []
    if options.get("inference_precision") in HINTS:
        return options["inference_precision"], notes
    caps = _capabilities(core, device)
    cpu = device.startswith("CPU")
    if precision == "bf16":
        if cpu and "BF16" not in caps:
            raise EdgeDistillError(
                f"this CPU has no bf16 support (capabilities: {', '.join(caps)}): choose fp32 or int8"
            )
        return "bf16", notes
    if precision == "fp16":
        if cpu and "FP16" not in caps:
            notes.append(
                "this CPU has no fp16 arithmetic: the fp16 IR's weights are decompressed and run in f32"
            )
            return "f32", notes
        return "f16", notes
    if precision == "int8" and not cpu:
        return "f16", notes  # GPU/NPU run the non-quantized layers in f16
    return "f32", notes  # fp32, and the non-quantized layers of int8 on CPU


def _capabilities(core: Any, device: str) -> list[str]:
    try:
        return list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except RuntimeError:
        return []


def runtime_config(
    core: Any, device: str, hint: str, threads: int | None, profile: bool, options: dict
) -> dict[str, Any]:
    """Latency-oriented, one stream; threads and pinning only where the device has them.

    Measured with OpenVINO 2026.4 on CPU: PERFORMANCE_HINT=LATENCY keeps an explicit
    INFERENCE_NUM_THREADS and NUM_STREAMS=1. Pinning is off by default: on machines shared with
    other work, pinned threads wait for busy cores; set target option cpu_pinning = true on a device.
    """
    try:
        supported = set(core.get_property(device, "SUPPORTED_PROPERTIES"))
    except RuntimeError:
        supported = set()
    wanted: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": hint,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "ENABLE_CPU_PINNING": bool(options.get("cpu_pinning", False)),
    }
    if threads:
        wanted["INFERENCE_NUM_THREADS"] = int(threads)
    if profile:
        wanted["PERF_COUNT"] = True
    if not supported:
        return wanted
    if "INFERENCE_PRECISION_HINT" not in supported and device != "CPU":
        wanted.pop("INFERENCE_PRECISION_HINT")  # e.g. NPU: the compiler picks f16/int8 itself
    return {k: v for k, v in wanted.items() if k in supported}


def _fits(partial: Any, shape: Sequence[int]) -> bool:
    dims = list(partial)
    return len(dims) == len(shape) and all(
        d.is_dynamic or d.get_length() == s for d, s in zip(dims, shape, strict=True)
    )


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Check ")]
    return lines[-1] if lines else type(exc).__name__
