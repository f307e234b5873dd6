"""Does the search's quality proxy rank students as full distillation does?

    python benchmarks/search_proxy.py                      # 7 candidates at 1000 steps, ~40 min on 2 idle Zen4 cores
    python benchmarks/search_proxy.py --steps 300 --n 6    # quicker, noisier
    python benchmarks/search_proxy.py --rescore            # proxy variants vs the students already distilled, minutes

For the embedded photo-restore teacher: the uniform --width 0.22 student plus N architectures
sampled from the search space (seeded) within a MACs window around it. Each is scored by
  - the inherited-weights proxy (no training, BatchNorm re-estimated),
  - the short-KD proxy the search uses (search/proxy.py, --proxy-steps decayed, the pool and
    validation crops search() uses), with BatchNorm frozen as distillation freezes it, and with
    BatchNorm normalising by the batch (the proxy before it followed distillation),
  - full distillation (`edgedistill.distill`, the same recipe and --steps for all): PSNR vs teacher
    on held-out inputs.
Reports the Spearman rank correlation of each proxy with the distilled PSNR, and the proxies' cost.
Writes benchmarks/results/search_proxy.json; prints the CPU it ran on.

--rescore distills nothing: it scores proxy variants (--variants STEPS:const|decay[:batch|frozen[:LR]]) on
the students of search_proxy.json, whose distilled PSNR is measured, and writes their Spearman
correlations to search_proxy_variants.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from edgedistill.core.atomic import write_text_atomic
from edgedistill.data.sources import make_source
from edgedistill.distiller.api import distill
from edgedistill.models.loading import load_generator
from edgedistill.runtime.hostinfo import host_info
from edgedistill.search import proxy
from edgedistill.search import space as sp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
SCRATCH = ROOT / "scratch" / "search" / "proxy"


def candidates(spec, n: int, seed: int, lo: float, hi: float) -> list[dict]:
    space = sp.space_for(spec)
    rng = random.Random(seed)
    out = [sp.uniform_arch(space, 0.22)]
    seen = {sp.arch_key(out[0])}
    while len(out) < n + 1:
        arch = sp.sample(space, rng)
        if sp.arch_key(arch) in seen:
            continue
        seen.add(sp.arch_key(arch))
        if lo <= sp.macs_of(spec, arch) / 1e9 <= hi:
            out.append(arch)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="photo-restore")
    ap.add_argument("--n", type=int, default=6, help="sampled architectures (plus the uniform one)")
    ap.add_argument("--steps", type=int, default=1000, help="full distillation steps per candidate")
    ap.add_argument("--proxy-steps", type=int, default=300, help="as search() runs it")
    ap.add_argument("--macs", type=float, nargs=2, default=(0.8, 3.0), help="GMACs window at 256x256")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rescore", action="store_true", help="proxy variants vs already distilled students")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=[
            "0:const",
            "120:decay:frozen:1e-3",
            "120:decay:batch:1e-3",
            "120:decay:frozen",
            "300:decay:frozen",
            "120:decay:batch",
        ],
        help="STEPS:const|decay[:batch|frozen[:LR]] (LR default: the proxy's, 2e-4)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.rescore:
        rescore(args)
        return
    teacher = load_generator(args.teacher)
    spec, t_net = teacher.spec, teacher.module.eval()
    archs = candidates(spec, args.n, args.seed, *args.macs)
    pdata = proxy.proxy_data(t_net, spec, make_source(args.teacher, spec, None, args.seed, 64))
    rows = []
    for i, arch in enumerate(archs):
        p = proxy.score(t_net, spec, arch, pdata, steps=args.proxy_steps, seed=args.seed)
        p_batch = proxy.score(
            t_net, spec, arch, pdata, steps=args.proxy_steps, seed=args.seed, bn_stats="batch"
        )
        t0 = time.perf_counter()
        run = SCRATCH / f"c{i}-{args.steps}"
        if not (run / "metrics.json").exists():
            distill(
                teacher=args.teacher,
                arch=arch,
                steps=args.steps,
                out=str(run),
                cache=256,
                threads=args.threads,
            )
        metrics = json.loads((run / "metrics.json").read_text())
        rows.append({
            "arch": arch, "desc": sp.describe(arch), "gmacs": round(sp.macs_of(spec, arch) / 1e9, 3),
            "proxy_inherited": round(p.psnr_inherited, 3), "proxy_kd": round(p.psnr, 3),
            "proxy_kd_batch_bn": round(p_batch.psnr, 3), "proxy_s": round(p.seconds, 1),
            "distilled_psnr": metrics.get("psnr_vs_teacher"), "distill_s": round(time.perf_counter() - t0, 1),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    from scipy.stats import spearmanr

    full = [r["distilled_psnr"] for r in rows]
    result = {
        "host": host_info(args.threads),
        "args": vars(args),
        "rows": rows,
        "spearman_inherited": float(spearmanr([r["proxy_inherited"] for r in rows], full).statistic),
        "spearman_kd": float(spearmanr([r["proxy_kd"] for r in rows], full).statistic),
        "spearman_kd_batch_bn": float(spearmanr([r["proxy_kd_batch_bn"] for r in rows], full).statistic),
    }
    host = result["host"]
    print(f"\n{host['cpu']} ({', '.join(host['isa'])}), {args.threads} threads")
    print(f"{'GMACs':>6} {'inherit':>8} {'KD proxy':>8} {'batch BN':>8} {'distilled':>9}  architecture")
    for r in rows:
        print(
            f"{r['gmacs']:6.2f} {r['proxy_inherited']:8.2f} {r['proxy_kd']:8.2f} {r['proxy_kd_batch_bn']:8.2f} "
            f"{r['distilled_psnr']:9.2f}  {r['desc']}"
        )
    print(
        f"Spearman vs distilled PSNR: inherited {result['spearman_inherited']:.3f}, KD {result['spearman_kd']:.3f}, "
        f"KD with batch BN {result['spearman_kd_batch_bn']:.3f}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / "search_proxy.json", json.dumps(result, indent=2) + "\n")


def rescore(args: argparse.Namespace) -> None:
    from scipy.stats import spearmanr

    teacher = load_generator(args.teacher)
    spec, t_net = teacher.spec, teacher.module.eval()
    measured = json.loads((RESULTS / "search_proxy.json").read_text())
    sets = {
        f"{measured['args']['steps']} steps": [(r["arch"], r["distilled_psnr"]) for r in measured["rows"]]
    }
    pdata = proxy.proxy_data(t_net, spec, make_source(args.teacher, spec, None, args.seed, 64))
    out: dict = {
        "host": host_info(args.threads),
        "sets": {k: len(v) for k, v in sets.items()},
        "variants": {},
    }
    print(f"{out['host']['cpu']} ({', '.join(out['host']['isa'])}), {args.threads} threads")
    print(f"{'variant':>12} {'s/cand':>7} " + " ".join(f"{k:>11}" for k in sets))
    for v in args.variants:
        steps, schedule, bn, lr = [*v.split(":"), None, None][:4]
        t0, rhos, scores = time.perf_counter(), {}, {}
        for name, rows in sets.items():
            got = [proxy.score(t_net, spec, a, pdata, steps=int(steps), seed=args.seed, decay=schedule == "decay",
                               bn_stats=bn or None, **({"lr": float(lr)} if lr else {})).psnr for a, _ in rows]  # fmt: skip
            scores[name] = [round(x, 3) for x in got]
            rhos[name] = float(spearmanr(got, [q for _, q in rows]).statistic)
        per = (time.perf_counter() - t0) / sum(len(r) for r in sets.values())
        out["variants"][v] = {"spearman": rhos, "seconds_per_candidate": round(per, 1), "scores": scores}
        print(f"{v:>12} {per:7.1f} " + " ".join(f"{rhos[k]:11.3f}" for k in sets), flush=True)
    out["sets_distilled"] = {k: [q for _, q in v] for k, v in sets.items()}
    write_text_atomic(RESULTS / "search_proxy_variants.json", json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
