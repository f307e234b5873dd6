"""Does the latency model hold? Predicted (sum of measured blocks + overhead) vs measured whole-model
latency on random candidates, per target and precision.

    python benchmarks/latency_model.py all     --out scratch/latency/bench      # here, end to end
    python benchmarks/latency_model.py prepare --out DIR   # export + compile every block and model (needs torch)
    python benchmarks/latency_model.py time    --out DIR   # time them (numpy + the runtimes only)
    python benchmarks/latency_model.py report  --out DIR   # fit, predict, compare: table + JSON

`prepare` and `report` run where torch and the quantizers are; `time` runs on the machine being
modelled (a quiet one: the ratio of two noisy numbers says little). Candidates: the resnet family with
random per-stage widths, residual blocks, upsampling op (ConvTranspose | nearest/bilinear resize +
conv | PixelShuffle), stem/head kernel and block type. The whole-model fit (`a + b * kernels + c *
other blocks + d * upsampling blocks`, search/latency_fit.py) is made on the reference models only
(search/latency.py REFERENCES), never on the candidates; benchmarks/latency_fit_variants.py compares
fit forms on these measurements offline. Blocks are compiled in their carriers as the search compiles
them (INT8 as the QAT student exports unless --no-qat); `time` also profiles every whole model kernel
by kernel and keeps every kernel, so whose each kernel is can be read again from the measurements:
`report` also prints, per kind of block (depthwise, pointwise, 3x3, stem/head, upsampling), its
kernels inside the candidates over the same blocks in their carriers (benchmarks/inside_vs_carrier.py). `--from-search S/search.json`
takes as candidates the students a search measured whole (benchmarks/results/latency_model_ov_finalists.md:
the OpenVINO full-budget finalists on a Zen3).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = [
    ("x86-onnxruntime", "int8"),
    ("x86-onnxruntime", "fp32"),
    ("x86-openvino", "int8"),
    ("x86-openvino", "fp32"),
]
WIDTHS = (8, 12, 16, 24, 32, 48)
UPSAMPLES = ("convtranspose", "nearest", "bilinear", "pixelshuffle")


def candidates(n: int, seed: int) -> list[dict[str, Any]]:
    """Random resnet students: widths per stage (stem, 2 downs, trunk, 2 ups), blocks, up-op, kernel."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        w = sorted(rng.sample(WIDTHS, 3))
        trunk = max(w[2], rng.choice(WIDTHS))
        out.append(
            {
                "widths": [w[0], w[1], trunk, rng.choice([w[1], w[2]]), rng.choice([w[0], w[1]])],
                "n_blocks": rng.randint(1, 6),
                "upsample": rng.choice(UPSAMPLES),
                "kernel": rng.choice((3, 7)),
                "block": rng.choice(("plain", "plain", "dwsep")),
            }
        )
    return out


def space_candidates(
    teacher: str, n: int, seed: int, size: tuple[int, int], gmacs: tuple[float, float]
) -> list[dict[str, Any]]:
    """Random students from `teacher`'s search space (search/space.py) within a MACs range: the
    region a search at the benchmark budgets walks (wider trunks, 256x256), which the fixed WIDTHS
    above never reach."""
    from edgedistill.models.loading import load_generator
    from edgedistill.search.space import macs_of, sample, space_for

    spec = load_generator(teacher).spec
    space = space_for(spec)
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for _ in range(200 * n):
        arch = sample(space, rng)
        if gmacs[0] <= macs_of(spec, arch, size) / 1e9 <= gmacs[1] and arch not in out:
            out.append({**spec.kwargs, **arch})
        if len(out) == n:
            break
    return out


def search_candidates(teacher: str, search_json: Path) -> list[dict[str, Any]]:
    """The students a search measured whole (its finalists, uniform ones included), in `teacher`'s
    kwargs: the models whose measured/predicted ratios the search acted on."""
    from edgedistill.models.loading import load_generator

    kwargs = load_generator(teacher).spec.kwargs
    found = json.loads(search_json.read_text())["candidates"]
    return [{**kwargs, **c["arch"]} for c in found if c.get("measured_ms")]


