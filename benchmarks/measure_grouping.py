"""Does a whole model's measured latency depend on how many models share its timing session?

    python benchmarks/measure_grouping.py --search scratch/search/bench/x86-openvino-10.12ms/search

The search times its finalists whole, together in one interleaved session (search/latency.py), then
any re-anchored additions in a second, smaller one, and reads the median measured/predicted ratio as
the table's scale error. If a session of five ran each model slower than a session of two (caches
shared by more models, longer rounds), that ratio would be the session's, not the table's. This
compiles the search's measured candidates once, as the search does, then times them in sessions of
every size the search uses (all of them, the first five, the last two, each alone), in rounds that
alternate the order, and prints each model's p50 per session size beside its prediction.
Writes benchmarks/results/measure_grouping.json and .md; prints the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.targets import Target, get_target
from edgedistill.models.loading import load_generator
from edgedistill.runtime.hostinfo import host_info
from edgedistill.search import space as sp
from edgedistill.search.latency import compile_whole, time_compiled

RESULTS = Path(__file__).parent / "results"


@dataclass
class Measured:
    """A search's candidates that it measured whole (its finalists), to be timed again."""

    found: dict[str, Any]  # the search's search.json
    spec: Any
    tgt: Target
    size: tuple[int, int]
    cands: list[dict[str, Any]]
    names: list[str]

    def compile(self, work: Path) -> list[Path]:
        """Each candidate compiled once, as the search compiles it (search/latency_compile.py)."""
        space = sp.space_for(self.spec)
        return [compile_whole(sp.build(self.spec, sp.canonical(space, c["arch"])), self.spec, self.tgt, self.size,
                              work / f"m{i}") for i, c in enumerate(self.cands)]  # fmt: skip


def load_measured(search_dir: Path) -> Measured:
    found = json.loads((search_dir / "search.json").read_text())
    spec = load_generator(found["teacher"]).spec
    space = sp.space_for(spec)
    cands = [c for c in found["candidates"] if c.get("measured_ms")]
    size = tuple(found["size"] or spec.default_size or (256, 256))
    names = [sp.describe(sp.canonical(space, c["arch"])) for c in cands]
    return Measured(found, spec, get_target(found["target"], found["precision"]), size, cands, names)  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--search", type=Path, required=True, help="a search's out dir (its search.json)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--rounds", type=int, default=3, help="each grouping timed this often, orders alternating"
    )
    args = ap.parse_args()
    run = load_measured(args.search)
    found, tgt, measured, names = run.found, run.tgt, run.cands, run.names
    n = len(measured)
    groups = {"all": list(range(n)), "first 5": list(range(min(5, n))), "last 2": list(range(max(0, n - 2), n)),
              **{f"alone {i}": [i] for i in range(n)}}  # fmt: skip
    times: dict[str, dict[int, list[float]]] = {g: {i: [] for i in idx} for g, idx in groups.items()}
    with tempfile.TemporaryDirectory(prefix="edgedistill-grouping-") as work:
        dirs = run.compile(Path(work))
        for r in range(args.rounds):
            order = list(groups.items()) if r % 2 == 0 else list(groups.items())[::-1]
            for g, idx in order:
                ms = time_compiled([dirs[i] for i in idx], tgt, threads=args.threads)
                for i, t in zip(idx, ms, strict=True):
                    times[g][i].append(t)
                print(f"round {r} {g:>8}: " + ", ".join(f"{t:.2f}" for t in ms), flush=True)
    rows = []
    for i, (c, name) in enumerate(zip(measured, names, strict=True)):
        row = {
            "arch": name,
            "predicted_ms": round(c["predicted_ms"], 2),
            "search_measured_ms": round(c["measured_ms"], 2),
        }
        for g in ("all", "first 5", "last 2", f"alone {i}"):
            if i in times[g]:
                row["alone" if g.startswith("alone") else g] = round(statistics.median(times[g][i]), 2)
        rows.append(row)
    host = host_info(args.threads)
    cols = ["predicted_ms", "search_measured_ms", "all", "first 5", "last 2", "alone"]
    lines = [f"{host['cpu']} ({', '.join(host['isa'])}), {args.threads} threads, {found['target']} {found['precision']}; "
             f"median of {args.rounds} sessions per grouping (ms)", "",
             "| architecture | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]  # fmt: skip
    for row in rows:
        lines.append(f"| {row['arch']} | " + " | ".join(str(row.get(k, "")) for k in cols) + " |")
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "host": host, "rows": rows,
           "sessions_ms": {g: {str(i): v for i, v in t.items()} for g, t in times.items()}}  # fmt: skip
    write_text_atomic(RESULTS / "measure_grouping.json", json.dumps(out, indent=2) + "\n")
    write_text_atomic(RESULTS / "measure_grouping.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
