"""Could the search's quality proxy see the texture that PSNR does not?

    python benchmarks/search_texture.py scratch/search/bench/x86-openvino-20.25ms \
        scratch/search/bench/x86-openvino-20.25ms/old-tie2        # ~7 min on 2 Zen3 cores

The OpenVINO full-budget search chose depthwise-separable students that beat the uniform ones by
1.5 dB PSNR vs the teacher but carry a faint checker texture in flat sky (feature distance to the
clean photos 53 % worse). The proxy ranks candidates by PSNR after a 300-step pixel-KD fine-tune
(search/proxy.py). A texture term would have to rank the students at that stage as they rank
distilled. The feature distance is a set statistic, noisy across seeds (the same 3x3 student:
6.8, 14.2, 9.7); this uses a paired one: per image, |features(student) - features(teacher)| /
|features(teacher)| on the photo feature net (the one the feature distance uses), averaged.

For each distilled student found under the given benchmark dirs (`*/student/metrics.json`), its
paired feature error on the held-out crops; then each distinct architecture scored as the proxy
scores it (two seeds, the search's pool and 64 px validation crops), with the same error. Writes
benchmarks/results/search_texture.json and .md (--name), prints the CPU. `--proxy-steps 1000` asks
whether a longer pixel-KD proxy would see it (search_texture_1000steps.md: no, it ranks worse).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from edgedistill.core.atomic import write_text_atomic
from edgedistill.data.sources import make_source
from edgedistill.distiller.evaluate import run_batched
from edgedistill.metrics.feature_distance import FeatureNet, load_feature_net
from edgedistill.models.loading import load_generator
from edgedistill.runtime.hostinfo import host_info
from edgedistill.search import proxy
from edgedistill.search import space as sp

RESULTS = Path(__file__).parent / "results"
TEACHER = "photo-restore"


def paired_feature_error(
    net: FeatureNet, spec, student_out: torch.Tensor, teacher_out: torch.Tensor
) -> float:
    """Mean over images of the student's feature error relative to the teacher's feature norm."""
    es, et = net.embed(spec.to_pixels(student_out)), net.embed(spec.to_pixels(teacher_out))
    return float(((es - et).norm(dim=1) / et.norm(dim=1)).mean())


def label(cfg: dict, space) -> str:
    arch = cfg.get("arch")
    return sp.describe(sp.canonical(space, arch)) if arch else f"uniform {cfg['width']:g}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "dirs", type=Path, nargs="+", help="benchmarks/search.py scratch dirs of one target and budget"
    )
    ap.add_argument("--proxy-seeds", type=int, default=2)
    ap.add_argument("--proxy-steps", type=int, default=300, help="the proxy's KD steps (the search's: 300)")
    ap.add_argument("--name", default="search_texture", help="results file stem")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_generator(TEACHER)
    spec, t_net = teacher.spec, teacher.module
    space = sp.space_for(spec)
    net = load_feature_net(TEACHER)
    src = make_source(TEACHER, spec, None, 0, 64)  # as search() makes its proxy's data
    pdata = proxy.proxy_data(t_net, spec, src)
    held = src.heldout()
    with torch.no_grad():
        held_t = run_batched(t_net, held)

    distilled: dict[str, list[dict]] = {}
    archs: dict[str, dict] = {}
    for metrics_path in sorted(p for d in args.dirs for p in d.glob("*/student/metrics.json")):
        run = metrics_path.parent
        cfg = json.loads((run / "config.json").read_text())
        name = label(cfg, space)
        archs[name] = cfg.get("arch") or sp.uniform_arch(space, cfg["width"])
        with torch.no_grad():
            err = paired_feature_error(
                net, spec, run_batched(load_generator(str(run)).module.eval(), held), held_t
            )
        m = json.loads(metrics_path.read_text())
        row = {"run": str(run.parent), "seed": cfg.get("seed", 0), "feature_error": round(err, 4),
               "feature_distance": m.get("feature_distance"), "psnr_vs_teacher": m["psnr_vs_teacher"]}  # fmt: skip
        distilled.setdefault(name, []).append(row)
        print(f"distilled {name} seed {row['seed']}: {row}", flush=True)

    proxied: dict[str, list[dict]] = {}
    for name, arch in archs.items():
        for seed in range(args.proxy_seeds):
            student, scored = proxy.scored_student(
                t_net, spec, sp.canonical(space, arch), pdata, steps=args.proxy_steps, seed=seed
            )
            student.eval()
            with torch.no_grad():
                err = paired_feature_error(net, spec, run_batched(student, pdata.val), pdata.val_out)
            row = {
                "seed": seed,
                "feature_error": round(err, 4),
                "psnr": round(scored.psnr, 3),
            }
            proxied.setdefault(name, []).append(row)
            print(f"proxy {name} seed {seed}: {row}", flush=True)

    seeds = lambda rows: ", ".join(f"{r['feature_error']:.3f}" for r in rows)  # noqa: E731
    mean = lambda rows, k: statistics.fmean(r[k] for r in rows if r.get(k) is not None)  # noqa: E731
    host = host_info(args.threads)
    lines = [f"{host['cpu']} ({', '.join(host['isa'])}), {TEACHER}; feature error = per image |f(student) - "
             "f(teacher)| / |f(teacher)| on the photo feature net, mean; distilled: held-out crops, "
             f"proxy: the search's fine-tune, {args.proxy_steps} steps, on its 64 px validation crops", "",
             "| student | distilled seeds | distilled PSNR vs teacher | distilled feature distance | "
             "distilled feature error | proxy PSNR | proxy feature error |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name in archs:
        d, p = distilled[name], proxied[name]
        lines.append(f"| {name} | {len(d)} | {mean(d, 'psnr_vs_teacher'):.2f} | {mean(d, 'feature_distance'):.2f} | "
                     f"{mean(d, 'feature_error'):.3f} ({seeds(d)}) | "
                     f"{mean(p, 'psnr'):.2f} | {mean(p, 'feature_error'):.3f} |")  # fmt: skip
    from scipy.stats import spearmanr

    rho = {k: float(spearmanr([mean(proxied[n], pk) for n in archs], [mean(distilled[n], dk) for n in archs]).statistic)
           for k, pk, dk in (("psnr", "psnr", "psnr_vs_teacher"), ("feature_error", "feature_error", "feature_error"))}  # fmt: skip
    lines += ["", f"Spearman, proxy vs distilled over the {len(archs)} architectures: PSNR {rho['psnr']:+.2f}, "
              f"feature error {rho['feature_error']:+.2f}"]  # fmt: skip
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "host": host,
        "distilled": distilled,
        "proxy": proxied,
    }
    write_text_atomic(RESULTS / f"{args.name}.json", json.dumps(out, indent=2) + "\n")
    write_text_atomic(RESULTS / f"{args.name}.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
