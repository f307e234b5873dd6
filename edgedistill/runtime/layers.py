"""Per-layer time, from each runtime's own profiler (ORT profiling JSON, OpenVINO performance
counters, TensorRT's IProfiler, forward hooks for torch eager).

Measured in a separate pass on a runner loaded with profiling on: profilers add overhead per
layer, so the latency table never comes from a profiled run. OpenVINO's counters carry the kernel
that really ran (e.g. `jit_avx512_I8` vs `..._FP32`): the layer table shows which precision a
layer executed in, which is how a layer that silently fell back to fp32 is found.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from edgedistill.backends.base import LayerTime, Runner


def profile_layers(runner: Runner, inputs: Any, calls: int = 10, seconds: float = 0.0) -> list[LayerTime]:
    """Run `calls` (and at least `seconds`) inferences on a profiling runner; its layer times."""
    done = 0
    start = time.perf_counter()
    while done < calls or time.perf_counter() - start < seconds:
        runner.run(inputs)
        done += 1
    return list(runner.layer_times())


def top_layers(layers: list[LayerTime], top: int) -> tuple[list[dict[str, Any]], float]:
    """The `top` slowest layers (ms per inference, % of the profiled total, place in run order)
    and that total.

    Layers with one name reported several times (a runtime splitting a node) are summed.
    """
    ms: dict[str, float] = defaultdict(float)
    kind: dict[str, tuple[str, str, str]] = {}
    for layer in layers:
        ms[layer.name] += layer.ms
        kind.setdefault(layer.name, (layer.op_type, layer.precision, layer.origin))
    order = {name: i for i, name in enumerate(ms)}
    total = sum(ms.values())
    ranked = sorted(ms.items(), key=lambda kv: -kv[1])[: max(top, 0)]
    rows = [
        {
            "name": name,
            "op_type": kind[name][0],
            "precision": kind[name][1],
            "ms": round(t, 4),
            "pct": round(100.0 * t / total, 2) if total > 0 else 0.0,
            "seq": order[name],  # run order: the latency table tells a block's kernels by their neighbours
            **({"origin": kind[name][2]} if kind[name][2] else {}),
        }
        for name, t in ranked
    ]
    return rows, round(total, 4)


def precision_mix(layers: list[LayerTime]) -> dict[str, float]:
    """Share of profiled time per reported kernel precision (e.g. {"I8": 81.0, "FP32": 19.0})."""
    by: dict[str, float] = defaultdict(float)
    for layer in layers:
        if layer.precision:
            by[layer.precision] += layer.ms
    total = sum(by.values())
    return (
        {k: round(100.0 * v / total, 1) for k, v in sorted(by.items(), key=lambda kv: -kv[1])}
        if total
        else {}
    )
