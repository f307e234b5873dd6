"""Latency per target from measured blocks: predicted = the blocks through a measured whole-model fit.

    predict_latency(student, spec, "x86-onnxruntime", "int8", (256, 256))   -> ms
    measure_latency(student, spec, "x86-onnxruntime", "int8", (256, 256))   -> ms (whole model)

A candidate is cut into blocks and each block not yet in the table is compiled as export compiles
it (search/latency_compile.py), between stand-ins for its neighbours (blocks.block_model), and
timed kernel by kernel on the target (search/block_timing.py), here or over SSH. An op the runtime
does not run in int8 (ORT's ConvTranspose: DQ -> fp32 -> Q) is measured as what runs, so it is
costed as the fallback it is. The table is cached per target,
precision, host, threads and runtime version (search/latency_table.py); the search reuses it across
every candidate with the same blocks.

A whole model is not the sum of its blocks, so predicted = a + b * kernels + c * other blocks +
d * upsampling blocks (search/latency_fit.py), fitted once per table on reference models measured
whole and by blocks (search/latency_refs.py). The references span the search space's choices
(block type, upsampling op, stem kernel, widths): fitted on plain ResNets only, the model charged
every kernel of a depthwise-separable candidate as a plain ResNet's (benchmarks/latency_model.py).

This module runs the steps (measure the missing blocks, fit the references, time whole models);
the names of the modules it is made of stay importable from here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec, spec_for_family
from edgedistill.core.targets import Target, get_target
from edgedistill.search.block_timing import (
    ROUND_GROUP,
    block_names,
    summarize,
    time_local_many,
    time_remote,
    total_ms,
)
from edgedistill.search.blocks import Block
from edgedistill.search.latency_compile import (
    CALIB_SAMPLES,
    OPSET,
    CutModel,
    _activations,
    _compile,
    _kept_fp32,
    _load_feed,
    _static_shapes,
    compile_block,
    compile_whole,
    cut_model,
)
from edgedistill.search.latency_fit import (
    MIN_REFS_FOR_SCALE,
    MIN_REFS_FOR_SPLIT,
    is_upsampling,
    overhead_fit,
    whole_ms,
)
from edgedistill.search.latency_refs import REFERENCES, reference_norm, references
from edgedistill.search.latency_table import (
    TABLE_FORMAT,
    LatencyTable,
    Prediction,
    default_cache_dir,
)
from edgedistill.search.speed_anchor import compile_anchor, scaled

if TYPE_CHECKING:
    import torch

__all__ = [
    "BLOCK_CALLS",
    "BLOCK_SECONDS",
    "CALIB_SAMPLES",
    "MIN_REFS_FOR_SCALE",
    "MIN_REFS_FOR_SPLIT",
    "OPSET",
    "REFERENCES",
    "TABLE_FORMAT",
    "WHOLE_MIN_TIME",
    "CutModel",
    "LatencyTable",
    "Prediction",
    "_activations",
    "_compile",
    "_kept_fp32",
    "_load_feed",
    "_static_shapes",
    "compile_block",
    "compile_whole",
    "cut_model",
    "default_cache_dir",
    "fit_overhead",
    "is_upsampling",
    "measure_blocks",
    "measure_latency",
    "measure_models",
    "note_speed",
    "overhead_fit",
    "predict",
    "predict_latency",
    "predict_many",
    "reference_norm",
    "references",
    "time_blocks",
    "time_compiled",
    "whole_ms",
]

BLOCK_CALLS, BLOCK_SECONDS = 15, 0.15  # per block: short, medians keep it steady
WHOLE_MIN_TIME = 1.5


# ------------------------------------------------------------------------------------------ public
def predict_latency(
    model: torch.nn.Module,
    spec: GeneratorSpec,
    target: str | Path | Target,
    precision: str | None = None,
    size: tuple[int, int] | None = None,
    host: str | None = None,
    **options: Any,
) -> float:
    """Predicted ms of one inference of `model` on `target` at `precision` (see `predict`)."""
    return predict(model, spec, target, precision, size, host, **options).ms


def predict(
    model: torch.nn.Module,
    spec: GeneratorSpec,
    target: str | Path | Target,
    precision: str | None = None,
    size: tuple[int, int] | None = None,
    host: str | None = None,
    **options: Any,
) -> Prediction:
    """Blocks of `model` from the table (measuring the missing ones) + the table's overhead; the
    options are predict_many's."""
    return predict_many([model], spec, target, precision, size, host, **options)[0]


