"""Whole models timed on the target, and the machine's typical speed to read them at.

    measure_latency(student, spec, "x86-onnxruntime", "int8", (256, 256))   -> ms (whole model)

A whole model is compiled as export compiles it (search/latency_compile.py) and timed in interleaved
rounds in one session (runtime/session.py), here or over SSH; the search times its finalists so,
with the speed anchor (search/speed_anchor.py) in the session, and reads them at the machine's
typical speed: a trimmed level of the anchor's times over every session that timed it (LatencyTable.typical_scale).
On a shared VM the same model runs 20-25 % faster or slower from one minute to the next; read as
timed, finalists measured in a slow minute read over a budget they meet.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.core.targets import Target, get_target
from edgedistill.search.latency_compile import compile_whole
from edgedistill.search.latency_table import LatencyTable
from edgedistill.search.speed_anchor import compile_anchor

if TYPE_CHECKING:
    import torch

WHOLE_MIN_TIME = 1.5


def measure_latency(
    model: torch.nn.Module,
    spec: GeneratorSpec,
    target: str | Path | Target,
    precision: str | None = None,
    size: tuple[int, int] | None = None,
    host: str | None = None,
    *,
    threads: int | None = None,
    min_time: float = WHOLE_MIN_TIME,
    ssh: dict[str, Any] | None = None,
) -> float:
    """Measured p50 ms of the whole `model`, compiled as export compiles it (same settings)."""
    return measure_models(
        [model], [spec], target, precision, size, host, threads=threads, min_time=min_time, ssh=ssh
    )[0]


def measure_models(
    models: Sequence[torch.nn.Module],
    specs: Sequence[GeneratorSpec],
    target: str | Path | Target,
    precision: str | None = None,
    size: tuple[int, int] | None = None,
    host: str | None = None,
    *,
    threads: int | None = None,
    min_time: float = WHOLE_MIN_TIME,
    ssh: dict[str, Any] | None = None,
    kernels: list[int] | None = None,
    typical: bool = False,
    cache_dir: str | Path | None = None,
    slowness: list[float] | None = None,
) -> list[float]:
    """p50 ms of each whole model, measured in interleaved rounds in one session (runtime/session.py).
    `kernels`, when given, receives how many kernels each compiled model runs. `typical` times the
    speed anchor with them and reads them at this machine's typical speed (the target's latency
    table's LatencyTable.typical_scale): what the search judges against a budget, whatever the minute;
    `slowness`, when given, receives how many times the typical speed's time this session ran."""
    tgt = as_target(target, precision)
    with tempfile.TemporaryDirectory(prefix="edgedistill-latency-whole-") as work_str:
        work = Path(work_str)
        dirs = []
        for i, (model, spec) in enumerate(zip(models, specs, strict=True)):
            sz = model_size(spec, tgt, size)
            dirs.append(compile_whole(model, spec, tgt, sz, work / f"m{i}"))
        if not typical:
            return time_compiled(dirs, tgt, host, threads, min_time, ssh, kernels)
        anchor = compile_anchor(tgt)[0]
        counted: list[int] | None = [] if kernels is not None else None
        *ms, anchor_ms = time_compiled(
            [*dirs, anchor], tgt, host, threads, min_time, ssh, counted, hot=[len(dirs)]
        )
    if kernels is not None and counted is not None:
        kernels.extend(counted[:-1])
    scale = _typical_scale(tgt, host, threads, cache_dir, anchor_ms)
    if slowness is not None:
        slowness.append(1 / scale)
    return [m * scale for m in ms]


def note_speed(
    target: str | Path | Target,
    precision: str | None = None,
    host: str | None = None,
    *,
    threads: int | None = None,
    ssh: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
) -> float:
    """Time the speed anchor alone, whole, into the table's typical speed (LatencyTable.typical_scale);
    how many times its typical time it ran. The search samples it between its phases, so that a new
    table's typical speed is a level of several minutes, not of its first session's few."""
    tgt = as_target(target, precision)
    (anchor_ms,) = time_compiled([compile_anchor(tgt)[0]], tgt, host, threads, ssh=ssh, hot=[0])
    return 1 / _typical_scale(tgt, host, threads, cache_dir, anchor_ms)


def _typical_scale(
    tgt: Target, host: str | None, threads: int | None, cache_dir: str | Path | None, anchor_ms: float
) -> float:
    """The anchor's whole time, just measured, added to the target's table; the factor to its typical speed."""
    table = LatencyTable.open(tgt, host, threads, cache_dir)
    scale = table.typical_scale("whole", anchor_ms)
    table.save()
    return scale


def time_compiled(
    dirs: Sequence[Path],
    tgt: Target,
    host: str | None = None,
    threads: int | None = None,
    min_time: float = WHOLE_MIN_TIME,
    ssh: dict[str, Any] | None = None,
    kernels: list[int] | None = None,
    hot: Sequence[int] = (),
    settle: str = "short",
) -> list[float]:
    """p50 ms of each compiled model dir (compile_whole), timed in interleaved rounds in one session:
    compile once, time as often as needed (benchmarks/measure_grouping.py). A model faster than
    runtime/session.py's SHORT_CALL_MS is timed hot, each timed call right after an untimed one of
    its own (`settle` "short": settle_calls), as an app calls its one model; the models at positions
    `hot` always are (the speed anchor, near that line on some CPUs, is timed alike in every session)."""
    from edgedistill.core.artifact import load_artifact
    from edgedistill.runtime.session import ProfileOptions, run_profile
    from edgedistill.runtime.sources import artifact_source

    sources = [artifact_source(load_artifact(d), str(d), f"m{i}") for i, d in enumerate(dirs)]
    layers = 1_000_000 if kernels is not None else 0
    opts = ProfileOptions(
        threads=threads or tgt.threads,
        warmup=3,
        iterations=10,
        min_time=min_time,
        layers=layers,
        layer_calls=5,
        roofline=False,
        settle=settle,
        hot=[f"m{i}" for i in hot],
    )
    if host is None:
        report = run_profile(sources, opts)
    else:
        from edgedistill.profiler.remote import run_remote

        ssh = ssh or {}
        report = run_remote(
            host, sources, opts, ssh_options=ssh.get("options", ()), identity=ssh.get("identity"),
            remote_python=ssh.get("python", "python3"), timeout=ssh.get("timeout"),
        )  # fmt: skip
    out = []
    for res in report.models:
        if res.stats is None:
            raise EdgeDistillError(f"{res.name} did not run on {host or 'this machine'}: {res.skipped}")
        out.append(float(res.stats.p50))
        if kernels is not None:
            kernels.append(len(res.layers))
    return out


def as_target(target: str | Path | Target, precision: str | None) -> Target:
    if isinstance(target, Target):
        return target.with_precision(precision)
    return get_target(target, precision)


def model_size(spec: GeneratorSpec, tgt: Target, size: tuple[int, int] | None) -> tuple[int, int] | None:
    if spec.kind != "image":
        return None
    return tuple(size or tgt.input_size or spec.default_size or (256, 256))  # type: ignore[return-value]
