"""Time compiled block artifacts kernel by kernel, here or on a device over SSH.

A block measured alone has costs its place in a whole model does not: its input must be
quantized (a QuantizeLinear / FakeQuantize the previous block's kernel does in the whole model)
and its output turned back into fp32 (a DequantizeLinear / Reorder). So a block is timed with the
runtime's own per-kernel profiler and those boundary kernels are left out; what is summed is what
the block's kernels cost inside a model. Medians over the profiled calls (locally) keep a busy
machine's spikes out; over SSH the device reports per-layer means.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.core.artifact import load_artifact
from edgedistill.core.errors import EdgeDistillError

BOUNDARY_TYPES = ("Reorder", "Convert", "FakeQuantize", "Subgraph", "QuantizeLinear", "DequantizeLinear")
NOT_KERNELS = ("Parameter", "Result", "Input", "Output", "Constant")


@dataclass
class Kernel:
    name: str
    op_type: str
    ms: float
    precision: str = ""


@dataclass
class BlockTiming:
    ms: float  # the block's kernels, boundary left out
    kernels: int  # how many kernels ran (the per-kernel overhead term counts them)
    precision: dict[str, float] = field(default_factory=dict)  # ms per kernel precision
    boundary_ms: float = 0.0
    detail: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ms": round(self.ms, 5),
            "kernels": self.kernels,
            "precision": {k: round(v, 5) for k, v in self.precision.items()},
            "boundary_ms": round(self.boundary_ms, 5),
            "detail": self.detail,
        }


def is_boundary(k: Kernel, inputs: Sequence[str], outputs: Sequence[str]) -> bool:
    """A kernel that exists only because the block stands alone (see the module docstring)."""
    if k.op_type not in BOUNDARY_TYPES:
        return False
    for t in inputs:
        if k.name == f"{t}_QuantizeLinear" or k.name.startswith((f"{t}/fq", f"{t}_")):
            return True
    for t in outputs:
        if k.name == f"{t}_DequantizeLinear":
            return True
    return k.op_type in ("Reorder", "Convert") and k.name.endswith("sink_port_0")


def summarize(kernels: Sequence[Kernel], inputs: Sequence[str], outputs: Sequence[str]) -> BlockTiming:
    """Sum the block's own kernels; record the boundary's cost apart."""
    inside = [k for k in kernels if k.op_type not in NOT_KERNELS and not is_boundary(k, inputs, outputs)]
    edge = [k for k in kernels if k.op_type not in NOT_KERNELS and is_boundary(k, inputs, outputs)]
    mix: dict[str, float] = {}
    for k in inside:
        mix[_precision_label(k)] = mix.get(_precision_label(k), 0.0) + k.ms
    return BlockTiming(
        sum(k.ms for k in inside),
        len(inside),
        mix,
        sum(k.ms for k in edge),
        [{"name": k.name, "op": k.op_type, "ms": round(k.ms, 5), "precision": k.precision} for k in inside],
    )


def _precision_label(k: Kernel) -> str:
    p = k.precision.lower()
    if "i8" in p or "u8" in p or "int8" in p or k.op_type.startswith("QLinear"):
        return "int8"
    if "f16" in p or "fp16" in p:
        return "fp16"
    if "bf16" in p:
        return "bf16"
    return "fp32"


# ------------------------------------------------------------------------------------------ local
def time_local(
    artifact_dir: Path,
    feed: dict[str, np.ndarray],
    threads: int | None,
    calls: int,
    seconds: float,
    clock: str = "wall",
) -> list[Kernel]:
    """Per-kernel median ms of `calls` profiled inferences (and at least `seconds`), after warm-up.

    clock "cpu" (one thread on a machine shared with other work): the kernels' profiler times
    count the time they waited for a core, long kernels more often; their shares are kept and
    scaled to the median process CPU time per call, which does not count waiting."""
    from edgedistill.backends import load_runner

    art = load_artifact(artifact_dir)
    runner = load_runner(art, threads=threads, profile_layers=True)
    cpu: list[int] = []
    timed = _CpuTimed(runner, cpu) if clock == "cpu" else runner
    try:
        warm = 3
        for _ in range(warm):
            runner.run(feed)
        if art.backend == "openvino":
            kernels = _openvino_medians(timed, feed, calls, seconds)
        elif art.backend == "onnxruntime":
            kernels = _ort_medians(timed, feed, calls, seconds, skip=warm)
        else:  # any other runtime: its own per-layer means
            _repeat(timed, feed, calls, seconds)
            kernels = [Kernel(t.name, t.op_type, t.ms, t.precision) for t in runner.layer_times()]
    finally:
        close = getattr(runner, "close", None)
        if close is not None:
            close()
    total = sum(k.ms for k in kernels if k.op_type not in NOT_KERNELS)
    if clock == "cpu" and cpu and total > 0:
        scale = float(np.median(cpu)) / 1e6 / total
        kernels = [Kernel(k.name, k.op_type, k.ms * scale, k.precision) for k in kernels]
    return kernels


class _CpuTimed:
    """The runner, with each run's process CPU time kept."""

    def __init__(self, runner: Any, into: list[int]) -> None:
        self._runner, self._into = runner, into
        self.session = getattr(runner, "session", None)
        self.request = getattr(runner, "request", None)

    def run(self, feed: dict[str, np.ndarray]) -> Any:
        t0 = time.process_time_ns()
        out = self._runner.run(feed)
        self._into.append(time.process_time_ns() - t0)
        return out

    def close(self) -> None:
        close = getattr(self._runner, "close", None)
        if close is not None:
            close()


