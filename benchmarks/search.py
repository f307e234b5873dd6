"""Searched student vs the uniform-width student of the same latency, per CPU target and budget.

    python benchmarks/search.py                         # 2 targets x 2 budgets, ~2-3 h on 2 idle cores
    python benchmarks/search.py --targets x86-onnxruntime --steps 300   # one target, quicker
    python benchmarks/search.py --targets x86-onnxruntime --budget-ms 19.05 --seeds 3   # each student 3x

For the embedded photo-restore teacher, per target (x86-onnxruntime, x86-openvino; INT8) and budget
(--budget-ms, default: the uniform --width 0.22 student's INT8 latency predicted on that target, and half of it):
1. `search` within B; the uniform student: the largest --width on the search's ladder measured within B
   (the smallest when none is), compressed (distill -> export -> profile);
2. the chosen architecture compressed with the same recipe and steps, as `compress --latency-ms` does
   after its search (unless the search chose the uniform student itself: then one student, one row);
   when the search measured it over 3 % slower than the uniform student (or with --bracket), the next
   width up is compressed too ("uniform_up"): the two uniform students bracket its latency;
3. interleaved profiles of both artifacts (--repeats, median), without the teacher, and each student's
   PSNR/SSIM vs the teacher and feature distance from its distillation's held-out scores: with --seeds N,
   their mean and standard deviation over N distillations (seeds 0..N-1) of each student.
Writes benchmarks/results/search.json and .md (the table for README) and search_pareto.png; prints the CPU.
Rows of other targets and budgets already in search.json are kept: one target can run at a time, and
a stopped run resumes (compress skips the stages it finished).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from edgedistill.core.atomic import write_text_atomic
from edgedistill.models.loading import load_generator
from edgedistill.pipeline.compress import CompressOptions, compress
from edgedistill.pipeline.report import latency_table
from edgedistill.runtime.hostinfo import host_info
from edgedistill.search import space as sp
from edgedistill.search.api import UNIFORM_LADDER

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
SCRATCH = ROOT / "scratch" / "search" / "bench"
KEYS = ("psnr_vs_teacher", "ssim_vs_teacher", "feature_distance", "psnr_vs_target", "channel_shift_pct")


def default_budget(teacher: str, target: str, size: tuple[int, int]) -> float:
    from edgedistill.search.latency import predict_latency

    spec = load_generator(teacher).spec
    net = sp.build(spec, sp.uniform_arch(sp.space_for(spec), 0.22))
    return round(predict_latency(net, spec, target, "int8", size), 2)


def run_pair(args: argparse.Namespace, target: str, budget: float) -> dict:
    from edgedistill.search.api import search

    allow = sp.parse_allow(args.allow)
    base = SCRATCH / f"{target}-{budget:g}ms{allow_tag(allow)}"
    spec = load_generator(args.teacher).spec
    space = sp.restrict(sp.space_for(spec), allow)
    common = {"teacher": args.teacher, "targets": [target], "steps": args.steps, "precision": "int8",
              "threads": args.threads, "min_psnr": None}  # fmt: skip
    if not (base / "search" / "arch.json").is_file():
        search(args.teacher, target, budget, out=base / "search", precision="int8", threads=args.threads,
               allow=allow)  # fmt: skip
    found = json.loads((base / "search" / "search.json").read_text())
    # no uniform student within budget (the search found none on its ladder): the smallest, the nearest
    width = (found.get("uniform") or {}).get("uniform") or UNIFORM_LADDER[0]
    # (a run with --allow distils its own uniform students: the unrestricted pair's folders are named by
    # role, not width, and its search may settle on another width)
    uniform = compress(CompressOptions(**common, out=base / "uniform", **uniform_student(space, width)))
    chosen = sp.canonical(space, found["chosen"]["arch"])
    same = sp.arch_key(chosen) == sp.arch_key(sp.uniform_arch(space, width))
    # the search may choose the uniform student itself; else the chosen architecture is distilled,
    # exported and profiled as compress --latency-ms does after its search
    names = ("uniform",) if same else ("searched", "uniform")
    # the searched student measured slower than the uniform one in the search: the next width up the
    # ladder is distilled too, so the two uniform students bracket its latency (equal latency, not budget)
    up = next_width(width) if not same and (args.bracket or slower_than_uniform(found)) else None

    def student(name: str, seed: int = 0) -> dict:
        """What sets each student's compress apart: its architecture or width, and the seed."""
        if name == "searched":
            return {"distill_options": {"arch": chosen, **({"seed": seed} if seed else {})}}
        made = uniform_student(space, up if name == "uniform_up" else width)  # type: ignore[arg-type]
        return {
            **made,
            "distill_options": {**made.get("distill_options", {}), **({"seed": seed} if seed else {})},
        }

    if not same:
        searched = compress(CompressOptions(**common, out=base / "searched", **student("searched")))
    dirs = {name: base / name for name in names}
    if up is not None:
        dirs["uniform_up"] = base / f"uniform-{up:g}"
        uniform_up = compress(CompressOptions(**common, out=dirs["uniform_up"], **student("uniform_up")))
    metrics = {"uniform": uniform, **({} if same else {"searched": searched})}
    if up is not None:
        metrics["uniform_up"] = uniform_up
    per_seed = {name: [m["student_metrics"]] for name, m in metrics.items()}
    # one seed's distillation moves PSNR vs the teacher by up to ~1 dB: --seeds distils each student
    # again with seeds 1..N-1 (same recipe, steps and data); the row reports their mean and spread
    for seed in range(1, args.seeds):
        for name, d in dirs.items():
            opts = CompressOptions(**common, out=d.with_name(f"{d.name}-s{seed}"), **student(name, seed))
            per_seed[name].append(compress(opts)["student_metrics"])
    arts = {name: str(d / "exports" / f"{target}-int8") for name, d in dirs.items()}
    size = tuple(spec.default_size or (256, 256))
    # the artifacts alone (beside the teacher, 35 GMACs, they measured 25-30 % slower), profiled
    # --repeats times: this VM's speed moves up to 20 % between minutes, the ratio much less
    runs = []
    for _ in range(args.repeats):
        prof = latency_table(arts, size, args.threads, args.profile_seconds)  # type: ignore[arg-type]
        runs.append({m.name: m.stats.p50 for m in prof.models if m.stats})
    for run in runs:
        run.setdefault("searched", run["uniform"])
    p50 = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    per_seed.setdefault("searched", per_seed["uniform"])
    return {
        "target": target, "budget_ms": budget, "allowed": allow, "searched_arch": chosen, "uniform_width": width, "same_as_uniform": same,
        "predicted_ms": {"searched": found["chosen"]["predicted_ms"], "uniform": (found.get("uniform") or {}).get("predicted_ms")},
        "measured_ms": {k: p50.get(k) for k in ("searched", "uniform", "uniform_up") if k in p50},
        "profiles_ms": runs, "search_measured_ratio": found.get("measured_ratio"),
        **{name: seed_summary(runs_) for name, runs_ in per_seed.items()},
        **({"uniform_up_width": up} if up is not None else {}),
        "timings": {"uniform": uniform.get("timings"), **({} if same else {"searched": searched.get("timings")})},
        "search_wall_s": found.get("wall_s"),
        "host": host_info(args.threads), "steps": args.steps,  # per row: rows of other runs may be other CPUs
        "pareto_png": str((base / "search" / "pareto.png").relative_to(ROOT)),
    }  # fmt: skip


