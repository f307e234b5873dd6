"""Build a TensorRT engine from an artifact directory (on the device: engines are tied to its GPU).

`build_engine(dir)` reads build.json (written by TensorRtBackend.compile), parses the ONNX, sets the
precision flags, workspace, DLA core, optimization profile and timing cache, and writes model.engine
and timing.cache beside it; manifest.json, when present, then lists the engine first so `profile`
loads it. `trtexec_command(plan)` is the same build as one trtexec line.

Written against the TensorRT 10 Python API (works from 8.5 where noted): TensorRT 11 removed the
weak-typing flags (BuilderFlag.FP16/INT8), so there an int8 Q/DQ model builds strongly typed (layers
without Q/DQ stay fp32) and fp16 needs an fp16 ONNX. Imports tensorrt lazily: no torch here.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from edgedistill.core.artifact import member_path
from edgedistill.core.atomic import write_atomic, write_text_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.jsonfile import read_json

BUILD_FILE = "build.json"
ENGINE_FILE = "model.engine"
TIMING_CACHE = "timing.cache"


def trtexec_command(plan: dict[str, Any]) -> list[str]:
    """The plan as a trtexec command line (run in the artifact directory)."""
    cmd = [
        "trtexec",
        f"--onnx={plan['onnx']}",
        f"--saveEngine={plan['engine']}",
        f"--memPoolSize=workspace:{int(plan['workspace_mb'])}M",
        f"--timingCacheFile={plan['timing_cache']}",
        "--profilingVerbosity=detailed",
    ]
    if plan["precision"] == "int8":
        cmd += ["--int8", "--fp16"]  # Q/DQ layers in int8, the layers kept out of it in fp16
    elif plan["precision"] == "fp16":
        cmd.append("--fp16")
    elif not plan.get("tf32"):
        cmd.append("--noTF32")  # fp32 means fp32: TensorRT enables TF32 on Ampere+ by default
    if int(plan.get("dla_core", -1)) >= 0:
        cmd += [f"--useDLACore={int(plan['dla_core'])}", "--allowGPUFallback"]
    free = {k: v for k, v in plan.get("shapes", {}).items() if v.get("free")}
    if free:
        for flag in ("min", "opt", "max"):
            spec = ",".join(f"{name}:{'x'.join(map(str, s[flag]))}" for name, s in free.items())
            cmd.append(f"--{flag}Shapes={spec}")
    return cmd


def read_plan(artifact_dir: Path) -> dict[str, Any]:
    missing = f"{artifact_dir} has no {BUILD_FILE}: give an artifact directory exported for a TensorRT target"
    plan = read_json(artifact_dir / BUILD_FILE, missing=missing, fix="re-run `edgedistill export`")
    for key in ("onnx", "engine", "timing_cache"):  # files the build reads and writes: inside the artifact
        if plan.get(key) is not None:
            member_path(artifact_dir, plan[key], artifact_dir / BUILD_FILE)
    if not (artifact_dir / plan.get("onnx", "")).is_file():
        raise EdgeDistillError(f"{artifact_dir}: {plan.get('onnx')} named in {BUILD_FILE} is missing")
    return plan


def build_engine(
    artifact_dir: str | Path,
    *,
    workspace_mb: int | None = None,
    dla_core: int | None = None,
    timing_cache: str | Path | None = None,
) -> Path:
    """Build `artifact_dir`/model.engine with this machine's TensorRT and GPU; returns its path."""
    trt = _tensorrt()
    artifact_dir = Path(artifact_dir)
    plan = read_plan(artifact_dir)
    onnx_path = artifact_dir / plan["onnx"]
    logger = _logger(trt)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # no GPU / CUDA driver: the binding raises on a null builder
        raise EdgeDistillError(
            f"TensorRT cannot start a builder here ({logger.last_error() or exc})"
        ) from None
    weak = hasattr(trt.BuilderFlag, "FP16")  # TensorRT <= 10; 11 builds strongly typed only
    major = int(trt.__version__.split(".")[0])
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EdgeDistillError(parse_error(parser, onnx_path))

    config = builder.create_builder_config()
    workspace = int(workspace_mb if workspace_mb is not None else plan.get("workspace_mb", 1024))
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace << 20)
    else:  # TensorRT < 8.4
        config.max_workspace_size = workspace << 20
    _set_precision(trt, config, plan, weak)
    core = int(dla_core if dla_core is not None else plan.get("dla_core", -1))
    if core >= 0:
        available = int(getattr(builder, "num_DLA_cores", 0))
        if core >= available:
            raise EdgeDistillError(f"DLA core {core} asked for, this device has {available} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers the DLA cannot run go to the GPU
    _add_profile(builder, network, config, plan)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # per-layer precision in the inspector

    cache_path = Path(timing_cache) if timing_cache else artifact_dir / plan.get("timing_cache", TIMING_CACHE)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, False)  # False: a cache from another GPU/version is refused, not mixed

    serialized = _build_with_progress(trt, builder, network, config, onnx_path.name)
    if serialized is None:
        raise EdgeDistillError(
            f"TensorRT could not build {onnx_path.name}: {logger.last_error() or 'no reason given'}"
        )
    engine = artifact_dir / plan.get("engine", ENGINE_FILE)
    write_atomic(engine, lambda p: p.write_bytes(memoryview(serialized)))
    write_atomic(cache_path, lambda p: p.write_bytes(memoryview(config.get_timing_cache().serialize())))
    _update_manifest(artifact_dir, engine, trt.__version__, workspace, core)
    return engine


