"""Run a TensorRT engine from numpy: bindings by tensor name, one CUDA stream, synchronous per call.

Device memory and copies come from cuda-python (`pip install cuda-python`; `cuda.bindings.runtime`,
or `cuda.cudart` in releases before 12.6), not torch, so this runs on a Jetson without torch.
Each run() copies the inputs in, enqueues (execute_async_v3), copies the outputs out and waits:
the time of a call is the latency an application sees, copies included.
Per-layer times come from a trt.IProfiler; each layer's precision and kernel from the engine
inspector (build_engine builds with detailed profiling verbosity so the inspector has them).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.backends.base import LayerTime
from edgedistill.core.errors import EdgeDistillError


def cudart() -> Any:
    """cuda-python's runtime module, whichever layout the installed release has."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError:
            raise EdgeDistillError(
                "cuda-python is not installed: pip install cuda-python (the TensorRT runner takes its "
                "device memory from it)"
            ) from None
    return runtime


def _ok(result: Any, what: str) -> Any:
    """Unpack cuda-python's (error, value...) tuples; a CUDA error becomes one line."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EdgeDistillError(f"CUDA error in {what}: {err}")
    return values[0] if len(values) == 1 else values


class TensorRtRunner:
    def __init__(self, engine_path: Path, profile_layers: bool = False) -> None:
        import tensorrt as trt

        self._trt = trt
        self._rt = cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise EdgeDistillError(
                f"{engine_path}: TensorRT {trt.__version__} cannot load this engine (built by another "
                f"TensorRT version or for another GPU): rebuild it here with `edgedistill build-engine "
                f"{Path(engine_path).parent}`"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._dtype = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._stream = _ok(self._rt.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._runs = 0
        self._profiler = _profiler(trt) if profile_layers else None
        if self._profiler is not None:
            self.context.profiler = self._profiler

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _ok(self._rt.cudaFree(ptr), "cudaFree")
            ptr = int(_ok(self._rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
            self.context.set_tensor_address(name, ptr)
        return ptr

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rt = self._rt
        to_device = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        for name in self.input_names:
            if name not in inputs:
                raise EdgeDistillError(f"missing model input '{name}' (got {', '.join(inputs) or 'none'})")
            arr = np.ascontiguousarray(inputs[name], dtype=self._dtype[name])
            if not self.context.set_input_shape(name, tuple(arr.shape)):
                lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
                raise EdgeDistillError(
                    f"input '{name}' has shape {tuple(arr.shape)}, the engine takes {tuple(lo)} to {tuple(hi)}: "
                    "feed that, or re-export for this size"
                )
            ptr = self._device(name, arr.nbytes)
            _ok(rt.cudaMemcpyAsync(ptr, arr, arr.nbytes, to_device, self._stream), "copy to the GPU")
        outputs = {}
        for name in self.output_names:
            host = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtype[name])
            self._device(name, host.nbytes)
            outputs[name] = host
        if not self.context.execute_async_v3(int(self._stream)):
            raise EdgeDistillError("TensorRT could not enqueue the engine (see its log above)")
        to_host = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, host in outputs.items():
            ptr = self._buffers[name][0]
            _ok(rt.cudaMemcpyAsync(host, ptr, host.nbytes, to_host, self._stream), "copy from the GPU")
        _ok(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        self._runs += 1
        return outputs

    def layer_times(self) -> list[LayerTime]:
        if self._profiler is None or not self._runs:
            return []
        info = self.layer_info()
        return [
            LayerTime(name, info.get(name, ("", ""))[0], ms / self._runs, info.get(name, ("", ""))[1])
            for name, ms in self._profiler.totals.items()
        ]

    def layer_info(self) -> dict[str, tuple[str, str]]:
        """layer name -> (layer type, "precision kernel") from the engine inspector's JSON."""
        inspector = self.engine.create_engine_inspector()
        try:
            data = json.loads(inspector.get_engine_information(self._trt.LayerInformationFormat.JSON))
        except (ValueError, TypeError):
            return {}
        out = {}
        for layer in data.get("Layers", []):
            if not isinstance(layer, dict):  # built without detailed verbosity: names only
                continue
            outs = layer.get("Outputs") or [{}]
            fmt = str(outs[0].get("DataType") or outs[0].get("Format/Datatype") or "")
            precision = next((p for key, p in _PRECISIONS if key in fmt.lower()), fmt)
            tactic = str(layer.get("TacticName") or "")
            out[str(layer.get("Name"))] = (str(layer.get("LayerType", "")), f"{precision} {tactic}".strip())
        return out

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self._rt.cudaFree(ptr)
        self._buffers.clear()
        if self._stream is not None:
            self._rt.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


_PRECISIONS = (
    ("int8", "int8"),
    ("fp16", "fp16"),
    ("half", "fp16"),
    ("bf16", "bf16"),
    ("fp32", "fp32"),
    ("float", "fp32"),
)


def _profiler(trt: Any) -> Any:
    """A trt.IProfiler summing each layer's milliseconds (TensorRT calls it per layer per run)."""

    class Profiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.totals: dict[str, float] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.totals[layer_name] = self.totals.get(layer_name, 0.0) + float(ms)

    return Profiler()
