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

This module runs the steps (measure the missing blocks, fit the references); whole models are
timed by search/whole_timing.py. The names of the modules it is made of stay importable from here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.core.spec import GeneratorSpec, spec_for_family
from edgedistill.core.targets import Target
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
from edgedistill.search.whole_timing import (
    WHOLE_MIN_TIME,
    as_target,
    measure_latency,
    measure_models,
    model_size,
    note_speed,
    time_compiled,
)

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
    tgt = as_target(target, precision)
    size = model_size(spec, tgt, size)
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
    anchor, anchor_feed = compile_anchor(tgt)
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
            compile_whole(m, s, tgt, model_size(s, tgt, size if kind == "image" else None), work / f"w{i}")
            for i, (m, s) in enumerate(zip(models, specs, strict=True))
        ]
        anchor = compile_anchor(tgt)[0]
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
def _missing(cuts: Sequence[CutModel], table: LatencyTable) -> list[tuple[CutModel, Block]]:
    """The blocks of `cuts` not in the table, each once, with a model it comes from."""
    seen: dict[str, tuple[CutModel, Block]] = {}
    for cut in cuts:
        for b in cut.blocks:
            if table.block(b.key) is None:
                seen.setdefault(b.key, (cut, b))
    return list(seen.values())
