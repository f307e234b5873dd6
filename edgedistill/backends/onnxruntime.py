"""ONNX Runtime: fp32 (offline graph optimization), fp16, static INT8 QDQ; .ort for mobile builds.

Artifact files (files[0] is what loads):
    model.onnx                     fp32 optimized / fp16 (fp32 I/O) / int8 QDQ (per-channel weights)
    model.ort + required_operators.config   with target option ort_format (ORT Mobile, reduced builds)
    calibration.json               int8: the activation ranges the scales came from (reusable)

Offline optimization level: "extended" on x86_64 (fused ops of the CPU EP), "basic" elsewhere:
higher levels bake in kernels of the machine that compiled (e.g. x86 NCHWc layouts), which an ARM
device cannot run. The session re-optimizes fully at load. numpy + onnxruntime only, lazily.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import tempfile
import weakref
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
    from edgedistill.onnxtools.qdq import TensorRanges

CALIBRATION_CACHE = "calibration.json"
MODEL, ORT_MODEL, OPS_CONFIG = "model.onnx", "model.ort", "required_operators.config"
_INT8_TYPES = {"int8", "uint8"}
_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxRuntimeBackend:
    name = "onnxruntime"
    takes_ranges = True
    symmetric_int8 = False
    compiles_offline = False

    def available(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "pip install onnxruntime"
        return None

    def precisions_here(self, device: str = "CPU") -> tuple[str, ...]:
        return ("fp32", "fp16", "int8") if self.available() is None and device == "CPU" else ()

    # ------------------------------------------------------------------------------------ compile
    def compile(
        self,
        onnx_path: Path,
        target: Target,
        calib: CalibrationSet | None,
        out_dir: Path,
        keep_higher: Sequence[str] = (),
        *,
        ranges: TensorRanges | None = None,
    ) -> CompileResult:
        """Compile `onnx_path` at `target.precision`; `ranges` (from export.qdq.compute_ranges) lets
        repeated int8 compiles (the quality gate's attempts) skip recalibration."""
        from edgedistill.onnxtools.checks import load_onnx_checked

        onnx_path, out_dir = Path(onnx_path), Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        source = load_onnx_checked(onnx_path)
        precision = target.precision
        notes: list[str] = []
        extra: dict[str, Any] = {}
        kept: list[str] = []
        if precision == "fp32":
            level = _offline_level(target)
            _optimize(onnx_path, out_dir / MODEL, level, source)
            extra["offline_optimization"] = level
            notes.append(f"fp32 graph optimized offline at level '{level}' (portable to {target.arch})")
            if keep_higher:
                notes.append("keep_higher ignored: fp32 is already the highest precision")
        elif precision == "fp16":
            kept = _to_fp16(source, out_dir / MODEL, keep_higher)
            notes.append(
                "fp16 weights and compute, fp32 inputs/outputs; CPU EPs without fp16 kernels cast back"
            )
        elif precision == "int8":
            kept = list(keep_higher)
            ranges = self._int8(onnx_path, target, calib, out_dir, kept, ranges)
            from edgedistill.backends.onnxruntime_align import align_int8_file

            aligned = align_int8_file(out_dir / MODEL, target)
            if aligned:
                extra["aligned_convs"] = aligned
                notes.append(
                    f"{len(aligned)} int8 conv(s) given zero channels so ORT's x86 int8 conv kernel runs them"
                )
            extra["calibration_cache"] = CALIBRATION_CACHE
            extra["calibration"] = {"method": ranges.method, "samples": ranges.samples}
            notes.append("static INT8 QDQ: int8 per-channel weights, calibrated activations")
        else:
            raise EdgeDistillError(f"onnxruntime compiles fp32, fp16 or int8, not '{precision}'")
        files = [MODEL]
        if target.options.get("ort_format"):
            platform = "arm" if target.arch == "aarch64" else "amd64"
            _to_ort_format(out_dir / MODEL, out_dir, platform)
            files = [ORT_MODEL, MODEL, OPS_CONFIG]
            extra["ort_platform"] = platform
            notes.append(f"ORT format for {platform}; {OPS_CONFIG} lists the ops a reduced build needs")
        return CompileResult(files, precision, kept, notes=notes, extra=extra)

    def _int8(
        self,
        onnx_path: Path,
        target: Target,
        calib: CalibrationSet | None,
        out_dir: Path,
        keep: list[str],
        ranges: TensorRanges | None,
    ) -> TensorRanges:
        from edgedistill.onnxtools.qdq import compute_ranges, quantize_qdq

        with tempfile.TemporaryDirectory(prefix="edgedistill-ort-int8-") as work:
            if ranges is None:
                if calib is None:
                    raise EdgeDistillError(
                        f"INT8 for {target.name} needs calibration data: give --calib-data FOLDER "
                        "(or export a teacher that has a calibration recipe)"
                    )
                ranges = compute_ranges(onnx_path, calib, Path(work))
            quantize_qdq(
                onnx_path,
                out_dir / MODEL,
                ranges,
                exclude=keep,
                per_channel=bool(target.options.get("per_channel", True)),
                symmetric_activations=bool(target.options.get("symmetric_activations", False)),
                form=target.options.get("qdq_form"),  # "xnnpack" on ARM targets (onnxtools/qdq.py)
            )
            _fold_int8_pads(out_dir / MODEL)
        ranges.save(out_dir / CALIBRATION_CACHE)
        return ranges

    # ------------------------------------------------------------------------------------ load
    def load(self, artifact: Artifact, threads: int | None = None, profile_layers: bool = False) -> OrtRunner:
        import onnxruntime as ort

        path = artifact.model_path
        if not path.is_file():
            raise EdgeDistillError(f"{artifact.dir}: model file {path.name} is missing")
        if path.suffix == ".onnx" and _has_onnx():  # a device may carry onnxruntime without onnx
            from edgedistill.onnxtools.checks import load_onnx_checked

            load_onnx_checked(path, check=False)  # refuses corrupt files and escaping external data
        target = artifact.manifest.get("target") or {}
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or target.get("threads") or 0)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning worker threads of several sessions in one process slow each other down.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        profile_dir = None
        if profile_layers:
            profile_dir = tempfile.mkdtemp(prefix="edgedistill-ortprof-")
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(profile_dir) / "profile")
        providers = _providers((target.get("options") or {}).get("execution_providers"), ort)
        try:
            session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:
            if profile_dir:
                shutil.rmtree(profile_dir, ignore_errors=True)
            raise EdgeDistillError(_session_error(path, exc, providers)) from None
        return OrtRunner(session, profile_dir)


