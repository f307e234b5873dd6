"""Does the proxy's lead over the uniform student predict the distilled lead, seed after seed?

    python benchmarks/search_proxy_gap.py                 # every row of search.json whose search is in scratch/
    python benchmarks/search_proxy_gap.py --seeds 1 2 3   # proxy seeds re-scored (seed 0: the search's own)

For each row of `benchmarks/results/search.json` (benchmarks/search.py) whose search left its
`search.json` under scratch/search/bench/, the searched and the uniform student's short-KD proxy
(search/proxy.py, as search() scores them: 300 steps, the pool of seed S, training seed S) is scored
again with other seeds. Reports, per row, the proxy's lead (searched − uniform, dB) over seeds, mean
± sd, beside the distilled lead (mean over the row's distillation seeds). The search's choice is only
worth a new architecture when what distillation keeps of the proxy's lead is beyond distillation's own
seed spread: this says how much it keeps (search/api.py: PROXY_TIE_DB).
Writes benchmarks/results/search_proxy_gap.json/.md; prints the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from edgedistill.core.atomic import write_text_atomic
from edgedistill.data.sources import make_source
from edgedistill.models.loading import load_generator
from edgedistill.runtime.hostinfo import host_info
from edgedistill.search import proxy
from edgedistill.search import space as sp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
BENCH = ROOT / "scratch" / "search" / "bench"


def rows_with_search(teacher: str) -> list[tuple[dict, dict]]:
    """(benchmark row, its search.json) for rows whose search chose an architecture and scored a baseline."""
    rows = json.loads((RESULTS / "search.json").read_text())["rows"]
    out = []
    for r in rows:
        found = BENCH / f"{r['target']}-{r['budget_ms']:g}ms" / "search" / "search.json"
        if r.get("same_as_uniform") or not found.is_file():
            continue
        s = json.loads(found.read_text())
        if s.get("teacher") == teacher and (s.get("uniform") or {}).get("proxy_psnr") is not None:
            out.append((r, s))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="photo-restore")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="proxy seeds scored again")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_generator(args.teacher)
    spec, t_net = teacher.spec, teacher.module.eval()
    space = sp.space_for(spec)
    pools = {}
    results = []
    for row, found in rows_with_search(args.teacher):
        archs = {
            "searched": sp.canonical(space, found["chosen"]["arch"]),
            "uniform": found["uniform"]["arch"],
        }
        leads = [found["chosen"]["proxy_psnr"] - found["uniform"]["proxy_psnr"]]  # seed 0: the search's
        for seed in args.seeds:
            if seed not in pools:
                pools[seed] = proxy.proxy_data(t_net, spec, make_source(args.teacher, spec, None, seed, 64))
            psnr = {k: proxy.score(t_net, spec, a, pools[seed], seed=seed).psnr for k, a in archs.items()}
            leads.append(psnr["searched"] - psnr["uniform"])
            print(
                f"{row['target']} {row['budget_ms']:g} ms seed {seed}: proxy lead {leads[-1]:+.2f} dB",
                flush=True,
            )
        results.append({
            "target": row["target"], "budget_ms": row["budget_ms"], "searched": sp.describe(archs["searched"]),
            "uniform_width": row["uniform_width"], "proxy_leads_db": [round(x, 3) for x in leads],
            "proxy_lead_db": round(statistics.mean(leads), 3), "proxy_lead_sd": round(statistics.stdev(leads), 3),
            "distilled_lead_db": round(row["searched"]["psnr_vs_teacher"] - row["uniform"]["psnr_vs_teacher"], 3),
            "distilled_seeds": row["searched"].get("seeds", 1),
        })  # fmt: skip
    host = host_info(args.threads)
    lines = [
        f"{host['cpu']} ({', '.join(host['isa'])}), {args.threads} threads; proxy seeds 0 (the search's) and "
        f"{', '.join(map(str, args.seeds))}",
        "",
        "| target | budget ms | searched | proxy lead per seed (dB) | proxy lead mean ± sd | distilled lead (dB) |",
        "|---|---:|---|---|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['target']} | {r['budget_ms']:g} | {r['searched']} vs --width {r['uniform_width']} | "
            f"{', '.join(f'{x:+.2f}' for x in r['proxy_leads_db'])} | {r['proxy_lead_db']:+.2f} ± {r['proxy_lead_sd']:.2f} | "
            f"{r['distilled_lead_db']:+.2f} ({r['distilled_seeds']} seeds) |"
        )  # fmt: skip
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / "search_proxy_gap.md", "\n".join(lines) + "\n")
    payload = {"host": host, "args": vars(args), "rows": results}
    write_text_atomic(RESULTS / "search_proxy_gap.json", json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