# ---------------------------------------------------------------------------------- pieces
def _tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise EdgeDistillError(
            "TensorRT is not installed (JetPack ships it; `pip install tensorrt` needs NVIDIA's index): "
            "build on the device, or run build.sh there (plain trtexec)"
        ) from None
    return trt


def _logger(trt: Any) -> Any:
    """An ILogger that keeps errors (for the one-line message) and prints warnings once each."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.seen: set[str] = set()

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg.strip())
            elif severity == trt.ILogger.Severity.WARNING and msg not in self.seen:
                self.seen.add(msg)
                print(f"TensorRT warning: {msg.strip()}")

        def last_error(self) -> str:
            return self.errors[-1] if self.errors else ""

    return Logger()


def parse_error(parser: Any, onnx_path: Path) -> str:
    """The parser's first error as one line naming the ONNX node and op (TensorRT 10 has both)."""
    if not parser.num_errors:
        return f"TensorRT cannot parse {onnx_path.name}: no reason given"
    err = parser.get_error(0)
    node = _call(err, "node_name") or (f"#{err.node()}" if _call(err, "node") not in (None, -1) else "")
    op = _call(err, "node_operator")
    where = f" at node '{node}'" + (f" ({op})" if op else "") if node else ""
    more = f" (+{parser.num_errors - 1} more)" if parser.num_errors > 1 else ""
    return f"TensorRT cannot parse {onnx_path.name}{where}: {str(err.desc()).strip()}{more}"


def _call(obj: Any, name: str) -> Any:
    fn = getattr(obj, name, None)
    try:
        return fn() if callable(fn) else None
    except Exception:
        return None


def _set_precision(trt: Any, config: Any, plan: dict[str, Any], weak: bool) -> None:
    precision = plan["precision"]
    if weak:
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # honours the Q/DQ nodes (explicit quantization)
    elif precision == "fp16":
        raise EdgeDistillError(
            f"TensorRT {trt.__version__} builds strongly typed networks only (BuilderFlag.FP16 is gone): "
            "export at int8 or fp32, or convert the ONNX to fp16 first"
        )
    if precision == "fp32" and not plan.get("tf32") and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default on Ampere+: "fp32" would run in TF32


def _add_profile(builder: Any, network: Any, config: Any, plan: dict[str, Any]) -> None:
    """An optimization profile for inputs with free dims (min/opt/max from build.json)."""
    free = [network.get_input(i) for i in range(network.num_inputs)]
    free = [t for t in free if any(int(d) < 0 for d in t.shape)]
    if not free:
        return
    profile = builder.create_optimization_profile()
    for tensor in free:
        shapes = plan.get("shapes", {}).get(tensor.name)
        if not shapes:
            raise EdgeDistillError(
                f"input '{tensor.name}' has free dims and {BUILD_FILE} gives no shapes for it"
            )
        profile.set_shape(tensor.name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)


def _build_with_progress(trt: Any, builder: Any, network: Any, config: Any, label: str) -> Any:
    """build_serialized_network in a worker thread, so Ctrl-C here cancels it through the progress monitor."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    cancel = threading.Event()
    result: list[Any] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()) as bar:
        monitor = _monitor(trt, bar, cancel)
        if monitor is not None:
            config.progress_monitor = monitor
        top = bar.add_task(f"building TensorRT engine for {label}", total=None)
        worker = threading.Thread(
            target=lambda: result.append(builder.build_serialized_network(network, config))
        )
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.2)
        except KeyboardInterrupt:
            cancel.set()
            worker.join()
            raise EdgeDistillError("engine build interrupted: nothing written") from None
        bar.update(top, total=1, completed=1)
    return result[0] if result else None


def _monitor(trt: Any, bar: Any, cancel: threading.Event) -> Any:
    """A trt.IProgressMonitor (TensorRT >= 10) driving rich bars; returning False cancels the build."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.tasks: dict[str, Any] = {}
            self.lock = threading.Lock()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self.lock:
                indent = "  " if parent_phase else ""
                self.tasks[phase_name] = bar.add_task(f"{indent}{phase_name}", total=max(1, num_steps))

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self.lock:
                if phase_name in self.tasks:
                    bar.update(self.tasks[phase_name], completed=step + 1)
            return not cancel.is_set()

        def phase_finish(self, phase_name: str) -> None:
            with self.lock:
                task = self.tasks.pop(phase_name, None)
                if task is not None:
                    bar.remove_task(task)

    return Monitor()


def _update_manifest(artifact_dir: Path, engine: Path, version: str, workspace: int, core: int) -> None:
    """List the engine first in manifest.json (so load() picks it) and record how it was built."""
    path = artifact_dir / "manifest.json"
    if not path.exists():
        return
    manifest = json.loads(path.read_text())
    manifest["files"] = [engine.name] + [f for f in manifest.get("files", []) if f != engine.name]
    info = manifest.setdefault("backend_info", {})
    info["engine_built"] = {
        "tensorrt": version,
        "gpu": _gpu_name(),
        "workspace_mb": workspace,
        "dla_core": core,
    }
    if isinstance(manifest.get("sizes"), dict):
        manifest["sizes"][engine.name] = engine.stat().st_size
    manifest.setdefault("versions", {})["tensorrt"] = version
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")


def _gpu_name() -> str:
    try:
        from edgedistill.backends.tensorrt_runner import cudart

        _err, props = cudart().cudaGetDeviceProperties(0)
        name = props.name
        return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\x00")
    except Exception:
        return "unknown"