def _repeat(runner: Any, feed: dict[str, np.ndarray], calls: int, seconds: float) -> int:
    done, start = 0, time.perf_counter()
    while done < calls or time.perf_counter() - start < seconds:
        runner.run(feed)
        done += 1
    return done


def _ort_medians(
    runner: Any, feed: dict[str, np.ndarray], calls: int, seconds: float, skip: int
) -> list[Kernel]:
    from edgedistill.backends.onnxruntime import _compute_dtype

    _repeat(runner, feed, calls, seconds)
    path = runner.session.end_profiling()
    try:
        events = json.loads(Path(path).read_text())
    finally:
        runner.close()
    durations: dict[str, list[float]] = {}
    info: dict[str, tuple[str, str]] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node, args = name[: -len("_kernel_time")], e.get("args", {})
        durations.setdefault(node, []).append(float(e.get("dur", 0)) / 1000.0)
        info.setdefault(node, (str(args.get("op_name", "")), _compute_dtype(args)))
    return [Kernel(n, info[n][0], float(np.median(d[skip:] or d)), info[n][1]) for n, d in durations.items()]


def _openvino_medians(runner: Any, feed: dict[str, np.ndarray], calls: int, seconds: float) -> list[Kernel]:
    import openvino as ov

    executed = ov.ProfilingInfo.Status.EXECUTED
    durations: dict[str, list[float]] = {}
    info: dict[str, tuple[str, str]] = {}
    done, start = 0, time.perf_counter()
    while done < calls or time.perf_counter() - start < seconds:
        runner.run(feed)
        done += 1
        for p in runner.request.profiling_info:
            if p.status != executed:
                continue
            durations.setdefault(p.node_name, []).append(p.real_time.total_seconds() * 1e3)
            info.setdefault(p.node_name, (p.node_type, p.exec_type))
    return [Kernel(n, info[n][0], float(np.median(d)), info[n][1]) for n, d in durations.items()]


# ------------------------------------------------------------------------------------------ remote
def time_remote(
    host: str,
    artifact_dirs: Sequence[Path],
    feeds: Sequence[dict[str, np.ndarray]],
    threads: int | None,
    calls: int,
    ssh: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[list[Kernel]]:
    """Every block artifact profiled on `host` in one SSH session, as `edgedistill profile --host`
    runs it (profiler/remote.py: the runtime part zipped, run there, the report back); per-kernel
    means as the device reports them. The blocks come from one model, so their input tensors have
    one name each: one inputs file holds them all and each block takes its own by name."""
    from edgedistill.profiler.remote import run_remote
    from edgedistill.runtime.session import ProfileOptions
    from edgedistill.runtime.sources import artifact_source

    opts = ProfileOptions(
        threads=threads,
        warmup=3,
        iterations=3,
        min_time=0.0,
        layers=1_000_000,
        layer_calls=calls,
        roofline=False,
    )
    ssh = ssh or {}
    merged: dict[str, np.ndarray] = {}
    for feed in feeds:
        merged.update(feed)
    sources = [artifact_source(load_artifact(d), str(d), f"b{i}") for i, d in enumerate(artifact_dirs)]
    report = run_remote(
        host, sources, opts, inputs=merged, ssh_options=ssh.get("options", ()), identity=ssh.get("identity"),
        remote_python=ssh.get("python", "python3"), reporter=_LogReporter(log) if log else None,
        timeout=ssh.get("timeout"),
    )  # fmt: skip
    out = []
    for d, res in zip(artifact_dirs, report.models, strict=True):
        if res.skipped or not res.layers:
            raise EdgeDistillError(
                f"{host}: block {d.parent.name} gave no per-kernel profile ({res.skipped or report.warnings})"
            )
        out.append(
            [Kernel(r["name"], r["op_type"], float(r["ms"]), r.get("precision", "")) for r in res.layers]
        )
    return out


class _LogReporter:
    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log

    def stage(self, text: str) -> None:
        self.log(text)

    def rounds(self, done: int, total: int) -> None:
        pass
