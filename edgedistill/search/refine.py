"""Walking candidates towards the budget: the uniform ladder predicted up to it, children grown
towards it from the best fits, and the re-anchored round that redoes both when the finalists measured
off the table's predictions. The search's steps 2, 3 and 6 (search/api.py) call these."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from edgedistill.search import space as sp
from edgedistill.search.readings import Readings
from edgedistill.search.result import Candidate

LADDER_BATCH = 4  # uniform widths predicted together, until one is over budget


def reanchor(
    cands: dict[str, Candidate],
    fits: list[Candidate],
    scaled_ms: float,
    *,
    space: sp.SearchSpace,
    spec: Any,
    hw: tuple[int, int] | None,
    rng: random.Random,
    grow_n: int,
    kd_n: int,
    band: float,
    predict: Callable[[list[Any]], list[float]],
    inherit: Callable[[Candidate], None],
    kd: Callable[[Candidate], None],
    measure: Callable[[list[Candidate]], None],
    finalists: list[Candidate],
) -> tuple[list[Candidate], Candidate | None]:
    """Search again within `scaled_ms`, the budget in the table's units: the uniform ladder predicted up
    to it, one round of children grown towards it, the new uniform baseline and the best `kd_n` new
    candidates near it short-KD'd and measured. The `finalists` are measured again with them, in the
    same session: a shared VM's speed moves 20-25 % between minutes while the ratios of models timed
    together hold within ~6 % (benchmarks/results/measure_grouping.md), so new and old are compared
    at one speed, and each finalist is read from both sessions (`measure`: a Sessions). Returns the
    new ones measured (they extend `fits`) and the baseline."""
    predict_ladder(cands, predict, spec, scaled_ms)
    known = {sp.arch_key(c.arch) for c in fits}
    new = [c for c in cands.values() if c.predicted_ms is not None and c.predicted_ms <= scaled_ms
           and sp.arch_key(c.arch) not in known]  # fmt: skip
    children = grow(space, spec, hw, parents([*fits, *new]), cands, scaled_ms, grow_n, rng)
    predict_into(children, predict, spec)
    new += [c for c in children if (c.predicted_ms or 0.0) <= scaled_ms]
    for c in new:
        if c.proxy_inherited is None:
            inherit(c)
    fits += new
    within = [c for c in fits if (c.predicted_ms or 0.0) <= scaled_ms]
    base = uniform_base(within)
    ranked = sorted((c for c in within if c.uniform is None and c.proxy_psnr is None),
                    key=lambda c: (c.predicted_ms < band * scaled_ms, -(c.proxy_inherited or 0)))  # type: ignore[operator]  # fmt: skip
    todo = [*([base] if base is not None and base.measured_ms is None else []), *ranked[:kd_n]]
    for c in todo:
        if c.proxy_psnr is None:
            kd(c)
    measure([*todo, *(c for c in finalists if all(c is not t for t in todo))])
    return todo, base


def grow(
    space: sp.SearchSpace,
    spec: Any,
    hw: tuple[int, int] | None,
    parents: list[Candidate],
    cands: dict[str, Candidate],
    latency_ms: float,
    n: int,
    rng: random.Random,
    tries: int = 60,
) -> list[Candidate]:
    """Up to `n` new children of `parents` whose latency, estimated from their parent's ms per MAC,
    lands nearest 95 % of the budget: half mutated, half rescaled (every stage wider, or narrower).
    The estimate only steers (an op swap moves ms per MAC: a 3x3 stem and head cut the 0.22
    student's int8 time by a third for 12 % of its MACs); the caller predicts each one exactly.
    MACs cost ~0.1 s on the meta device."""
    if n <= 0 or not parents:
        return []
    pool: dict[str, tuple[float, Candidate]] = {}
    for _ in range(tries):
        parent = rng.choice(parents)
        if rng.random() < 0.5:
            arch = sp.mutate(space, parent.arch, rng, p=0.25)
        else:  # the parent's ops at other widths: a well-scored student far under budget reaches it
            under = (parent.predicted_ms or 0) < 0.95 * latency_ms
            arch = sp.rescale(space, parent.arch, rng.choice((1, 2)) if under else -1)
        key = sp.arch_key(arch)
        if key in cands or key in pool:
            continue
        child = Candidate(arch, sp.macs_of(spec, arch, hw), grown=True)
        estimate = (parent.predicted_ms or 0) * child.macs / max(parent.macs, 1)
        if estimate <= 1.1 * latency_ms:
            pool[key] = (estimate, child)
    chosen = sorted(pool.values(), key=lambda ec: abs(ec[0] - 0.95 * latency_ms))[:n]
    for _, c in chosen:
        cands[sp.arch_key(c.arch)] = c
    return [c for _, c in chosen]


def predict_ladder(
    cands: dict[str, Candidate], predict: Callable[[list[Any]], list[float]], spec: Any, limit_ms: float
) -> list[Candidate]:
    """The uniform ladder by MACs, its widths not yet predicted predicted in batches until one is over
    `limit_ms` (the ladder is monotone: the next widths are slower still)."""
    ladder = sorted((c for c in cands.values() if c.uniform is not None), key=lambda c: c.macs)
    unpredicted = [c for c in ladder if c.predicted_ms is None]
    for i in range(0, len(unpredicted), LADDER_BATCH):
        batch = unpredicted[i : i + LADDER_BATCH]
        predict_into(batch, predict, spec)
        if any((c.predicted_ms or 0.0) > limit_ms for c in batch):
            break
    return ladder


def predict_into(batch: list[Candidate], predict: Callable[[list[Any]], list[float]], spec: Any) -> None:
    """Each candidate's predicted ms, the batch's models predicted together (their new blocks timed at once)."""
    for c, ms in zip(batch, predict([sp.build(spec, c.arch) for c in batch]), strict=True):
        c.predicted_ms = ms


def parents(fits: list[Candidate], n: int = 4) -> list[Candidate]:
    """Whom to mutate next: the best fits by the inherited proxy, and the uniform baseline."""
    best = sorted((c for c in fits if c.uniform is None), key=lambda c: -(c.proxy_inherited or 0))[:n]
    base = uniform_base(fits)
    return [*best, *([base] if base else [])]


def uniform_base(fits: list[Candidate]) -> Candidate | None:
    """The baseline to beat: the widest uniform-width student within budget."""
    return max((c for c in fits if c.uniform is not None), key=lambda c: c.uniform or 0, default=None)


def choose(within: list[Candidate], base: Candidate | None, tie_db: float, faster: float) -> Candidate:
    """The best finalist by the proxy, unless the uniform student ties it on both counts.

    A new architecture must buy something over the plain `--width` student: a proxy lead of at least
    `tie_db`, or a measured latency below the uniform student's by more than one session's noise
    (`faster`). The 300-step proxy overstates leads: 1000-step distillation kept 0.4x of them on Zen3's
    rows, and a 0.63 dB proxy lead (3 proxy seeds) became -0.06 dB (3 distillation seeds;
    benchmarks/results/search_proxy_gap.md)."""
    best = max(within, key=lambda c: c.quality)
    if base is None or base is best or base not in within:
        return best
    ties = best.quality - base.quality < tie_db
    no_faster = (best.measured_ms or best.predicted_ms or 0.0) > (1 - faster) * (
        base.measured_ms or base.predicted_ms or 0.0
    )
    return base if ties and no_faster else best


class Sessions:
    """The search's whole-model measuring sessions: each batch of candidates timed together, and every
    candidate measured so far read from all the sessions that timed it (search/readings.py).

    Timed alone, a model measures this minute's speed of a shared VM as much as its own (20-25 %
    between minutes, benchmarks/results/measure_grouping.md); models timed together keep their ratio
    within ~6 %, and a model timed in two sessions ties their speeds: a uniform width timed beside
    the baseline is read at the speed of every session the baseline was in, not this minute's."""

    def __init__(
        self,
        measure: Callable[[list[Any]], list[float]],
        spec: Any,
        build: Callable[[Any, dict[str, Any]], Any] = sp.build,
    ) -> None:
        self._measure, self._spec, self._build = measure, spec, build
        self.readings = Readings()
        self._timed: dict[str, Candidate] = {}

    def __call__(self, batch: list[Candidate]) -> None:
        times = self._measure([self._build(self._spec, c.arch) for c in batch])
        self.readings.add({sp.arch_key(c.arch): float(t) for c, t in zip(batch, times, strict=True)})
        self._timed.update((sp.arch_key(c.arch), c) for c in batch)
        for key, ms in self.readings.ms().items():
            self._timed[key].measured_ms = ms