def predict_many(
    models: Sequence[torch.nn.Module],
    spec: GeneratorSpec,
    target: str | Path | Target,
    precision: str | None = None,
    size: tuple[int, int] | None = None,
    host: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
    progress: bool = True,
    ssh: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    overhead: bool = True,
) -> list[Prediction]:
    """Each model's blocks from the table + the table's overhead, for models of one spec: the blocks
    not yet in the table are compiled, then timed in one batch (over SSH one remote session, not
    one per model).

    `host` (user@device[:port]) measures on a device over SSH; `ssh` holds run_remote's options
    (options, identity, python, timeout). `overhead=False` leaves the overhead out (no reference
    models are measured; the sum of blocks alone)."""
    tgt = _target(target, precision)
    size = _size(spec, tgt, size)
    table = LatencyTable.open(tgt, host, threads, cache_dir)
    with tempfile.TemporaryDirectory(prefix="edgedistill-latency-") as work_str:
        work = Path(work_str)
        cuts = [cut_model(m, spec, tgt, size, work / f"m{i}") for i, m in enumerate(models)]
        missing = _missing(cuts, table)
        if missing:
            measure_blocks(missing, tgt, table, work, host, threads, progress, ssh, log)
        family, variants, tag = references(spec)
        if overhead and table.overhead(spec.kind, size, tag) is None:
            fit_overhead(
                table, spec.kind, size, tgt, host, threads, progress, ssh, log, family, variants, tag
            )
    return [table.predict(cut.blocks, spec.kind, size, overhead, tag) for cut in cuts]


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
    tgt = _target(target, precision)
    with tempfile.TemporaryDirectory(prefix="edgedistill-latency-whole-") as work_str:
        work = Path(work_str)
        dirs = []
        for i, (model, spec) in enumerate(zip(models, specs, strict=True)):
            sz = _size(spec, tgt, size)
            dirs.append(compile_whole(model, spec, tgt, sz, work / f"m{i}"))
        if not typical:
            return time_compiled(dirs, tgt, host, threads, min_time, ssh, kernels)
        anchor = compile_anchor(tgt, work)[0]
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
    table's typical speed is the median of several minutes, not of its first session's few."""
    tgt = _target(target, precision)
    with tempfile.TemporaryDirectory(prefix="edgedistill-anchor-") as work:
        anchor = compile_anchor(tgt, Path(work))[0]
        (anchor_ms,) = time_compiled([anchor], tgt, host, threads, ssh=ssh, hot=[0])
    return 1 / _typical_scale(tgt, host, threads, cache_dir, anchor_ms)


def _typical_scale(
    tgt: Target, host: str | None, threads: int | None, cache_dir: str | Path | None, anchor_ms: float
) -> float:
    """The anchor's whole time, just measured, added to the target's table; the factor to its typical speed."""
    table = LatencyTable.open(tgt, host, threads, cache_dir)
    scale = table.typical_scale("whole", anchor_ms)
    table.save()
    return scale


# ------------------------------------------------------------------------------------------ steps
def measure_blocks(
    pairs: Sequence[tuple[CutModel, Block]],
    tgt: Target,
    table: LatencyTable,
    work: Path,
    host: str | None,
    threads: int | None,
    progress: bool = True,
    ssh: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Compile each (model, block) pair as export would, the block fed its own model's activations,
    then time them all in one batch (time_blocks); the table is saved once they are timed."""
    from edgedistill.onnxtools.qdq import progress_bar

    by_cut: dict[int, tuple[CutModel, list[Block]]] = {}
    for cut, b in pairs:
        by_cut.setdefault(id(cut), (cut, []))[1].append(b)
    blocks: list[Block] = []
    dirs: list[Path] = []
    with progress_bar(
        progress, f"compiling {len(pairs)} block(s) for {tgt.name} {tgt.precision}", len(pairs)
    ) as advance:
        for cut, bs in by_cut.values():
            acts = _activations(cut, bs)
            for b in bs:
                dirs.append(compile_block(cut, b, acts, tgt, work / f"b{len(dirs)}"))
                blocks.append(b)
                advance(1)
    time_blocks(blocks, dirs, tgt, table, host, threads, progress, ssh, log)