# ------------------------------------------------------------------------------------------ prepare
def prepare(
    out: Path,
    n: int,
    seed: int,
    size: tuple[int, int],
    configs: list[tuple[str, str]],
    shard: tuple[int, int] = (0, 1),
    space: str | None = None,
    gmacs: tuple[float, float] = (0.5, 3.0),
    qat: bool = True,
    from_search: Path | None = None,
) -> None:
    """Export and compile every block and whole model (INT8 as a QAT student's export compiles it,
    as the search times it, unless `qat` is False); with `shard` (i, k) only models i, i+k, ...
    into plan.<i>.json (`merge` joins them): shards prepare in parallel on a many-core machine."""
    from edgedistill.core.spec import spec_for_family
    from edgedistill.core.targets import get_target
    from edgedistill.models.registry import create
    from edgedistill.search.block_timing import block_names
    from edgedistill.search.latency import REFERENCES, compile_block, compile_whole, cut_model
    from edgedistill.search.latency_compile import as_qat_export

    fam, refs = REFERENCES["image"]
    models = [(f"ref{i}", "ref", fam, dict(kw)) for i, kw in enumerate(refs)]
    if space:  # the references again in the space teacher's norm: does the fit need the candidates' norm?
        from edgedistill.models.loading import load_generator

        norm = load_generator(space).spec.kwargs.get("norm")
        if norm and any(kw.get("norm", "instance") != norm for kw in refs):
            models += [(f"refn{i}", "ref-norm", fam, {**kw, "norm": norm}) for i, kw in enumerate(refs)]
    if from_search:
        cands = search_candidates(space or "photo-restore", from_search)
    else:
        cands = space_candidates(space, n, seed, size, gmacs) if space else candidates(n, seed)
    models += [(f"cand{i:02d}", "cand", "resnet", kw) for i, kw in enumerate(cands)]
    models = models[shard[0] :: shard[1]]
    for target, precision in configs:
        tgt = as_qat_export(get_target(target, precision)) if qat else get_target(target, precision)
        d = out / f"{target}-{precision}"
        plan: dict[str, Any] = {
            "target": target,
            "precision": precision,
            "size": list(size),
            "qat": qat,
            "blocks": {},
            "models": {},
        }
        t0 = time.perf_counter()
        plan_name = "plan.json" if shard[1] == 1 else f"plan.{shard[0]}.json"
        for name, role, family, kw in models:
            module = create(family, **kw)
            spec = spec_for_family(family, kw)
            spec.default_size = size  # type: ignore[assignment]
            work = d / "work" / name
            work.mkdir(parents=True, exist_ok=True)
            cut = cut_model(module, spec, tgt, size, work)
            acts = None
            for b in cut.blocks:
                if b.key in plan["blocks"]:
                    continue
                if acts is None:
                    from edgedistill.search.latency import _activations

                    acts = _activations(cut, [x for x in cut.blocks if x.key not in plan["blocks"]])
                if not _compiled(d / "blocks" / b.key / "art"):  # resumable: a rerun skips what is there
                    compile_block(cut, b, acts, tgt, d / "blocks" / b.key)
                own, other = block_names(b)
                plan["blocks"][b.key] = {
                    "desc": b.desc,
                    "inputs": b.inputs,
                    "outputs": b.outputs,
                    "macs": b.macs,
                    "own": own,  # names of the compiled block's kernels (block_timing.summarize)
                    "other": other,
                }
            if not _compiled(d / "whole" / name / "art"):
                compile_whole(module, spec, tgt, size, d / "whole" / name, work / "model.fp32.onnx")
            plan["models"][name] = {
                "role": role,
                "family": family,
                "kwargs": kw,
                "blocks": [b.key for b in cut.blocks],
                # each block's nodes and outputs here: the whole model's kernels are attributed by them
                "occurrences": [{"own": [*b.nodes, *b.tensors], "other": b.inputs} for b in cut.blocks],
            }
            (d / plan_name).write_text(
                json.dumps(plan, indent=1)
            )  # after each model: a cut-short run reports
            print(f"{target} {precision}: {name} {len(cut.blocks)} blocks, {len(plan['blocks'])} distinct so far "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip


def _compiled(art: Path) -> bool:
    return (art / "manifest.json").is_file()


def merge(out: Path) -> None:
    """Join the shards' plan.<i>.json into plan.json (a block compiled by two shards is one block)."""
    for d in sorted({p.parent for p in out.glob("*/plan.*.json")}):
        parts = [json.loads(p.read_text()) for p in sorted(d.glob("plan.*.json"))]
        plan = {**parts[0], "blocks": {}, "models": {}}
        for part in parts:
            plan["blocks"].update(part["blocks"])
            plan["models"].update(part["models"])
        plan["models"] = dict(sorted(plan["models"].items()))
        (d / "plan.json").write_text(json.dumps(plan, indent=1))
        print(f"{d.name}: {len(plan['models'])} models, {len(plan['blocks'])} distinct blocks")


# ------------------------------------------------------------------------------------------ time
def _cpu_times(d: Path, names: list[str], threads: int, min_time: float) -> dict[str, dict[str, Any]]:
    """Median process CPU time per call, interleaved rounds: on a machine shared with other work a
    call's wall time counts the time it waited for a core; with one thread, CPU time does not."""
    from edgedistill.backends import load_runner
    from edgedistill.core.artifact import load_artifact
    from edgedistill.runtime.sources import artifact_source, make_inputs

    live = []
    for n in names:
        art = load_artifact(d / "whole" / n / "art")
        runner = load_runner(art, threads=threads)
        feed = make_inputs(artifact_source(art, n, n), runner, None, 1, 0)
        for _ in range(3):
            runner.run(feed)
        live.append((n, runner, feed))
    times: dict[str, list[int]] = {n: [] for n in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < 15 or time.perf_counter() - start < min_time:
        for n, runner, feed in live:
            t0 = time.process_time_ns()
            runner.run(feed)
            times[n].append(time.process_time_ns() - t0)
        rounds += 1
    return {
        n: {
            "p50": float(np.median(t)) / 1e6,
            "cv": float(np.std(t) / np.mean(t)),
            "clock": "process CPU time",
        }
        for n, t in times.items()
    }


def _whole_feed(art_dir: Path, threads: int) -> dict[str, np.ndarray]:
    """The inputs a whole model is profiled with (as the interleaved timing feeds it)."""
    from edgedistill.backends import load_runner
    from edgedistill.core.artifact import load_artifact
    from edgedistill.runtime.sources import artifact_source, make_inputs

    art = load_artifact(art_dir)
    runner = load_runner(art, threads=threads)
    try:
        return make_inputs(artifact_source(art, art_dir.parent.name, art_dir.parent.name), runner, None, 1, 0)
    finally:
        close = getattr(runner, "close", None)
        if close is not None:
            close()


def time_all(out: Path, threads: int | None, min_time: float, only: str = "", clock: str = "wall") -> None:
    """Blocks kernel by kernel, then every whole model in interleaved rounds; numpy + runtimes only."""
    from edgedistill.core.artifact import load_artifact
    from edgedistill.core.targets import get_target
    from edgedistill.runtime.hostinfo import host_info
    from edgedistill.runtime.session import ProfileOptions, run_profile
    from edgedistill.runtime.sources import artifact_source
    from edgedistill.search.block_timing import summarize, time_local_many
    from edgedistill.search.latency import BLOCK_CALLS, BLOCK_SECONDS, _load_feed

    for plan_path in sorted(out.glob("*/plan.json")):
        d = plan_path.parent
        if only and only not in d.name:
            continue
        plan = json.loads(plan_path.read_text())
        tgt = get_target(plan["target"], plan["precision"])
        th = threads or tgt.threads
        t0 = time.perf_counter()
        keys = list(plan["blocks"])
        bdirs = [d / "blocks" / key for key in keys]
        timed = time_local_many([b / "art" for b in bdirs], [_load_feed(b) for b in bdirs], th, BLOCK_CALLS,
                                BLOCK_SECONDS, clock)  # fmt: skip
        blocks = {
            key: {
                **summarize(ks, plan["blocks"][key]["own"], plan["blocks"][key]["other"]).to_dict(),
                "all": [
                    [k.name, k.op_type, round(k.ms, 5), k.precision, k.origin] for k in ks
                ],  # boundary too, in run order
            }
            for key, ks in zip(keys, timed, strict=True)
        }
        t1 = time.perf_counter()
        names = list(plan["models"])
        # every whole model kernel by kernel too, in run order: which block each kernel belongs to
        # is what tells a block's cost inside its model from its cost alone
        arts = [d / "whole" / n / "art" for n in names]
        in_model = time_local_many(
            arts, [_whole_feed(a, th) for a in arts], th, BLOCK_CALLS, BLOCK_SECONDS, clock
        )
        whole_kernels = {
            n: [[k.name, k.op_type, round(k.ms, 5), k.precision, k.origin] for k in ks]
            for n, ks in zip(names, in_model, strict=True)
        }
        if clock == "cpu":
            whole = _cpu_times(d, names, th, min_time)
        else:
            sources = [artifact_source(load_artifact(d / "whole" / n / "art"), n, n) for n in names]
            opts = ProfileOptions(
                threads=th, warmup=3, iterations=15, min_time=min_time, layers=0, roofline=False
            )
            report = run_profile(sources, opts)
            whole = {m.name: {"p50": m.stats.p50, "cv": m.stats.cv} for m in report.models if m.stats}
        result = {"blocks": blocks, "whole": whole, "whole_kernels": whole_kernels, "host": host_info(th), "threads": th, "clock": clock,
                  "block_s": round(t1 - t0, 1), "whole_s": round(time.perf_counter() - t1, 1)}  # fmt: skip
        (d / "timings.json").write_text(json.dumps(result, indent=1))
        print(
            f"{d.name}: {len(blocks)} blocks in {t1 - t0:.0f} s, {len(whole)} models in {time.perf_counter() - t1:.0f} s",
            flush=True,
        )


# ------------------------------------------------------------------------------------------ report
def report(out: Path, results: Path) -> dict[str, Any]:
    from inside_vs_carrier import inside_vs_carrier

    from edgedistill.search.latency import is_upsampling, overhead_fit, whole_ms

    summary: dict[str, Any] = {"configs": []}
    lines = []
    host, clock = None, "wall"
    for plan_path in sorted(out.glob("*/plan.json")):
        d = plan_path.parent
        if not (d / "timings.json").exists():
            continue
        plan = json.loads(plan_path.read_text())
        tim = json.loads((d / "timings.json").read_text())
        host = tim["host"]
        clock = tim.get("clock", "wall")
        blocks = tim["blocks"]

        def parts(name: str, plan: dict = plan, blocks: dict = blocks) -> tuple[float, int, float]:
            """Blocks' ms, kernels, and the upsampling blocks' ms (the fit scales them apart)."""
            keys = plan["models"][name]["blocks"]
            up = sum(blocks[k]["ms"] for k in keys if is_upsampling(plan["blocks"][k]["desc"]))
            return sum(blocks[k]["ms"] for k in keys), sum(blocks[k]["kernels"] for k in keys), up

        # the references as the library fits them: in the candidates' norm when the plan has them
        role = "ref-norm" if any(m["role"] == "ref-norm" for m in plan["models"].values()) else "ref"
        refs = [n for n, m in plan["models"].items() if m["role"] == role]
        cands = [n for n, m in plan["models"].items() if m["role"] == "cand"]
        ref_parts = [parts(n) for n in refs]
        fit = overhead_fit(
            [k for _, k, _ in ref_parts],
            [s for s, _, _ in ref_parts],
            [tim["whole"][n]["p50"] for n in refs],
            [u for _, _, u in ref_parts],
        )
        rows = []
        for n in cands:
            s, k, u = parts(n)
            pred = whole_ms(fit, s, k, u)
            meas = tim["whole"][n]["p50"]
            rows.append({"model": n, "arch": plan["models"][n]["kwargs"], "predicted_ms": round(pred, 3),
                         "measured_ms": round(meas, 3), "blocks_ms": round(s, 3), "up_ms": round(u, 3), "kernels": k,
                         "err_pct": round(100 * (pred - meas) / meas, 2), "cv": tim["whole"][n]["cv"]})  # fmt: skip
        errs = np.abs([r["err_pct"] for r in rows])
        # the fit as it was made before: on the three plain ResNets only (REFERENCES' first three)
        plain = overhead_fit(
            [k for _, k, _ in ref_parts[:3]],
            [s for s, _, _ in ref_parts[:3]],
            [tim["whole"][n]["p50"] for n in refs[:3]],
        )
        plain_errs = np.abs(
            [
                100 * (whole_ms(plain, *parts(n)) - tim["whole"][n]["p50"]) / tim["whole"][n]["p50"]
                for n in cands
            ]
        )
        cfg = {
            "target": plan["target"], "precision": plan["precision"], "size": plan["size"], "n": len(rows),
            "median_abs_err_pct": round(float(np.median(errs)), 2), "max_abs_err_pct": round(float(errs.max()), 2),
            "within_10pct": round(float(np.mean(errs <= 10)), 3), "within_5pct": round(float(np.mean(errs <= 5)), 3),
            "overhead": fit, "distinct_blocks": len(blocks), "rows": rows,
            "within_10pct_plain_refs": round(float(np.mean(plain_errs <= 10)), 3), "fitted_on": role,
            "median_signed_err_pct": round(float(np.median([r["err_pct"] for r in rows])), 2),
        }  # fmt: skip
        cfg["inside_vs_carrier"] = inside_vs_carrier(plan, tim)  # benchmarks/inside_vs_carrier.py
        summary["configs"].append(cfg)
        lines.append(
            f"| {cfg['target']} | {cfg['precision']} | {cfg['n']} | {cfg['median_abs_err_pct']:.1f} % | "
            f"{100 * cfg['within_10pct']:.0f} % | {100 * cfg['within_5pct']:.0f} % | {cfg['max_abs_err_pct']:.1f} % | "
            f"{len(blocks)} | {100 * cfg['within_10pct_plain_refs']:.0f} % | {cfg['median_signed_err_pct']:+.1f} % | {role} |"
        )
    summary["host"] = host
    head = [
        f"CPU: {host['cpu'] if host else '?'} ({', '.join(host['isa']) if host else '?'}), "
        f"{host['threads'] if host else '?'} threads, whole models by {clock} clock; runtimes {json.dumps(host['versions']) if host else ''}",
        "",
        "| target | precision | candidates | median abs err | within 10 % | within 5 % | max abs err | distinct blocks "
        "| within 10 %, fit on 3 plain refs | median signed err | fitted on |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    kinds = [
        "",
        "Each kind of block inside its models (the whole model's kernels that name it) over the same block"
        " in its carrier, summed over every occurrence in the candidates (1.00 = the carrier prices it right):",
        "",
        "| target | precision | block kind | occurrences | carrier ms | inside ms | inside / carrier |",
        "|---|---|---|---:|---:|---:|---:|",
        *(
            f"| {c['target']} | {c['precision']} | {kind} | {v['n']} | {v['carrier_ms']:.2f} | "
            f"{v['inside_ms']:.2f} | {v['ratio']:.2f} |"
            for c in summary["configs"]
            for kind, v in c["inside_vs_carrier"].items()
        ),
    ]
    text = "\n".join(head + lines + kinds)
    print(text)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(summary, indent=1) + "\n")
    results.with_suffix(".md").write_text(text + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=("prepare", "merge", "time", "report", "all"))
    ap.add_argument("--shard", default="0/1", help="i/k: prepare models i, i+k, ... (then `merge`)")
    ap.add_argument("--out", type=Path, default=ROOT / "scratch" / "latency" / "bench")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument(
        "--space", default=None, help="candidates from this teacher's search space (e.g. photo-restore)"
    )
    ap.add_argument(
        "--from-search",
        type=Path,
        help="candidates: the students this search.json measured whole (its teacher: --space)",
    )
    ap.add_argument("--gmacs", default="0.5,3.0", help="with --space: the candidates' MACs range, in GMACs")
    ap.add_argument(
        "--qat",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="INT8 as a QAT student exports (no layer kept fp32), as the search times it",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-time", type=float, default=4.0)
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time (shared machine, 1 thread)",
    )
    ap.add_argument("--only", default="", help="time only the configs whose folder name contains this")
    ap.add_argument("--configs", default=",".join(f"{t}:{p}" for t, p in CONFIGS))
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "latency_model.json")
    args = ap.parse_args()
    configs = [tuple(c.split(":")) for c in args.configs.split(",")]
    if args.phase in ("prepare", "all"):
        i, k = map(int, args.shard.split("/"))
        gmacs = tuple(map(float, args.gmacs.split(",")))
        prepare(
            args.out,
            args.n,
            args.seed,
            (args.size, args.size),
            configs,
            (i, k),
            args.space,
            gmacs,
            args.qat,
            args.from_search,
        )  # type: ignore[arg-type]
    if args.phase == "merge":
        merge(args.out)
    if args.phase in ("time", "all"):
        time_all(args.out, args.threads, args.min_time, args.only, args.clock)
    if args.phase in ("report", "all"):
        report(args.out, args.results)


if __name__ == "__main__":
    main()