class OrtRunner:
    """One InferenceSession; layer_times() reads ORT's own profiler (node-level kernel events)."""

    def __init__(self, session: Any, profile_dir: str | None = None) -> None:
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self._dtypes = {i.name: _NUMPY.get(i.type, np.float32) for i in session.get_inputs()}
        self._layers: list[LayerTime] | None = None
        # ORT's profile file lives in profile_dir: removed when layer_times() has read it, on close(),
        # or when the runner is collected (or the process exits) without either.
        self._cleanup = weakref.finalize(self, _end_profiling, session, profile_dir) if profile_dir else None

    def close(self) -> None:
        """End profiling and remove its temp dir now; layer_times() keeps what it had read."""
        if self._cleanup is not None:
            self._cleanup()

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise EdgeDistillError(
                f"model input(s) {', '.join(missing)} not given (have {', '.join(inputs)})"
            )
        feeds = {n: np.ascontiguousarray(inputs[n], dtype=self._dtypes[n]) for n in self.input_names}
        outs = self.session.run(None, feeds)
        return dict(zip(self.output_names, outs, strict=True))

    def layer_times(self) -> list[LayerTime]:
        """Mean ms per inference of each node's kernel since load (ends profiling at the first call)."""
        if self._cleanup is None:
            return []
        if self._layers is None:
            if not self._cleanup.alive:  # closed before anything was read
                return []
            path = self.session.end_profiling()
            try:
                self._layers = parse_profile(json.loads(Path(path).read_text()))
            finally:
                self._cleanup()
        return list(self._layers)


