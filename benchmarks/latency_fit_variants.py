"""Which whole-model fit? Variants of the latency model's fit, scored offline on what
benchmarks/latency_model.py already measured (it times nothing).

    python benchmarks/latency_fit_variants.py [--bench scratch/latency/bench]

Why: one scale c on all blocks over-predicts candidates that upsample by resize or PixelShuffle
(their blocks cost more timed alone than inside the model). Each variant splits a model's blocks'
ms into kinds and fits a scale per group:

    sum            the blocks' sum, no fit
    i              a + b*k + c*blocks                      (the fit before TABLE_FORMAT 4, with its fallbacks)
    ii             a + b*k + c*other + d*up                (up: ConvTranspose, Resize+conv, conv+DepthToSpace)
    ii guarded     ii as search/latency_fit.overhead_fit keeps it (else i): what the library does now
    iii 4p         a + b*k + c*(other + convT) + d*(resize + pixelshuffle)
    iii 5p         a + b*k + c*other + d*(resize + pixelshuffle) + e*convT
    iii 6p         a + b*k + c*other + d*resize + e*pixelshuffle + f*convT

Scored as within ±10 % and median |error| over the 20 candidates, three ways:
    refs   fitted on the 8 reference models, predicting the candidates (the benchmark's protocol)
    loo    leave one candidate out: fitted on the other 19 candidates (no references)
    all    fitted on all 20 candidates: the best the form can do on them (not a prediction)

Data: the idle run is plan.json + timings.json in each config folder (per block ms, per model whole
ms), the same numbers as benchmarks/results/latency_model.json. The loaded run
(latency_model_loaded.json) kept per candidate only its blocks' sum: its timings.json was overwritten
by the idle run, so its references are gone (refs cannot be scored, but for i, whose fit it stored)
and a candidate's split is its loaded sum shared out as the idle run's blocks share it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgedistill.search.latency_fit import is_upsampling, overhead_fit, whole_ms  # noqa: E402

KINDS = ("other", "convtranspose", "resize", "pixelshuffle")
RESULTS = ROOT / "benchmarks" / "results"
Fit = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def block_kind(desc: str) -> str:
    """Which group a block's ms goes to (the library's test for upsampling, then which op)."""
    if not is_upsampling(desc):
        return "other"
    if desc.startswith("ConvTranspose"):
        return "convtranspose"
    return "pixelshuffle" if "+DepthToSpace" in desc else "resize"


def model_rows(d: Path) -> dict[str, dict[str, Any]]:
    """Per model of one config folder: role, arch, kernels, ms per block kind, measured whole ms."""
    plan = json.loads((d / "plan.json").read_text())
    tim = json.loads((d / "timings.json").read_text())
    out = {}
    for name, m in plan["models"].items():
        parts = dict.fromkeys(KINDS, 0.0)
        kernels = 0
        for key in m["blocks"]:
            parts[block_kind(plan["blocks"][key]["desc"])] += tim["blocks"][key]["ms"]
            kernels += tim["blocks"][key]["kernels"]
        out[name] = {"role": m["role"], "arch": m["kwargs"], "kernels": kernels, "parts": parts,
                     "measured_ms": tim["whole"][name]["p50"]}  # fmt: skip
    return out


def matrix(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """X: kernels then ms per kind (KINDS order); y: measured whole ms."""
    x = np.array([[r["kernels"], *(r["parts"][k] for k in KINDS)] for r in rows], dtype=np.float64)
    return x, np.array([r["measured_ms"] for r in rows], dtype=np.float64)


# ------------------------------------------------------------------------------------------ variants
def _linear(columns: Callable[[np.ndarray], np.ndarray]) -> Fit:
    """Plain least squares on the given columns (no guard): what the form does unprotected."""

    def fit(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        coef, *_ = np.linalg.lstsq(columns(x), y, rcond=None)
        return lambda xs: columns(xs) @ coef

    return fit


def _library(split: bool) -> Fit:
    """search/latency_fit.overhead_fit and whole_ms, with or without the upsampling split."""

    def fit(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        total, up = x[:, 1:].sum(1), x[:, 2:].sum(1)
        f = overhead_fit(x[:, 0].tolist(), total.tolist(), y.tolist(), up.tolist() if split else None)
        return lambda xs: np.array([whole_ms(f, r[1:].sum(), int(r[0]), r[2:].sum()) for r in xs])

    return fit


def _ones(x: np.ndarray) -> np.ndarray:
    return np.ones(len(x))


VARIANTS: dict[str, Fit] = {
    "sum": lambda x, y: lambda xs: xs[:, 1:].sum(1),
    "i": _library(split=False),
    "ii": _linear(lambda x: np.c_[_ones(x), x[:, 0], x[:, 1], x[:, 2:].sum(1)]),
    "ii guarded": _library(split=True),
    "iii 4p": _linear(lambda x: np.c_[_ones(x), x[:, 0], x[:, 1] + x[:, 2], x[:, 3] + x[:, 4]]),
    "iii 5p": _linear(lambda x: np.c_[_ones(x), x[:, 0], x[:, 1], x[:, 3] + x[:, 4], x[:, 2]]),
    "iii 6p": _linear(lambda x: np.c_[_ones(x), x[:, 0], x[:, 1], x[:, 3], x[:, 4], x[:, 2]]),
}


def score(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    err = 100 * (pred - y) / y
    return {"within_10pct": round(float(np.mean(np.abs(err) <= 10)), 3),
            "median_abs_err_pct": round(float(np.median(np.abs(err))), 2)}  # fmt: skip


def evaluate(fit: Fit, xr: np.ndarray | None, yr: np.ndarray | None, xc: np.ndarray, yc: np.ndarray) -> dict:
    """The three protocols for one variant (refs only where the references are known)."""
    out: dict[str, Any] = {}
    if xr is not None and yr is not None:
        out["refs"] = score(fit(xr, yr)(xc), yc)
    keep = np.ones(len(yc), dtype=bool)
    loo = []
    for i in range(len(yc)):
        keep[i] = False
        loo.append(fit(xc[keep], yc[keep])(xc[i : i + 1])[0])
        keep[i] = True
    out["loo"] = score(np.array(loo), yc)
    out["all"] = score(fit(xc, yc)(xc), yc)
    return out


def by_upsample(pred: np.ndarray, y: np.ndarray, archs: list[dict[str, Any]]) -> dict[str, float]:
    """Median signed error per candidate upsampling op: where a fit's bias sits."""
    err = 100 * (pred - y) / y
    ops = sorted({a.get("upsample", "convtranspose") for a in archs})
    return {
        op: round(
            float(np.median([e for e, a in zip(err, archs, strict=True) if a.get("upsample") == op])), 1
        )
        for op in ops
    }