def time_blocks(
    blocks: Sequence[Block],
    dirs: Sequence[Path],
    tgt: Target,
    table: LatencyTable,
    host: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    ssh: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Time compiled blocks (compile_block's folders) and put them in `table` (saved as it goes),
    each session with the speed anchor, its times scaled to the table's first session's speed."""
    from edgedistill.onnxtools.qdq import progress_bar

    threads = threads or tgt.threads
    feeds = [_load_feed(d) for d in dirs]
    arts = [d / "art" for d in dirs]
    with tempfile.TemporaryDirectory(prefix="edgedistill-anchor-") as work:
        anchor, anchor_feed = compile_anchor(tgt, Path(work))
        if host is not None:  # one SSH session, the anchor in it
            *timed, anchor_ks = time_remote(
                host, [*arts, anchor], [*feeds, anchor_feed], threads, BLOCK_CALLS, ssh, log
            )
            sessions = [(timed, table.session_scale("blocks", total_ms(anchor_ks)))]
        else:
            sessions = []
            with progress_bar(
                progress, f"timing {len(blocks)} block(s) on {tgt.name} {tgt.precision}", len(blocks)
            ) as advance:
                step = ROUND_GROUP - 1  # a session is one group of interleaved rounds: the anchor in each
                for i in range(0, len(arts), step):
                    *timed, anchor_ks = time_local_many(
                        [*arts[i : i + step], anchor], [*feeds[i : i + step], anchor_feed], threads,
                        BLOCK_CALLS, BLOCK_SECONDS, advance=lambda n: advance(n - 1),
                    )  # fmt: skip
                    sessions.append((timed, table.session_scale("blocks", total_ms(anchor_ks))))
    timed_scaled = [scaled(ks, scale) for timed, scale in sessions for ks in timed]
    for b, ks in zip(blocks, timed_scaled, strict=True):
        table.put_block(b, summarize(ks, *block_names(b)))
    table.save()


def fit_overhead(
    table: LatencyTable,
    kind: str,
    size: tuple[int, int] | None,
    tgt: Target,
    host: str | None,
    threads: int | None,
    progress: bool = True,
    ssh: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    family: str = REFERENCES["image"][0],
    variants: Sequence[dict[str, Any]] = REFERENCES["image"][1],
    tag: str | None = None,
) -> dict[str, Any]:
    """Measure the reference models (`family` built with each of `variants`: see `references`) whole
    and by blocks; fit whole = a + b * kernels + c * other blocks + d * upsampling blocks
    (latency_fit.overhead_fit: d only where the references carry it), kept in the table under `tag`."""
    from edgedistill.models.registry import create

    models, specs = [], []
    for kw in variants:
        spec = spec_for_family(family, kw)
        if kind == "image" and size:
            spec.default_size = tuple(size)  # type: ignore[assignment]
        models.append(create(family, **kw))
        specs.append(spec)
    with tempfile.TemporaryDirectory(prefix="edgedistill-latency-ref-") as work_str:
        work = Path(work_str)
        cuts = [
            cut_model(m, s, tgt, size if kind == "image" else None, work / f"r{i}")
            for i, (m, s) in enumerate(zip(models, specs, strict=True))
        ]
        missing = _missing(cuts, table)
        if missing:
            measure_blocks(missing, tgt, table, work, host, threads, progress, ssh, log)
        preds = [table.predict(cut.blocks, kind, size, with_overhead=False) for cut in cuts]
        # the references whole, in one session with the speed anchor: a fit made later (another
        # norm, size) reads at the first one's speed
        dirs = [
            compile_whole(m, s, tgt, _size(s, tgt, size if kind == "image" else None), work / f"w{i}")
            for i, (m, s) in enumerate(zip(models, specs, strict=True))
        ]
        anchor = compile_anchor(tgt, work)[0]
        *wall, anchor_ms = time_compiled([*dirs, anchor], tgt, host, threads, ssh=ssh, hot=[len(dirs)])
        scale = table.session_scale("whole", anchor_ms)
        wall = [w * scale for w in wall]
    fit = overhead_fit(
        [p.kernels for p in preds], [p.blocks_ms for p in preds], wall, [p.up_ms for p in preds]
    )
    fit["references"] = [
        {
            "family": family,
            "kwargs": kw,
            "measured_ms": round(w, 4),
            "blocks_ms": round(p.blocks_ms, 4),
            "up_ms": round(p.up_ms, 4),
            "kernels": p.kernels,
        }
        for kw, w, p in zip(variants, wall, preds, strict=True)
    ]
    table.put_overhead(kind, size, fit, tag)
    table.save()
    return fit


# ------------------------------------------------------------------------------------------ helpers
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


def _target(target: str | Path | Target, precision: str | None) -> Target:
    if isinstance(target, Target):
        return target.with_precision(precision)
    return get_target(target, precision)


def _size(spec: GeneratorSpec, tgt: Target, size: tuple[int, int] | None) -> tuple[int, int] | None:
    if spec.kind != "image":
        return None
    return tuple(size or tgt.input_size or spec.default_size or (256, 256))  # type: ignore[return-value]


def _missing(cuts: Sequence[CutModel], table: LatencyTable) -> list[tuple[CutModel, Block]]:
    """The blocks of `cuts` not in the table, each once, with a model it comes from."""
    seen: dict[str, tuple[CutModel, Block]] = {}
    for cut in cuts:
        for b in cut.blocks:
            if table.block(b.key) is None:
                seen.setdefault(b.key, (cut, b))
    return list(seen.values())