def _end_profiling(session: Any, profile_dir: str) -> None:
    """Stop ORT writing into `profile_dir`, then remove it (a weakref.finalize callback: no self)."""
    with contextlib.suppress(Exception):  # already ended: ORT returns "" and writes nothing more
        session.end_profiling()
    shutil.rmtree(profile_dir, ignore_errors=True)


def parse_profile(events: list[dict[str, Any]]) -> list[LayerTime]:
    """ORT's chrome-trace profile -> LayerTime per node (graph order), mean over the profiled runs.

    op_type is the kernel that ran (QLinearConv / ConvInteger mean int8 really ran, FusedConv fp32
    with a fused activation); precision is the dtype it computed in plus the execution provider.
    """
    runs = sum(1 for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    totals: dict[str, float] = {}
    info: dict[str, tuple[str, str]] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node, args = name[: -len("_kernel_time")], e.get("args", {})
        totals[node] = totals.get(node, 0.0) + float(e.get("dur", 0))
        if node not in info:
            provider = str(args.get("provider", "")).replace("ExecutionProvider", "")
            info[node] = (str(args.get("op_name", "")), f"{_compute_dtype(args)} {provider}".strip())
    runs = max(runs, 1)
    return [LayerTime(n, info[n][0], us / runs / 1000.0, info[n][1]) for n, us in totals.items()]


# ------------------------------------------------------------------------------------------ helpers
def _compute_dtype(args: dict[str, Any]) -> str:
    """int8 when any input is 8-bit integer, fp16 when any is float16, else fp32."""
    kinds = {k for shape in args.get("input_type_shape", []) for k in shape}
    if kinds & _INT8_TYPES:
        return "int8"
    if "float16" in kinds:
        return "fp16"
    return "fp32" if "float" in kinds or not kinds else sorted(kinds)[0]


def _offline_level(target: Target) -> str:
    return str(
        target.options.get("offline_optimization") or ("extended" if target.arch == "x86_64" else "basic")
    )


def _optimize(src: Path, out: Path, level: str, proto: Any) -> None:
    """Save ORT's optimized graph (at `level`) with the source's metadata (the spec)."""
    import onnx
    import onnxruntime as ort

    from edgedistill.core.atomic import write_atomic
    from edgedistill.onnxtools.checks import copy_metadata

    levels = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }
    if level not in levels:
        raise EdgeDistillError(f"offline_optimization must be one of {', '.join(levels)}, not '{level}'")
    with tempfile.TemporaryDirectory(prefix="edgedistill-ortopt-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = levels[level]
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        try:
            ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EdgeDistillError(_session_error(src, exc, ["CPUExecutionProvider"])) from None
        model = onnx.load_model(str(Path(tmp) / "opt.onnx"))
        copy_metadata(proto, model)
        write_atomic(out, lambda p: onnx.save_model(model, str(p)))


def _to_fp16(proto: Any, out: Path, keep_higher: Sequence[str]) -> list[str]:
    """fp16 weights/compute with fp32 I/O (ORT's float16 converter); keep_higher nodes stay fp32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from edgedistill.core.atomic import write_atomic
    from edgedistill.onnxtools.checks import copy_metadata

    names = {n.name for n in proto.graph.node}
    unknown = [n for n in keep_higher if n not in names]
    if unknown:
        raise EdgeDistillError(f"no node(s) {', '.join(unknown[:4])} in the model to keep at fp32")
    with warnings_quiet():
        half = convert_float_to_float16(
            onnx.ModelProto.FromString(proto.SerializeToString()),
            keep_io_types=True,
            node_block_list=list(keep_higher) or None,
        )
    copy_metadata(proto, half)
    write_atomic(out, lambda p: onnx.save_model(half, str(p)))
    return list(keep_higher)


def _to_ort_format(model: Path, out_dir: Path, platform: str) -> None:
    """model.onnx -> model.ort + required_operators.config (ORT's converter, fixed optimizations)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(prefix="edgedistill-ort-") as tmp_str:
        tmp = Path(tmp_str)
        shutil.copy2(model, tmp / MODEL)
        logger = logging.getLogger("ort_format_model.utils")  # logs "Created config in <temp dir>"
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                convert_onnx_models_to_ort(
                    tmp / MODEL,
                    output_dir=tmp / "out",
                    optimization_styles=[OptimizationStyle.Fixed],
                    target_platform=platform,
                )
        except Exception as exc:
            raise EdgeDistillError(f"cannot convert {model.name} to ORT format: {_first(exc)}") from None
        finally:
            logger.setLevel(level)
        configs = sorted((tmp / "out").glob("*.config"))
        if not (tmp / "out" / ORT_MODEL).is_file() or not configs:
            raise EdgeDistillError(
                f"ORT format conversion of {model.name} wrote no model.ort / operator config"
            )
        shutil.move(tmp / "out" / ORT_MODEL, out_dir / ORT_MODEL)
        shutil.move(configs[0], out_dir / OPS_CONFIG)


def _providers(wanted: Sequence[str] | None, ort: Any) -> list[str]:
    """The target's execution providers that this onnxruntime has, CPU always last as the fallback."""
    have = ort.get_available_providers()
    chosen = [p for p in (wanted or []) if p in have and p != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]


# ORT's ways of saying "this op cannot run here", each with the op (group "op") and maybe the node.
_OP_ERRORS = (
    re.compile(r"implementation for (?P<op>\S+?)\((?P<ver>-?\d+)\) node with name '(?P<node>[^']*)'"),
    re.compile(r"(?P<op>\S+?)\((?P<ver>-?\d+)\) is not a registered function/op"),
    re.compile(r'In Node, \("(?P<node>[^"]*)", (?P<op>[\w.]+), "(?P<domain>[^"]*)"'),
    re.compile(r"of operator \((?P<op>[\w.]+)\) in node \((?P<node>[^)]*)\)"),
)


def _session_error(path: Path, exc: BaseException, providers: Sequence[str]) -> str:
    """One line: which op (and node) this onnxruntime cannot run, or the first line of its error."""
    import onnxruntime as ort

    text = str(exc)
    where = (
        f"onnxruntime {ort.__version__} ({', '.join(p.replace('ExecutionProvider', '') for p in providers)})"
    )
    for pattern in _OP_ERRORS:
        m = pattern.search(text)
        if not m:
            continue
        groups = m.groupdict()
        op = groups["op"]
        nodes = [groups["node"]] if groups.get("node") else _nodes_quietly(path, op.rsplit(":", 1)[-1])
        named = f" (node {', '.join(repr(n) for n in nodes[:3])})" if nodes else ""
        why = _first(exc).split(" : ")[-1][:160]
        return f"{path}: op {op}{named} cannot run in {where}: {why}"
    return f"{path}: onnxruntime cannot load it: {_first(exc)}"


def _nodes_quietly(path: Path, op: str) -> list[str]:
    from edgedistill.onnxtools.checks import node_for_op

    if path.suffix != ".onnx":
        return []
    try:
        return node_for_op(path, op)
    except EdgeDistillError:
        return []


@contextlib.contextmanager
def warnings_quiet() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _has_onnx() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnx") is not None


def _fold_int8_pads(path: Path) -> None:
    """Pads run on the int8 tensors (see export/qdq_fold.py); rewritten atomically in place."""
    import onnx

    from edgedistill.core.atomic import write_atomic
    from edgedistill.onnxtools.qdq_fold import fold_pads

    model = onnx.load_model(str(path))
    if not fold_pads(model):
        return
    try:  # the rewrite must be one ONNX Runtime runs, not only one the checker passes
        import onnxruntime as ort

        onnx.checker.check_model(model, full_check=True)
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # keep the unfolded model: slower pads, but it runs
        return
    write_atomic(path, lambda p: onnx.save_model(model, str(p)))