def uniform_student(space: sp.SearchSpace, width: float) -> dict:
    """compress's options for the uniform student: --width, or its architecture where --allow left
    out one of the teacher's ops (sp.uniform_arch swaps in the first option allowed)."""
    arch = sp.uniform_arch(space, width)
    return {"width": width} if set(arch) == {"widths"} else {"distill_options": {"arch": arch}}


def allow_tag(allow: dict[str, list[str]]) -> str:
    """The scratch folder's suffix for a search limited by --allow ("" when it is not)."""
    return "".join(f"-{k}={'+'.join(v)}" for k, v in sorted(allow.items()))


def seed_summary(runs: list[dict]) -> dict:
    """Each metric's mean over the seeds, its sample standard deviation, and every seed's values."""
    out: dict = {}
    for k in KEYS:
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals and not all(isinstance(v, (int, float)) for v in vals):  # per-channel lists: the first seed's
            out[k] = vals[0]
            continue
        out[k] = round(statistics.fmean(vals), 4) if vals else None
        if len(vals) > 1:
            out[f"{k}_sd"] = round(statistics.stdev(vals), 4)
    out["seeds"] = len(runs)
    if len(runs) > 1:
        out["per_seed"] = [{k: r.get(k) for k in KEYS} for r in runs]
    return out


def slower_than_uniform(found: dict, tolerance: float = 0.03) -> bool:
    """The search measured its choice more than `tolerance` slower than the uniform baseline."""
    chosen, uniform = found["chosen"].get("measured_ms"), (found.get("uniform") or {}).get("measured_ms")
    return bool(chosen and uniform and chosen > (1 + tolerance) * uniform)


