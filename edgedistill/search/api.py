"""`edgedistill.search(...)`: the student architecture that fits a latency budget on a target, best by the proxy.

    OUT/search.json   every scored candidate (arch, MACs, predicted ms, proxy PSNR), the Pareto front,
                      the chosen architecture and the uniform-width student nearest the budget
    OUT/pareto.png    predicted latency vs proxy quality, the front and the budget line
    OUT/arch.json     the chosen architecture (what `distill`/`compress` build the student from)

Steps, cheapest first, each narrowing what the next one pays for:
1. sample architectures from the space (search/space.py) and count their MACs (meta device, no memory);
2. predict the latency of those whose MACs are near the budget with the target's block table
   (search/latency.py: measured blocks, cached per target; a MACs-scaled estimate when no table can be built);
3. score every one predicted within budget by the inherited-weights proxy (no training, BN re-estimated),
   then grow: mutate the best of them, walking towards the budget, and predict the children that land
   within `band`..100 % of it (random samples rarely do, and a student far under budget leaves quality unbought);
4. short-KD the best few, those near the budget first (search/proxy.py); the uniform-width student of
   the largest width within budget is always scored alongside, as the baseline to beat;
5. measure those finalists whole on the target (here or on --host), and choose the best that measured
   within budget: the block model's prediction steers the search, the measurement decides. The
   baseline is the widest uniform student that measures within budget: the next width up is measured
   too when predicted within the model's error of the budget, the next down when it measures over.
   Each session is read at the machine's typical speed through the speed anchor; a model timed in
   several sessions is read from all of them, which ties their speeds (search/readings.py);
6. where they measured more than 8 % off their predictions (median), the table's scale is off (timed in
   a slow or busy window): the budget is re-read in its units, and the uniform ladder, one round of
   children and their short KD are redone within it and measured, so the budget is spent, not guessed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedistill.core.errors import EdgeDistillError
from edgedistill.search import refine
from edgedistill.search import space as sp
from edgedistill.search.result import Candidate, SearchResult, pareto_front, write_result

UNIFORM_LADDER = (0.1, 0.125, 0.15, 0.175, 0.2, 0.22, 0.25, 0.3, 0.35, 0.4, 0.5)
GROW_ROUNDS = 3  # rounds of children, each predicted before the next mutates them
PREDICT_BATCH = 8  # candidates whose new blocks are timed together (over SSH: one session)
PREDICTION_TOL = 0.10  # the latency model's error on 90-100 % of candidates (benchmarks/latency_model.py)
REANCHOR_TOL = 0.08  # finalists measured this far off their predictions (median): search again, re-anchored
PROXY_TIE_DB = 1.0  # a proxy lead under it distils to < ~0.4 dB: a tie (benchmarks/search_proxy_gap.py)
SESSION_TOL = 0.06  # two models timed in one session: their ratio holds within this (measure_grouping.md)


def search(
    teacher: str,
    target: str,
    latency_ms: float,
    host: str | None = None,
    *,
    out: str | Path = "search",
    precision: str | None = None,
    size: tuple[int, int] | None = None,
    data: str | Path | None = None,
    samples: int = 60,
    predict_max: int = 24,
    kd_top: int = 4,
    kd_steps: int = 300,
    evolve: int = 12,
    band: float = 0.8,
    time_budget_s: float = 600.0,
    seed: int = 0,
    tie_db: float = PROXY_TIE_DB,
    threads: int | None = 2,
    latency_fn: Callable[[Any, Any], float] | None = None,
    measure_fn: Callable[[list[Any]], list[float]] | None = None,
    verify: bool = True,
    qat: bool = True,
    allow: dict[str, list[Any]] | None = None,
    ssh: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    **teacher_load: Any,
) -> SearchResult:
    """Search the teacher's family for the student best by the quality proxy within `latency_ms`.

    `latency_fn(model, spec) -> ms` overrides the target's latency model (tests, what-ifs), and
    `measure_fn(models) -> ms` the whole-model measurement of the finalists (`verify`; skipped when only
    `latency_fn` is given); `ssh` reaches `host` as `profile --host` does (search/latency.py).
    `qat`: the student will be distilled quantization-aware (compress's default for INT8), so INT8
    latencies are measured as its export compiles it (search/latency_compile.py: as_qat_export).
    `allow`: choices limited to these options ({"block": ["plain"]}), for every candidate (space.restrict).
    `tie_db`: a proxy lead over the uniform student under it is a tie after distillation; then the
    uniform student is chosen unless the other measures faster (refine.choose)."""
    import torch

    from edgedistill.core.targets import get_target
    from edgedistill.data.sources import make_source
    from edgedistill.models.loading import load_generator
    from edgedistill.search import proxy

    if not latency_ms > 0:
        raise EdgeDistillError(f"--latency-ms must be > 0, got {latency_ms}")
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    tgt = get_target(target, precision)
    if qat:
        from edgedistill.search.latency_compile import as_qat_export

        tgt = as_qat_export(tgt)
    loaded = load_generator(teacher, **teacher_load)
    spec, t_net = loaded.spec, loaded.module.eval()
    space = sp.restrict(sp.space_for(spec), allow)
    if allow:
        log(f"search: choices limited to {sp.allow_text({k: space.choices[k] for k in allow})}")
    hw = size or (tuple(tgt.input_size) if tgt.input_size else None) or tuple(spec.default_size or (256, 256))
    hw = hw if spec.kind == "image" else None
    rng = random.Random(seed)
    wall: dict[str, float] = {}

    # 1. sample + MACs
    t0 = time.perf_counter()
    cands: dict[str, Candidate] = {}
    for w in UNIFORM_LADDER:
        arch = sp.uniform_arch(space, w)
        cands.setdefault(sp.arch_key(arch), Candidate(arch, sp.macs_of(spec, arch, hw), uniform=w))
    sampled: set[str] = set()
    for _ in range(samples * 20):  # a small space has fewer distinct architectures than asked for
        if len(sampled) >= samples:
            break
        arch = sp.sample(space, rng)
        key = sp.arch_key(arch)
        sampled.add(key)
        if key not in cands:
            cands[key] = Candidate(arch, sp.macs_of(spec, arch, hw))
    wall["sample_s"] = round(time.perf_counter() - t0, 1)
    log(f"search: {len(cands)} architectures sampled, MACs counted in {wall['sample_s']} s")

    # 2. latency of the uniform ladder anchors MACs to ms; then predict those near the budget
    t0 = time.perf_counter()
    predict, source_name = _latency_model(latency_fn, spec, tgt, hw, host, threads, ssh, log)
    uniform = refine.predict_ladder(cands, predict, spec, latency_ms)
    ms_per_mac = _ms_per_mac(uniform)
    near = [c for c in cands.values() if c.predicted_ms is None and c.uniform is None]
    near.sort(
        key=lambda c: abs(c.macs * ms_per_mac - 0.9 * latency_ms)
    )  # op swaps move ms per MAC, so a wide net
    near = near[:predict_max]
    for i in range(0, len(near), PREDICT_BATCH):
        if time.perf_counter() - started > time_budget_s * 0.5:
            log("search: half the time budget spent on latency; scoring what is predicted")
            break
        refine.predict_into(near[i : i + PREDICT_BATCH], predict, spec)
    sample_speed = _speed_sampler(
        tgt, host, threads, ssh, measure_fn is None and latency_fn is None and verify
    )
    sample_speed()
    wall["latency_s"] = round(time.perf_counter() - t0, 1)
    fits = [c for c in cands.values() if c.predicted_ms is not None and c.predicted_ms <= latency_ms]
    log(f"search: latency ({source_name}) predicted for "
        f"{sum(c.predicted_ms is not None for c in cands.values())}, {len(fits)} within {latency_ms} ms")  # fmt: skip
    if not fits:
        fastest = min(
            (c for c in cands.values() if c.predicted_ms is not None), key=lambda c: c.predicted_ms or 0
        )
        raise EdgeDistillError(
            f"no candidate fits {latency_ms} ms on {tgt.name} {tgt.precision} (fastest sampled: "
            f"{fastest.predicted_ms:.2f} ms, {sp.describe(fastest.arch)}); raise --latency-ms"
        )

    # 3. children of the best fits, walked towards the budget: random samples rarely land near it
    t0 = time.perf_counter()
    src = make_source(teacher, spec, Path(data) if data else None, seed, 64 if spec.kind == "image" else 0)
    pdata = proxy.proxy_data(t_net, spec, src)
    for c in fits:
        c.proxy_inherited = proxy.score(t_net, spec, c.arch, pdata, steps=0).psnr_inherited
    grown: list[Candidate] = []
    parents = refine.parents(fits)
    for _ in range(GROW_ROUNDS):
        if time.perf_counter() - started > time_budget_s * 0.6:
            log("search: time budget reached while growing; scoring what is predicted")
            break
        children = refine.grow(space, spec, hw, parents, cands, latency_ms, -(-evolve // GROW_ROUNDS), rng)
        refine.predict_into(children, predict, spec)
        for c in children:
            if c.predicted_ms <= latency_ms:  # type: ignore[operator]
                c.proxy_inherited = proxy.score(t_net, spec, c.arch, pdata, steps=0).psnr_inherited
                fits.append(c)
        grown += children
        parents = refine.parents(fits)
    sample_speed()
    wall["grow_s"] = round(time.perf_counter() - t0, 1)
    near_budget = sum(c.predicted_ms >= band * latency_ms for c in fits)  # type: ignore[operator]
    log(f"search: {len(grown)} grown towards the budget, {near_budget} fits within {band:.0%}-100 % of it")

    # 4. short KD on the best few (those near the budget first: capacity left unspent is quality lost)
    #    + the uniform baseline: the finalists
    t0 = time.perf_counter()
    base = refine.uniform_base(fits)
    ranked = sorted(
        (c for c in fits if c.uniform is None),
        key=lambda c: (c.predicted_ms < band * latency_ms, -(c.proxy_inherited or 0)),  # type: ignore[operator]
    )
    for c in [*([base] if base else []), *ranked[:kd_top]]:
        if time.perf_counter() - started > time_budget_s and c is not base:
            log("search: time budget reached; choosing among the candidates scored so far")
            break
        c.proxy_psnr = proxy.score(t_net, spec, c.arch, pdata, steps=kd_steps, seed=seed).psnr
        log(f"  {c.predicted_ms:7.2f} ms  {c.proxy_psnr:6.2f} dB  {sp.describe(c.arch)}")
    wall["proxy_s"] = round(time.perf_counter() - t0, 1)

    # 5. the finalists measured whole, compiled as export compiles them, where the budget holds: the
    #    block model can err by half (depthwise students predicted at 24.5 ms ran 32-36 ms on OpenVINO)
    t0 = time.perf_counter()
    finalists = sorted((c for c in fits if c.proxy_psnr is not None), key=lambda c: -c.quality)
    slowness: list[float] = []  # per measuring session: the speed anchor's time over its typical one
    measure = measure_fn or (
        _measure_models(spec, tgt, hw, host, threads, ssh, slowness, log) if latency_fn is None else None
    )
    ratio: float | None = None
    factors: list[float] = []  # per measuring session: how far it read off the others (refine.Sessions)
    if measure is not None and verify:
        sessions = refine.Sessions(measure, spec)
        sessions(finalists)
        for c in finalists:
            log(f"  measured {c.measured_ms:7.2f} ms (predicted {c.predicted_ms:.2f})  {sp.describe(c.arch)}")
        ratio = measured_ratio(finalists)
        wall["measure_s"] = round(time.perf_counter() - t0, 1)

        def inherit(c: Candidate) -> None:
            c.proxy_inherited = proxy.score(t_net, spec, c.arch, pdata, steps=0).psnr_inherited

        def kd(c: Candidate) -> None:
            c.proxy_psnr = proxy.score(t_net, spec, c.arch, pdata, steps=kd_steps, seed=seed).psnr

        # 6. re-anchored: a table timed in a slow or busy window (or whose blocks sum off on this target) is
        #    off by about one factor for every candidate, so the budget reads latency_ms / ratio in its units
        #    and what it put over the budget, or left unspent under it, is grown, scored and measured
        if (
            ratio is not None
            and abs(ratio - 1) > REANCHOR_TOL
            and time.perf_counter() - started < time_budget_s
        ):
            t0 = time.perf_counter()
            added, new_base = refine.reanchor(cands, fits, latency_ms / ratio, space=space, spec=spec, hw=hw, rng=rng,
                                        grow_n=-(-evolve // GROW_ROUNDS), kd_n=max(2, kd_top // 2), band=band,
                                        predict=predict, inherit=inherit, kd=kd, measure=sessions,
                                        finalists=finalists)  # fmt: skip
            log(f"search: the finalists measured {ratio:.2f}x their predictions; re-anchored, the budget reads "
                f"{latency_ms / ratio:.2f} ms in the table's units; measured again with the new ones, in one session")  # fmt: skip
            for c in [*added, *finalists]:
                log(f"  measured {c.measured_ms:7.2f} ms (predicted {c.predicted_ms:.2f})  {c.proxy_psnr:6.2f} dB  "
                    f"{sp.describe(c.arch)}")  # fmt: skip
            finalists = sorted([*finalists, *added], key=lambda c: -c.quality)
            if new_base is not None and (new_base.measured_ms or 0.0) <= latency_ms:
                base = new_base if base is None or (base.measured_ms or 0.0) > latency_ms else max(
                    base, new_base, key=lambda c: c.uniform or 0)  # fmt: skip
            wall["reanchor_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        # the baseline is the widest uniform student that *measures* within budget: the next width up,
        # predicted over budget by less than the model's error, is measured too (one step, 36 % more
        # MACs from 0.175 to 0.2, left photo-restore's ORT baseline at 77 % of its budget); each next
        # width is timed beside the last, read with it from every session that timed it (refine.Sessions)
        while base is not None and (base.measured_ms or 0.0) <= latency_ms:
            up = min((c for c in cands.values() if c.uniform is not None and c.macs > base.macs), key=lambda c: c.macs,
                     default=None)  # fmt: skip
            # (predictions read in measured ms: the table's scale here, now, is the finalists' ratio)
            if (
                up is None
                or up.predicted_ms is None
                or up.predicted_ms * (ratio or 1.0) > (1 + PREDICTION_TOL) * latency_ms
            ):
                break
            if up.measured_ms is None:  # (the re-anchored search may have measured it)
                if up.proxy_psnr is None:
                    kd(up)
                sessions([up, base])
                log(f"  measured {up.measured_ms:7.2f} ms (predicted {up.predicted_ms:.2f})  {sp.describe(up.arch)}: "
                    "the next uniform width up, predicted within the model's error of the budget")  # fmt: skip
                finalists = sorted([*finalists, up], key=lambda c: -c.quality)
            if up.measured_ms > latency_ms:
                break
            base = up
        while base is not None and (base.measured_ms or 0.0) > latency_ms:  # the baseline must fit too
            smaller = [c for c in fits if c.uniform is not None and c.macs < base.macs]  # predicted to fit
            if not smaller:
                break
            over, base = base, max(smaller, key=lambda c: c.macs)
            kd(base)
            sessions([base, over])
            log(f"  measured {base.measured_ms:7.2f} ms (predicted {base.predicted_ms:.2f})  "
                f"{sp.describe(base.arch)}: the next uniform width down, the last measured over budget")  # fmt: skip
            finalists = sorted([*finalists, base], key=lambda c: -c.quality)
        factors = [round(f, 3) for f in sessions.readings.factors()]
        if any(abs(f - 1) > SESSION_TOL for f in factors):
            log(f"  (the measuring sessions read {', '.join(f'{f:.2f}x' for f in factors)} the speed they agree on: "
                "each model is read from every session that timed it)")  # fmt: skip
    wall["measure_s"] = round(wall.get("measure_s", 0.0) + time.perf_counter() - t0, 1)
    within = [c for c in finalists if c.measured_ms is None or c.measured_ms <= latency_ms]
    if within:
        chosen = refine.choose(within, base, tie_db, SESSION_TOL)
        if chosen is base and within[0] is not base:
            log(f"search: the best architecture leads the uniform student by {within[0].quality - base.quality:.2f} dB "
                f"on the proxy (under {tie_db:g} dB: a tie once distilled) and is no faster: the uniform student is chosen")  # fmt: skip
    else:
        chosen = min(finalists, key=lambda c: c.measured_ms or 0)
        log(f"search: no finalist measured within {latency_ms} ms; the fastest, {chosen.measured_ms:.2f} ms, "
            "is chosen: raise --latency-ms")  # fmt: skip
    scored = [c for c in cands.values() if c.predicted_ms is not None]
    front = pareto_front(scored)
    wall["total_s"] = round(time.perf_counter() - started, 1)
    result = SearchResult(teacher, tgt.name, tgt.precision, list(hw) if hw else None, latency_ms, source_name,
                          chosen, base, scored, front, wall, Path(out), ratio,
                          [round(x, 3) for x in slowness], factors, allow or {})  # fmt: skip
    write_result(result)
    return result


def measured_ratio(finalists: list[Candidate]) -> float | None:
    """Median measured / predicted latency of the finalists: how far the table's scale is off here, now."""
    import statistics

    ratios = [c.measured_ms / c.predicted_ms for c in finalists if c.measured_ms and c.predicted_ms]
    return statistics.median(ratios) if ratios else None


def _latency_model(
    latency_fn: Callable[[Any, Any], float] | None,
    spec: Any,
    tgt: Any,
    hw: tuple[int, int] | None,
    host: str | None,
    threads: int | None,
    ssh: dict[str, Any] | None,
    log: Callable[[str], None],
) -> tuple[Callable[[list[Any]], list[float]], str]:
    """The target's measured-block latency model (search/latency.py), over a batch of models."""
    if latency_fn is not None:
        return (lambda models: [float(latency_fn(m, spec)) for m in models]), "given"
    from edgedistill.search.latency import predict_many

    def predict(models: list[Any]) -> list[float]:
        out = []
        for p in predict_many(
            models, spec, tgt, tgt.precision, hw, host, threads=threads, progress=False, ssh=ssh
        ):
            if not p.ms > 0:  # the fit floors a time at a positive one: a table this wrong is corrupt
                raise EdgeDistillError(
                    f"the latency table of {tgt.name} {tgt.precision} predicts {p.ms:.2f} ms: it was measured on a "
                    "busy machine; delete it (~/.cache/edgedistill/latency, or $EDGEDISTILL_CACHE) and search on an idle one"
                )
            out.append(float(p.ms))
        return out

    from edgedistill.search.latency_compile import QAT_FORM

    where = host or "this host"
    form = " as a QAT student exports" if tgt.options.get(QAT_FORM) else ""
    return predict, f"measured blocks, {tgt.name} {tgt.precision}{form} on {where}"


def _measure_models(
    spec: Any,
    tgt: Any,
    hw: tuple[int, int] | None,
    host: str | None,
    threads: int | None,
    ssh: Any,
    slowness: list[float],
    log: Callable[[str], None],
) -> Callable[[list[Any]], list[float]]:
    """Whole models timed in interleaved rounds in one session, on `host` when given, with the speed
    anchor, and read at the machine's typical speed (search/whole_timing.py: measure_models `typical`):
    finalists timed in a slow minute of a shared VM read over a budget they meet."""
    from edgedistill.search.whole_timing import measure_models

    def measure(models: list[Any]) -> list[float]:
        ms = measure_models(models, [spec] * len(models), tgt, tgt.precision, hw, host, threads=threads,
                            ssh=ssh, typical=True, slowness=slowness)  # fmt: skip
        if abs(slowness[-1] - 1) > REANCHOR_TOL:
            log(f"  (the speed anchor ran {slowness[-1]:.2f}x its typical time in this session: "
                "the times below are read at the typical speed)")  # fmt: skip
        return ms

    return measure


def _speed_sampler(
    tgt: Any, host: str | None, threads: int | None, ssh: Any, real: bool
) -> Callable[[], None]:
    """The speed anchor timed alone between the search's phases (search/whole_timing.py: note_speed): the
    finalists are read at a level of its times (LatencyTable.typical_scale), and a new table has but
    its references' one, which on this VM ran 1.2x the anchor's time minutes before; a no-op where the
    measurement is not the target's."""
    from edgedistill.search.whole_timing import note_speed

    def sample() -> None:
        if real:
            note_speed(tgt, None, host, threads=threads, ssh=ssh)

    return sample


def _ms_per_mac(measured: list[Candidate]) -> float:
    pts = [(c.macs, c.predicted_ms) for c in measured if c.predicted_ms]
    if not pts:
        raise EdgeDistillError("no latency predicted for the uniform students: check the target's runtime")
    return sum(ms for _, ms in pts) / max(sum(m for m, _ in pts), 1)
