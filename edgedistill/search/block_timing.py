"""Time compiled block artifacts kernel by kernel, here or on a device over SSH.

A block is compiled in its carrier (blocks.block_model: identity 1x1 convs before and after it), so
the profile holds kernels that are not the block's: the stand-in convs, the quantizer of the
model's input, the layout conversions at the carrier's edges. `summarize` keeps the block's own:
a kernel belongs to the block when its name (or, on OpenVINO, one of the layers fused into it)
names one of the block's nodes or tensors (QuantizeLinear / FakeQuantize / DequantizeLinear kernels
are named after the tensor they convert); a kernel that names nothing (the layout conversions ORT
and OpenVINO insert: Transpose, ReorderInput/Output, Reorder) goes with the kernel that runs after it, so a conversion the block's own ops
need is the block's and one feeding the stand-in is not. Medians over the profiled calls (locally)
keep a busy machine's spikes out; over SSH the device reports per-layer means and their run order.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.core.artifact import load_artifact
from edgedistill.core.errors import EdgeDistillError
from edgedistill.search.blocks import carrier_names

NOT_KERNELS = ("Parameter", "Result", "Input", "Output", "Constant")
# what runtimes add to a node's or tensor's name in a kernel's: ORT's "_token_N" (a node after its
# NHWC rewrite), "<tensor>_nchwc" (an fp32 conv named by its output in the NCHWc layout),
# "/duplicated" (a weight's DequantizeLinear copied per consumer), the quantizers'
# "<tensor>_QuantizeLinear"; OpenVINO's "/WithoutBiases" (the conv before its bias add), "_original",
# "<tensor>/fq_output_0" (a FakeQuantize); and torch's "<node>_output_0" tensor names
NAME_SUFFIX = re.compile(
    r"(_token_\d+|_nchwc|/duplicated|/WithoutBiases|_original|/fq_output_\d+|_QuantizeLinear|_DequantizeLinear|_output_\d+)$"
)


@dataclass
class Kernel:
    name: str
    op_type: str
    ms: float
    precision: str = ""
    origin: str = ""  # comma-separated graph layers fused into it, where the runtime renamed it


@dataclass
class BlockTiming:
    ms: float  # the block's own kernels (summarize)
    kernels: int  # how many kernels ran (the per-kernel overhead term counts them)
    precision: dict[str, float] = field(default_factory=dict)  # ms per kernel precision
    boundary_ms: float = 0.0  # the carrier's kernels, left out
    detail: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ms": round(self.ms, 5),
            "kernels": self.kernels,
            "precision": {k: round(v, 5) for k, v in self.precision.items()},
            "boundary_ms": round(self.boundary_ms, 5),
            "detail": self.detail,
        }


def owner(k: Kernel, own: set[str], other: set[str]) -> bool | None:
    """True: the kernel is the block's (it names one of `own`), False: the carrier's (one of
    `other`), None: it names neither (see the module docstring). Its own name decides first, then
    the layers fused into it, the block's before the carrier's."""
    found = [_resolve(name, own, other) for name in [k.name, *filter(None, k.origin.split(","))]]
    if found[0] is not None:
        return found[0]
    return True if True in found else (False if False in found else None)


def _resolve(name: str, own: set[str], other: set[str]) -> bool | None:
    for _ in range(8):
        if name in own:
            return True
        if name in other:
            return False
        bare = NAME_SUFFIX.sub("", name)
        if bare == name:
            return None
        name = bare
    return None


def total_ms(kernels: Sequence[Kernel]) -> float:
    """A profiled model's time: its kernels' sum (the runtime's own entries left out)."""
    return sum(k.ms for k in kernels if k.op_type not in NOT_KERNELS)


def summarize(kernels: Sequence[Kernel], own: Iterable[str], other: Iterable[str]) -> BlockTiming:
    """Sum the block's own kernels, in run order: `own` are its nodes' and tensors' names, `other`
    what the carrier and the model's input are (the block's inputs, the stand-ins' names)."""
    own_set, other_set = set(own), set(other)
    ks = [k for k in kernels if k.op_type not in NOT_KERNELS]
    owners = [owner(k, own_set, other_set) for k in ks]  # a layout conversion names no node: None
    follow: bool | None = None  # nameless kernels go with the next kernel that has an owner
    for i in reversed(range(len(ks))):
        if owners[i] is None:
            owners[i] = follow
        else:
            follow = owners[i]
    last = next((o for o in owners if o is not None), False)  # a nameless tail goes with what ran before
    for i in range(len(ks)):
        if owners[i] is None:
            owners[i] = last
        last = owners[i]
    inside = [k for k, o in zip(ks, owners, strict=True) if o]
    mix: dict[str, float] = {}
    for k in inside:
        mix[_precision_label(k)] = mix.get(_precision_label(k), 0.0) + k.ms
    return BlockTiming(
        sum(k.ms for k in inside),
        len(inside),
        mix,
        sum(k.ms for k, o in zip(ks, owners, strict=True) if not o),
        [{"name": k.name, "op": k.op_type, "ms": round(k.ms, 5), "precision": k.precision} for k in inside],
    )


def block_names(block: Any) -> tuple[list[str], list[str]]:
    """(own, other) for summarize from a blocks.Block: its nodes and tensors; its inputs and the
    carrier's stand-ins (blocks.block_model names them)."""
    return [*block.nodes, *block.tensors], [*block.inputs, *carrier_names(block)]


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
ROUND_GROUP = 48  # blocks loaded at once and timed in interleaved rounds (bounds the memory held)


def time_local_many(
    artifact_dirs: Sequence[Path],
    feeds: Sequence[dict[str, np.ndarray]],
    threads: int | None,
    calls: int,
    seconds: float,
    clock: str = "wall",
    advance: Callable[[int], None] | None = None,
) -> list[list[Kernel]]:
    """Per-kernel median ms of each block's `calls` profiled inferences, after warm-up, the blocks
    taken in interleaved rounds (one call each per round) until every block has its calls and the
    rounds have lasted `seconds` per block.

    Why rounds: on a shared 2-vCPU machine a block's kernels run at twice their time while a core
    is stolen, in bursts that outlast the block's few calls; one block after another, a burst
    poisons every call of one block (the same block timed 3.4 ms in one pass and 7.0 in the next;
    a model's blocks summed 0.83-1.13x across two passes, p10-p90, against 0.91-1.02x in rounds:
    benchmarks/block_timing_repeat.py). Spread over the whole
    measurement, each block's median sees what a whole model's does.

    clock "cpu" (one thread on a machine shared with other work): the kernels' profiler times
    count the time they waited for a core, long kernels more often; their shares are kept and
    scaled to the median process CPU time per call, which does not count waiting."""
    out: list[list[Kernel]] = []
    for i in range(0, len(artifact_dirs), ROUND_GROUP):
        group = [
            _Profiled(d, f, threads, clock)
            for d, f in zip(artifact_dirs[i : i + ROUND_GROUP], feeds[i : i + ROUND_GROUP], strict=True)
        ]
        try:
            done, start = 0, time.perf_counter()
            while done < calls or time.perf_counter() - start < seconds * len(group):
                for b in group:
                    b.call()
                done += 1
            out += [b.kernels() for b in group]
        finally:
            for b in group:
                b.close()
        if advance is not None:
            advance(len(group))
    return out


class _Profiled:
    """One block's runner with the runtime's per-kernel profiler on, its timings kept per call."""

    WARM = 3

    def __init__(self, artifact_dir: Path, feed: dict[str, np.ndarray], threads: int | None, clock: str):
        from edgedistill.backends import load_runner

        self.art = load_artifact(artifact_dir)
        self.runner = load_runner(self.art, threads=threads, profile_layers=True)
        self.feed, self.clock = feed, clock
        self.cpu: list[int] = []
        self.durations: dict[str, list[float]] = {}
        self.info: dict[str, tuple[str, str]] = {}
        self.executed = None
        if self.art.backend == "openvino":  # per call, OpenVINO reports the kernels that ran
            import openvino as ov

            self.executed = ov.ProfilingInfo.Status.EXECUTED
        for _ in range(self.WARM):
            self.runner.run(feed)

    def call(self) -> None:
        t0 = time.process_time_ns()
        self.runner.run(self.feed)
        self.cpu.append(time.process_time_ns() - t0)
        if self.executed is not None:
            for p in self.runner.request.profiling_info:
                if p.status == self.executed:
                    self.durations.setdefault(p.node_name, []).append(p.real_time.total_seconds() * 1e3)
                    self.info.setdefault(p.node_name, (p.node_type, p.exec_type))

    def kernels(self) -> list[Kernel]:
        if self.art.backend == "onnxruntime":
            self._read_ort_profile()
        if self.durations:
            fused = self.runner.fused_layers() if hasattr(self.runner, "fused_layers") else {}
            kernels = [
                Kernel(n, self.info[n][0], float(np.median(d)), self.info[n][1], fused.get(n, ""))
                for n, d in self.durations.items()
            ]
        else:  # any other runtime: its own per-layer means
            kernels = [
                Kernel(t.name, t.op_type, t.ms, t.precision, t.origin) for t in self.runner.layer_times()
            ]
        total = total_ms(kernels)
        if self.clock == "cpu" and self.cpu and total > 0:
            scale = float(np.median(self.cpu)) / 1e6 / total
            kernels = [Kernel(k.name, k.op_type, k.ms * scale, k.precision, k.origin) for k in kernels]
        return kernels

    def _read_ort_profile(self) -> None:
        from edgedistill.backends.onnxruntime import _compute_dtype

        path = self.runner.session.end_profiling()
        events = json.loads(Path(path).read_text())
        for e in events:
            name = e.get("name", "")
            if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
                continue
            node, args = name[: -len("_kernel_time")], e.get("args", {})
            self.durations.setdefault(node, []).append(float(e.get("dur", 0)) / 1000.0)
            self.info.setdefault(node, (str(args.get("op_name", "")), _compute_dtype(args)))
        self.durations = {n: d[self.WARM :] or d for n, d in self.durations.items()}

    def close(self) -> None:
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()


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
    means as the device reports them. The blocks may come from several models that name a tensor
    alike at different widths: each block's inputs travel under its own label (runtime/sources.py
    OWN_INPUT), all in one inputs file."""
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
    from edgedistill.runtime.sources import OWN_INPUT

    merged = {f"b{i}{OWN_INPUT}{name}": a for i, feed in enumerate(feeds) for name, a in feed.items()}
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
            [
                Kernel(r["name"], r["op_type"], float(r["ms"]), r.get("precision", ""), r.get("origin", ""))
                for r in sorted(res.layers, key=lambda r: r.get("seq", 0))  # run order (summarize)
            ]
        )
    return out


class _LogReporter:
    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log

    def stage(self, text: str) -> None:
        self.log(text)

    def rounds(self, done: int, total: int) -> None:
        pass
