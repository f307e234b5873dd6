"""Latency statistics from a list of per-call times.

Kept apart from the timing loop so the numbers can be checked on a synthetic list with known
percentiles. Percentiles are numpy's default (linear interpolation between closest ranks), the
definition most tools (and benchmark_app's median) agree on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_CV_WARN = 0.10  # coefficient of variation above which the machine is called noisy


@dataclass(frozen=True)
class TimingStats:
    """Latency of one synchronous inference, in milliseconds, over `n` timed calls."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    cv: float  # std / mean: how noisy the measurement was
    fps: float  # batch / mean latency: calls are sequential and synchronous
    total_s: float  # time spent inside the timed calls

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TimingStats:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def summarize(times_ns: Sequence[int], batch: int = 1) -> TimingStats:
    """Statistics of per-call times given in nanoseconds (perf_counter_ns differences)."""
    if len(times_ns) == 0:
        raise ValueError("no timed calls to summarize")
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
    return TimingStats(
        n=len(ms),
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        mean=mean,
        std=std,
        min=float(ms.min()),
        max=float(ms.max()),
        cv=std / mean if mean > 0 else 0.0,
        fps=1000.0 * batch / mean if mean > 0 else 0.0,
        total_s=float(ms.sum()) / 1e3,
    )


def noisy(stats: TimingStats, threshold: float = DEFAULT_CV_WARN) -> bool:
    return stats.n > 1 and stats.cv > threshold
