"""The speed anchor: one small fixed model timed in every latency session, so that times taken in
different minutes read at one speed.

On a shared machine (a cloud VM, a CI runner, a phone that throttles) the same model runs 20-25 %
faster or slower from one minute to the next, while models timed together, in interleaved rounds,
keep their ratios within ~6 % (benchmarks/results/measure_grouping.md). A latency table is built
over many sessions: the search's first candidates' blocks, later the references, later a grown
child's new blocks. Without an anchor each session's blocks carry that session's speed, and the fit
can turn the mix into a wrong scale: a table grown over a search on a Zen3 (ORT int8) fitted
`whole = -11.3 ms + 1.39 x blocks` and priced the uniform 0.1 student at 1.5-1.6x what it measured,
the searched one at 1.2-1.3x (README, "Zen3 again"). With the anchor in each session, each
session's times are scaled by the anchor's first time over its time now (LatencyTable.session_scale).

The anchor is a ResNet with 8 base channels and one residual block at 64x64 (about 2 ms on two Zen3
cores; at the target's own size where it compiles static shapes), with weights from a fixed seed,
compiled as export compiles it for the table's target."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from edgedistill.core.spec import spec_for_family
from edgedistill.core.targets import Target
from edgedistill.search.block_timing import Kernel

ANCHOR = ("resnet", {"ngf": 8, "n_blocks": 1})
ANCHOR_SIZE = (64, 64)


_compiled: dict[str, tuple[Path, dict[str, np.ndarray]]] = {}


def compile_anchor(tgt: Target) -> tuple[Path, dict[str, np.ndarray]]:
    """The anchor compiled for `tgt` (latency_compile.compile_whole) and its input, compiled once per
    process and target into a folder removed at exit: it is the same model every time (a fixed seed),
    and compiling it took 2-3 s of every timing session (23 s of an OpenVINO search's over SSH)."""
    key = json.dumps(asdict(tgt), sort_keys=True, default=str)
    if key not in _compiled or not _compiled[key][0].is_dir():
        work = Path(tempfile.mkdtemp(prefix="edgedistill-anchor-"))
        atexit.register(shutil.rmtree, work, ignore_errors=True)
        _compiled[key] = _compile_anchor(tgt, work)
    return _compiled[key]


def _compile_anchor(tgt: Target, work: Path) -> tuple[Path, dict[str, np.ndarray]]:
    import torch

    from edgedistill.models.registry import create
    from edgedistill.search.latency_compile import compile_whole

    family, kwargs = ANCHOR
    size = ANCHOR_SIZE if tgt.dynamic_shape or not tgt.input_size else tuple(tgt.input_size)
    spec = spec_for_family(family, kwargs)
    spec.default_size = size  # type: ignore[assignment]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create(family, **kwargs).eval()
    art = compile_whole(model, spec, tgt, size, work / "speed-anchor")  # type: ignore[arg-type]
    return art, spec.example_arrays(size=size, batch=1, seed=0)


def scaled(kernels: list[Kernel], scale: float) -> list[Kernel]:
    """The kernels as they would have timed at the table's first speed."""
    return kernels if scale == 1.0 else [replace(k, ms=k.ms * scale) for k in kernels]
