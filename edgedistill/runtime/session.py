"""One profiling session: load every model, warm up, interleaved rounds, then layers and peaks.

This is the runtime part: it imports numpy and, through the backends, only the runtimes it
loads. The same function runs here and, via remote_main, on a device over SSH.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from edgedistill.backends.base import Runner
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.quality import psnr, to_unit
from edgedistill.runtime import layers as layer_profile
from edgedistill.runtime.hostinfo import host_info
from edgedistill.runtime.report import ModelResult, ProfileReport
from edgedistill.runtime.roofline import achieved_gops, host_peaks, peak_for, percent
from edgedistill.runtime.sources import Source, make_inputs
from edgedistill.runtime.stats import DEFAULT_CV_WARN, noisy, summarize
from edgedistill.runtime.timing import (
    WHAT_IS_TIMED,
    default_threads,
    expected_rounds,
    measure_rounds,
    peak_rss_bytes,
    rss_bytes,
    thread_limit,
    time_call,
    warm_up,
)

SHORT_CALL_MS = 2.0  # settle "short": a model faster than this is timed hot (settle_calls)


@dataclass
class ProfileOptions:
    """How to measure; plain values so the options travel to a device as JSON."""

    threads: int | None = None  # None: every CPU this process may use
    warmup: int = 5  # calls per model before measuring (the first one is reported separately)
    warmup_time: float = 0.0  # ... and at least this many seconds
    iterations: int = 20  # at least this many interleaved rounds (one call per model each)
    min_time: float = 3.0  # ... and at least this many seconds of measuring, all models together
    max_time: float | None = None  # stop measuring after this many seconds whatever the above
    layers: int = 10  # top-N layers per model from the runtime's profiler (0: no layer pass)
    layer_calls: int = 10  # profiled inferences the layer times are averaged over
    size: tuple[int, int] | None = None  # input H, W (already resolved for all models)
    batch: int = 1
    seed: int = 0
    cv_warn: float = DEFAULT_CV_WARN
    roofline: bool = True  # measure this machine's GEMM peak (about a second)
    target: dict[str, Any] | None = None  # {"name", "peak_gops"} of the target profile, if given
    # an untimed call right before a timed one: "switch" for a model that follows another runtime's
    # (runtime_switches), "short" for those and every model whose warm call ran under SHORT_CALL_MS,
    # "all" for every model (each timed hot, as an app calling it alone; twice the calls), "none"
    settle: str = "switch"
    # labels of models always timed hot, whatever `settle` says: a speed anchor compared across
    # sessions must be timed alike in each, not settled in one and not in the next
    hot: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProfileOptions:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if d.get("size") is not None:
            d["size"] = tuple(d["size"])
        return cls(**d)


class Reporter(Protocol):
    def stage(self, text: str) -> None: ...

    def rounds(self, done: int, total: int) -> None: ...


class Quiet:
    def stage(self, text: str) -> None:
        pass

    def rounds(self, done: int, total: int) -> None:
        pass


@dataclass
class _Live:
    source: Source
    result: ModelResult
    runner: Runner | None
    feed: dict[str, np.ndarray]
    output: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    warm_ms: float = 0.0  # one call after the warm-up (settle "short" reads it)


def run_profile(
    sources: list[Source],
    opts: ProfileOptions,
    reporter: Reporter | None = None,
    inputs: dict[str, np.ndarray] | None = None,
) -> ProfileReport:
    """Measure `sources` in interleaved rounds; the first one that runs is the reference."""
    rep = reporter or Quiet()
    threads = opts.threads or default_threads()
    warnings: list[str] = []
    results: list[ModelResult] = []
    live: list[_Live] = []
    rounds, measure_s = 0, 0.0
    with thread_limit(threads):
        for src in sources:
            res = ModelResult(
                src.label, src.given, src.kind, src.backend, src.precision, src.device, src.size_bytes
            )
            results.append(res)
            why = src.unavailable()
            if why is not None:
                res.skipped = why
                rep.stage(f"{src.label}: skipped ({why})")
                continue
            live.append(_load(src, res, threads, opts, inputs, rep))
        if live:
            rounds, measure_s = _measure(live, opts, rep, warnings)
            _compare(live)
            for item in live:  # free the timing runners before the profiling ones load
                item.runner = None
            gc.collect()
            if opts.layers > 0:
                for item in live:
                    _layers(item, threads, opts, rep, warnings)
            rep.stage("counting MACs")
            for item in live:
                item.result.macs = item.source.macs(opts.size or _image_size(item))
        rep.stage("measuring the machine's peak" if opts.roofline else "roofline")
        peaks: dict[str, Any] = {"target": opts.target, **host_peaks(threads, measure=opts.roofline)}
    for item in live:
        _roofline(item.result, peaks, opts.batch)
    settings = {
        **{k: v for k, v in opts.to_dict().items() if k not in ("target", "size")},
        "threads": threads,
        "input_size": list(opts.size) if opts.size else None,
        "rounds": rounds,
        "measure_s": round(measure_s, 3),
        "order": [item.result.name for item in live],
        "interleaved": True,
    }
    return ProfileReport(results, WHAT_IS_TIMED, settings, host_info(threads), peaks, warnings)


def _load(
    src: Source,
    res: ModelResult,
    threads: int,
    opts: ProfileOptions,
    inputs: dict[str, np.ndarray] | None,
    rep: Reporter,
) -> _Live:
    rep.stage(f"loading {src.label}")
    gc.collect()
    rss0, peak0 = rss_bytes(), peak_rss_bytes()
    t0 = time.perf_counter()
    runner = src.load(threads)
    res.load_s = round(time.perf_counter() - t0 + src.preload.get("s", 0.0), 4)
    feed = make_inputs(src, runner, opts.size, opts.batch, opts.seed, inputs)
    res.input_shapes = {k: list(v.shape) for k, v in feed.items()}
    ns, out = time_call(runner.run, feed)
    res.first_ms = round(ns / 1e6, 4)
    first = out.get(runner.output_names[0]) if isinstance(out, dict) and runner.output_names else None
    output = np.array(first, dtype=np.float32, copy=True) if first is not None else None
    del out
    rep.stage(f"warming up {src.label}")
    res.warmup_calls = 1 + warm_up(runner.run, feed, max(opts.warmup - 1, 0), opts.warmup_time)
    warm_ms = 0.0
    if opts.settle == "short":  # one more call, timed, for settle_calls to read (a teacher's can be long)
        warm_ms = time_call(runner.run, feed)[0] / 1e6
        res.warmup_calls += 1
    rss1, peak1 = rss_bytes(), peak_rss_bytes()
    if rss0 is not None and rss1 is not None:
        res.rss_growth_mb = round((rss1 - rss0 + src.preload.get("rss", 0)) / 2**20, 2)
    if peak0 is not None and peak1 is not None:
        res.peak_rss_growth_mb = round((peak1 - peak0 + src.preload.get("peak_rss", 0)) / 2**20, 2)
    return _Live(src, res, runner, feed, output, warm_ms=warm_ms)


def _measure(
    live: list[_Live], opts: ProfileOptions, rep: Reporter, warnings: list[str]
) -> tuple[int, float]:
    rep.stage(f"measuring {len(live)} model(s) in interleaved rounds")

    def on_round(done: int, elapsed: float) -> None:
        rep.rounds(done, expected_rounds(opts.iterations, opts.min_time, elapsed / max(done, 1)))

    runs = [(item.runner.run, item.feed) for item in live]  # type: ignore[union-attr]
    by_mode = settle_calls(opts.settle, [i.source.backend for i in live], [i.warm_ms for i in live])
    settle = [s or i.source.label in opts.hot for s, i in zip(by_mode, live, strict=True)]
    m = measure_rounds(
        runs, opts.iterations, opts.min_time, max_time=opts.max_time, on_round=on_round, settle=settle
    )
    rep.rounds(m.rounds, m.rounds)
    if m.interrupted:
        warnings.append(f"interrupted after {m.rounds} round(s): the numbers rest on fewer calls than asked")
    loud = []
    for item, times in zip(live, m.times_ns, strict=True):
        item.result.stats = summarize(times, opts.batch)
        if noisy(item.result.stats, opts.cv_warn):
            loud.append(f"{item.result.name} {100 * item.result.stats.cv:.0f}%")
    if loud:
        warnings.append(
            f"noisy machine: coefficient of variation {', '.join(loud)} (above {100 * opts.cv_warn:.0f}%). "
            "The ratios between models from these interleaved rounds hold better than the absolute times; "
            "stop other work on the machine or give fewer --threads than CPUs for steadier numbers"
        )
    if m.rounds < 20:
        warnings.append(
            f"only {m.rounds} round(s): p99 is close to the maximum; raise --iterations or --min-time"
        )
    return m.rounds, m.wall_s


def settle_calls(settle: str, backends: Sequence[str], warm_ms: Sequence[float] | None = None) -> list[bool]:
    """Which models get an untimed call before each timed one (ProfileOptions.settle).

    "short" adds the models whose warm call (`warm_ms`) took under SHORT_CALL_MS: interleaved among
    15 others, 0.1-0.5 ms digits DCGANs read 1.15-1.5x their time alone (median; up to 2.2x), as if
    the pools of the sessions before them still held the cores, and 0.8-1.1x settled
    (benchmarks/hot_timing.py). For 12-55 ms photo-restore students the two ways differed by no more
    than this VM's drift between minutes: they keep one call per round."""
    if settle not in ("switch", "short", "all", "none"):
        raise EdgeDistillError(f"settle must be switch, short, all or none, not {settle!r}")
    if settle == "all":
        return [True] * len(backends)
    if settle == "none":
        return [False] * len(backends)
    switches = runtime_switches(backends)
    if settle == "short":
        short = [ms < SHORT_CALL_MS for ms in (warm_ms or [0.0] * len(backends))]
        return [a or b for a, b in zip(switches, short, strict=True)]
    return switches


