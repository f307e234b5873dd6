"""The timing loop: warm-up, then interleaved rounds A B C A B C … of one call per model.

What is timed: host-side wall time (perf_counter_ns) of one synchronous `runner.run(inputs)`,
including whatever copies the runtime makes (host<->device for GPUs). Nothing else sits inside
the timed region: inputs are prepared beforehand, outputs are released after the clock stops,
the garbage collector is off, and progress is reported between rounds only.

Interleaving makes machine noise (other processes, thermal drift) hit every model alike, so the
ratios between models stay trustworthy even when the absolute numbers move.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

WHAT_IS_TIMED = (
    "host-side wall time (perf_counter_ns) of one synchronous inference call, "
    "including any input/output copies the runtime makes; models measured in interleaved rounds"
)

Call = tuple[Callable[[Any], Any], Any]  # (run, inputs): the timed statement is run(inputs)


@dataclass
class Measured:
    times_ns: list[list[int]]  # per model, in call order
    rounds: int
    wall_s: float
    interrupted: bool = False


def default_threads() -> int:
    """The CPUs this process may use (affinity-aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextlib.contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """Run torch (when a torch model is in the run) on `threads` threads, restored afterwards.

    Runtimes (ONNX Runtime, OpenVINO) take the same number at load; torch has one global pool.
    torch is only touched when something already imported it: the runtime part never does.
    """
    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch is not None and old is not None:
            torch.set_num_threads(old)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage-collector pauses inside timed calls (collected once before)."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def time_call(run: Callable[[Any], Any], inputs: Any) -> tuple[int, Any]:
    """One timed call; returns (nanoseconds, outputs)."""
    pc = time.perf_counter_ns
    t0 = pc()
    out = run(inputs)
    t1 = pc()
    return t1 - t0, out


def warm_up(run: Callable[[Any], Any], inputs: Any, count: int, seconds: float) -> int:
    """Call until at least `count` calls and `seconds` have passed; returns the number of calls."""
    done = 0
    start = time.perf_counter()
    while done < count or time.perf_counter() - start < seconds:
        run(inputs)
        done += 1
    return done


def measure_rounds(
    calls: Sequence[Call],
    iterations: int,
    min_time: float,
    max_rounds: int = 100_000,
    max_time: float | None = None,
    on_round: Callable[[int, float], None] | None = None,
    report_every: float = 0.25,
    settle: Sequence[bool] | None = None,
) -> Measured:
    """Interleaved rounds until at least `iterations` rounds and `min_time` seconds of measuring.

    Each round calls every model once, in the given order. `settle[i]`: model i is called once untimed
    right before its timed call (session.py marks the first model after another runtime's, which would
    pay for the other pool's workers still spinning). `on_round(rounds, elapsed)` is called
    between rounds at most every `report_every` seconds (never inside a timed call). Ctrl-C ends
    the measurement early; what was measured is kept and `interrupted` is set.
    """
    if not calls:
        raise ValueError("nothing to measure")
    times: list[list[int]] = [[] for _ in calls]
    appends = [t.append for t in times]
    pairs = list(zip(calls, appends, settle or [False] * len(calls), strict=True))
    pc = time.perf_counter_ns
    rounds = 0
    interrupted = False
    min_ns = int(min_time * 1e9)
    max_ns = int(max_time * 1e9) if max_time else None
    with gc_paused():
        # the clock starts after the collection: a big process's gc.collect() can take seconds, which
        # min_time/max_time and the wall time must not count as measuring
        start = pc()
        last_report = start
        try:
            while True:
                for (run, inputs), append, settling in pairs:
                    if settling:
                        run(inputs)
                    t0 = pc()
                    out = run(inputs)
                    t1 = pc()
                    append(t1 - t0)
                    del out  # the outputs are freed here, outside the timed region
                rounds += 1
                now = pc()
                elapsed = now - start
                done = rounds >= iterations and elapsed >= min_ns
                if done or rounds >= max_rounds or (max_ns is not None and elapsed >= max_ns):
                    break
                if on_round is not None and now - last_report >= report_every * 1e9:
                    last_report = now
                    on_round(rounds, elapsed / 1e9)
        except KeyboardInterrupt:
            if rounds == 0:
                raise
            interrupted = True
            for t in times:  # a round cut short would favour the models that ran in it
                del t[rounds:]
    wall = (pc() - start) / 1e9
    if on_round is not None:
        on_round(rounds, wall)
    return Measured(times, rounds, wall, interrupted)


def expected_rounds(iterations: int, min_time: float, first_round_s: float) -> int:
    """How many rounds the measurement will take, once one round's duration is known."""
    if first_round_s <= 0:
        return iterations
    return max(iterations, int(min_time / first_round_s) + 1)


# ------------------------------------------------------------------------------------------ memory
def rss_bytes() -> int | None:
    """Resident set size now (Linux /proc), else None."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process so far."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return peak if sys.platform == "darwin" else peak * 1024