# ------------------------------------------------------------------------------------------ runs
def run(bench: Path) -> dict[str, Any]:
    idle_res = json.loads((RESULTS / "latency_model.json").read_text())
    loaded_res = json.loads((RESULTS / "latency_model_loaded.json").read_text())
    out: dict[str, Any] = {"idle": {}, "loaded": {}, "notes": []}
    for d in sorted(p.parent for p in bench.glob("*/timings.json")):
        rows = model_rows(d)
        refs = [r for r in rows.values() if r["role"] == "ref"]
        names = [n for n, r in rows.items() if r["role"] == "cand"]
        cands = [rows[n] for n in names]
        xr, yr = matrix(refs)
        xc, yc = matrix(cands)
        archs = [r["arch"] for r in cands]
        # the idle run: the folder's own numbers; they must be the published ones
        pub = _config(idle_res, d.name)
        same = all(
            abs(sum(rows[r["model"]]["parts"].values()) - r["blocks_ms"]) < 2e-3
            and abs(rows[r["model"]]["measured_ms"] - r["measured_ms"]) < 2e-3
            for r in pub["rows"]
        )
        if not same:
            out["notes"].append(f"{d.name}: timings.json is not the run in latency_model.json")
        idle = {v: evaluate(f, xr, yr, xc, yc) for v, f in VARIANTS.items()}
        idle["_bias_by_upsample"] = {
            v: by_upsample(VARIANTS[v](xr, yr)(xc), yc, archs) for v in ("i", "ii guarded")
        }
        idle["_fit_on_refs"] = overhead_fit(
            xr[:, 0].tolist(), xr[:, 1:].sum(1).tolist(), yr.tolist(), xr[:, 2:].sum(1).tolist()
        )
        out["idle"][d.name] = idle
        # the loaded run: each candidate's loaded sum, shared out as its idle blocks share it
        lrows = {r["model"]: r for r in _config(loaded_res, d.name)["rows"]}
        xl = xc.copy()
        for i, n in enumerate(names):
            xl[i, 1:] *= lrows[n]["blocks_ms"] / xc[i, 1:].sum()
            xl[i, 0] = lrows[n]["kernels"]
        yl = np.array([lrows[n]["measured_ms"] for n in names])
        loaded = {v: evaluate(f, None, None, xl, yl) for v, f in VARIANTS.items()}
        loaded["sum"]["refs"] = score(xl[:, 1:].sum(1), yl)  # needs no references
        stored = _config(loaded_res, d.name)["overhead"]
        loaded["i"]["refs"] = score(np.array([whole_ms(stored, r[1:].sum(), int(r[0])) for r in xl]), yl)
        loaded["_bias_by_upsample"] = {
            "i": by_upsample(np.array([whole_ms(stored, r[1:].sum(), int(r[0])) for r in xl]), yl, archs)
        }
        out["loaded"][d.name] = loaded
    return out


def _config(res: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in res["configs"] if f"{c['target']}-{c['precision']}" == name)


def table(out: dict[str, Any]) -> str:
    """Markdown: variant x config, per run and protocol, 'within 10 % / median |err|'."""
    lines = []
    for run_name in ("idle", "loaded"):
        cfgs = list(out[run_name])
        for proto in ("refs", "loo", "all"):
            lines += [
                f"\n{run_name} run, {proto}: within ±10 % / median |error|",
                "",
                "| variant | " + " | ".join(cfgs) + " |",
                "|---" * (len(cfgs) + 1) + "|",
            ]
            for v in VARIANTS:
                cells = []
                for c in cfgs:
                    s = out[run_name][c][v].get(proto)
                    cells.append(
                        f"{100 * s['within_10pct']:.0f} % / {s['median_abs_err_pct']:.1f} %" if s else "n/a"
                    )
                lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines).lstrip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", type=Path, default=ROOT / "scratch" / "latency" / "bench")
    ap.add_argument("--results", type=Path, default=RESULTS / "latency_fit_variants.json")
    args = ap.parse_args()
    out = run(args.bench)
    text = table(out)
    for note in out["notes"]:
        text += f"\n\nnote: {note}"
    print(text)
    args.results.write_text(json.dumps(out, indent=1) + "\n")
    args.results.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