def runtime_switches(backends: Sequence[str]) -> list[bool]:
    """Which models run right after another runtime's, round after round (the order is cyclic).

    Such a model pays for the switch: the other runtime's workers still spin after its call (ONNX
    Runtime's do by default) while this one's pool wakes, and a deployed app, which runs one runtime,
    never pays it. Timed in one profile with ONNX Runtime models, the first OpenVINO model of each round
    measured 3-5 % slower than the same model compiled twice right after it, and 0-1 % with the
    untimed call (benchmarks/runtime_switch.py, Zen4)."""
    if len(set(backends)) < 2:
        return [False] * len(backends)
    return [b != backends[i - 1] for i, b in enumerate(backends)]


def _compare(live: list[_Live]) -> None:
    """Speedup and PSNR against the first model that ran (the teacher, by convention)."""
    ref = live[0]
    ref_p50 = ref.result.stats.p50 if ref.result.stats else None
    for item in live:
        if ref_p50 and item.result.stats:
            item.result.speedup = round(ref_p50 / item.result.stats.p50, 3)
        if item is not ref:
            item.result.psnr_vs_first = output_psnr(ref, item)


def output_psnr(ref: _Live, other: _Live) -> float | None:
    """PSNR (dB) of `other`'s output against `ref`'s on the same input, both mapped to [0, 1]."""
    a, b = ref.output, other.output
    if a is None or b is None or a.shape != b.shape or ref.source.spec is None or other.source.spec is None:
        return None
    if a.ndim < 3:  # a classifier's logits are no picture: compress scores it by top-1 instead
        return None
    return round(
        psnr(to_unit(a, ref.source.spec.output_range), to_unit(b, other.source.spec.output_range)), 3
    )