def next_width(width: float) -> float | None:
    return next((w for w in UNIFORM_LADDER if w > width), None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="photo-restore")
    ap.add_argument("--targets", nargs="+", default=["x86-onnxruntime", "x86-openvino"])
    ap.add_argument(
        "--budget-ms", type=float, nargs="*", help="default: the 0.22 student's INT8 latency and half"
    )
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument(
        "--seeds", type=int, default=1, help="distillations per student (seeds 0..N-1); mean +- sd"
    )
    ap.add_argument(
        "--bracket",
        action="store_true",
        help="distil the next uniform width up too, whatever the search measured (it measured its choice "
        "as fast as the uniform student; the benchmark's profiles may not)",
    )
    ap.add_argument(
        "--allow",
        nargs="*",
        help="KEY=OPTION[,OPTION]: search with these choices limited (search --allow); its own rows",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile-seconds", type=float, default=6.0)
    ap.add_argument(
        "--repeats", type=int, default=3, help="interleaved profiles; measured ms is their median"
    )
    args = ap.parse_args()
    allow = sp.parse_allow(args.allow)
    rows = kept_rows({(t, b) for t in args.targets for b in (args.budget_ms or [])}, args.targets, allow)
    for target in args.targets:
        budgets = args.budget_ms or [b := default_budget(args.teacher, target, (256, 256)), round(b / 2, 2)]
        for budget in budgets:
            rows = [
                r
                for r in rows
                if (r["target"], r["budget_ms"], r.get("allowed") or {}) != (target, budget, allow)
            ]
            rows.append(run_pair(args, target, budget))
            print(json.dumps(rows[-1]), flush=True)
            write_results(args, rows)  # each pair is ~40 min: a stopped run keeps what it measured


def kept_rows(pairs: set[tuple[str, float]], targets: list[str], allow: dict[str, list[str]]) -> list[dict]:
    """Rows of an earlier run that this one does not redo: one target's pairs (of one --allow) can run at a time."""
    path = RESULTS / "search.json"
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    redo = [t for t in targets if not any(p[0] == t for p in pairs)]  # default budgets: the whole target
    rows = [r for r in old["rows"] if (r.get("allowed") or {}) != allow
            or ((r["target"], r["budget_ms"]) not in pairs and r["target"] not in redo)]  # fmt: skip
    for r in rows:  # rows written before each carried its machine: the file's
        r.setdefault("host", old.get("host"))
        r.setdefault("steps", old.get("args", {}).get("steps"))
    return rows


def machine(host: dict | None) -> str:
    return f"{host['cpu']} ({', '.join(host['isa'])})" if host else "?"


def spread(metrics: dict, key: str) -> str:
    """`mean ± sd` over seeds, or the one seed's value."""
    sd = metrics.get(f"{key}_sd")
    return f"{metrics[key]}" if sd is None else f"{metrics[key]:.3f} ± {sd:.3f}"


def write_results(args: argparse.Namespace, rows: list[dict]) -> None:
    machines = list(dict.fromkeys(machine(r.get("host")) for r in rows))
    tag = {m: chr(ord("A") + i) for i, m in enumerate(machines)}
    lines = [*(f"{tag[m]}: {m}" for m in machines), "", f"{args.threads} threads; compare rows of one machine only", "",
             "| target | budget ms | student | measured ms | PSNR vs T dB | SSIM | FD | seeds | search s | steps | machine | architecture |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        for who in ("searched", "uniform", "uniform_up"):
            if who not in r:
                continue
            arch = sp.describe(r["searched_arch"]) if who == "searched" else f"--width {r[who + '_width']}"
            if r.get("allowed"):
                arch += f" (--allow {sp.allow_text(r['allowed'])})"
            ms = r["measured_ms"].get(who)
            lines.append(f"| {r['target']} | {r['budget_ms']:g} | {who} | {ms if ms is None else f'{ms:.2f}'} | "
                         f"{spread(r[who], 'psnr_vs_teacher')} | {spread(r[who], 'ssim_vs_teacher')} | "
                         f"{spread(r[who], 'feature_distance')} | {r[who].get('seeds', 1)} | "
                         f"{(r.get('search_wall_s') or {}).get('total_s', '') if who == 'searched' else ''} | "
                         f"{r.get('steps', '')} | {tag[machine(r.get('host'))]} | {arch} |")  # fmt: skip
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        RESULTS / "search.json", json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n"
    )
    write_text_atomic(RESULTS / "search.md", "\n".join(lines) + "\n")
    if rows and (ROOT / rows[0]["pareto_png"]).is_file():  # the first pair's front, for README
        shutil.copyfile(ROOT / rows[0]["pareto_png"], RESULTS / "search_pareto.png")


if __name__ == "__main__":
    main()