def _layers(item: _Live, threads: int, opts: ProfileOptions, rep: Reporter, warnings: list[str]) -> None:
    rep.stage(f"per-layer profile of {item.result.name}")
    runner = None
    try:
        runner = item.source.load(threads, profile_layers=True)
        found = layer_profile.profile_layers(runner, item.feed, calls=opts.layer_calls)
    except Exception as exc:  # the latency numbers stand without it; say why it is missing
        warnings.append(f"{item.result.name}: no per-layer profile ({str(exc).splitlines()[0][:200]})")
        return
    finally:
        close = getattr(runner, "close", None)
        if close is not None:
            close()
    if found:
        item.result.layers, item.result.layers_total_ms = layer_profile.top_layers(found, opts.layers)
        item.result.kernel_mix = layer_profile.precision_mix(found)


def _image_size(item: _Live) -> tuple[int, int] | None:
    """H, W of the fed image (given inputs may differ from every default size)."""
    spec = item.source.spec
    if spec is None or spec.kind != "image" or not item.feed:
        return None
    shape = next(iter(item.feed.values())).shape
    return (int(shape[-2]), int(shape[-1])) if len(shape) == 4 else None


def _roofline(res: ModelResult, peaks: dict[str, Any], batch: int) -> None:
    if res.stats is None:
        return
    res.achieved_gops = achieved_gops(res.macs, res.stats.p50, batch)
    if res.achieved_gops is None:
        return
    res.achieved_gops = round(res.achieved_gops, 3)
    target = (peaks.get("target") or {}).get("peak_gops")
    res.pct_target_peak = _round(percent(res.achieved_gops, peak_for(target, res.precision)))
    res.pct_measured_peak = _round(percent(res.achieved_gops, peak_for(peaks.get("measured"), res.precision)))
    res.pct_theoretical_peak = _round(
        percent(res.achieved_gops, peak_for(peaks.get("theoretical"), res.precision))
    )


def _round(v: float | None) -> float | None:
    return round(v, 2) if v is not None else None
