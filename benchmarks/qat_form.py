"""Does the search time a QAT student as its export compiles it? Exported artifact vs the search's two
compile forms, whole models in interleaved profiles, one per target.

    python benchmarks/qat_form.py            # 2 students x 2 targets, ~6 min on 2 idle cores
    python benchmarks/qat_form.py --prepare-only   # the artifacts only (timing needs an idle machine)

`compress` distils INT8 students quantization-aware by default, and a QAT student exports otherwise
than a calibrated one (exporter/qat_export.py): no layer kept fp32, and OpenVINO from the QDQ ONNX
rather than NNCF. For each student (a short distillation with a QAT phase: latency does not hang on
how well it learned) and target, three artifacts of the same architecture:
  - export: what `export` writes from the QAT run (the thing the budget is about),
  - calibrated form: search/latency_compile.compile_whole as a calibrated student exports,
  - QAT form: the same with `as_qat_export(target)`, what the search now times for a QAT student on
    ONNX Runtime (on OpenVINO the search keeps NNCF, so both columns are the calibrated form; the
    committed results were measured while OpenVINO's QAT form converted the QDQ ONNX as export does),
profiled per target in --rounds interleaved runs. Reports each form's median ratio to the export.
Writes benchmarks/results/qat_form.{json,md}; prints the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).parent / "results"

TEACHER = "photo-restore"
# the half-budget students of benchmarks/search.py (Zen4): ORT's searched one, OpenVINO's uniform 0.1
ARCHS = {
    "searched 16-32-48-16-32": {
        "widths": [16, 32, 48, 16, 32],
        "kernel": 3,
        "n_blocks": 2,
        "upsample": "nearest",
    },
    "uniform 0.1": {"widths": [6, 12, 24, 12, 6]},
}
TARGETS = ("x86-onnxruntime", "x86-openvino")
FORMS = ("export", "calibrated form", "QAT form")


def prepare(out: Path, steps: int, qat_steps: int, threads: int) -> dict[tuple[str, str, str], Path]:
    """Per (student, target, form) the artifact directory; made once, reused by later runs."""
    from edgedistill.core.targets import get_target
    from edgedistill.distiller.api import distill
    from edgedistill.exporter.api import export
    from edgedistill.models.loading import load_generator
    from edgedistill.search import space as sp
    from edgedistill.search.latency_compile import as_qat_export, compile_whole

    spec = load_generator(TEACHER).spec
    arts: dict[tuple[str, str, str], Path] = {}
    for i, (name, arch) in enumerate(ARCHS.items()):
        run, net = out / f"s{i}", sp.build(spec, arch)
        if not (run / "qat.json").exists():
            distill(
                teacher=TEACHER, arch=arch, steps=steps, qat_steps=qat_steps, out=str(run), cache=64,
                eval_samples=16, val_every=0, threads=threads,
            )  # fmt: skip
        for tname in TARGETS:
            tgt = get_target(tname, "int8")
            exported = out / f"s{i}-{tname}" / "export"
            if not (exported / "manifest.json").exists():
                export(
                    run, tname, exported, min_psnr=None, calib_size=16, holdout=4, threads=threads, force=True
                )
            arts[name, tname, "export"] = exported
            for form, t in (("calibrated form", tgt), ("QAT form", as_qat_export(tgt))):
                d = out / f"s{i}-{tname}" / form.split()[0]
                if not (d / "art" / "manifest.json").exists():
                    compile_whole(net, spec, t, tuple(tgt.input_size), d)
                arts[name, tname, form] = d / "art"
    return arts


def profile(arts: dict[tuple[str, str, str], Path], rounds: int, min_time: float, threads: int) -> dict:
    """p50 per artifact and round; one interleaved profile per target. Why not all together: the first
    OpenVINO model after an ONNX Runtime one in a round measured ~10 % slower than its neighbours (its
    threads wake on other cores), a bias that lands on whichever form comes first."""
    from edgedistill.core.artifact import load_artifact
    from edgedistill.runtime.session import ProfileOptions, run_profile
    from edgedistill.runtime.sources import artifact_source

    opts = ProfileOptions(
        threads=threads, warmup=3, iterations=10, min_time=min_time, layers=0, roofline=False
    )
    p50s: dict[tuple[str, str, str], list[float]] = {k: [] for k in arts}
    for r in range(rounds):
        for tname in TARGETS:
            keys = [k for k in arts if k[1] == tname]
            sources = [
                artifact_source(load_artifact(arts[k]), str(arts[k]), f"m{j}") for j, k in enumerate(keys)
            ]
            report = run_profile(sources, opts)
            for k, m in zip(keys, report.models, strict=True):
                p50s[k].append(float(m.stats.p50))
        print(f"round {r + 1}/{rounds} done", flush=True)
    return p50s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "scratch" / "qat_form")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--qat-steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=6.0, help="seconds of measuring per target and round")
    ap.add_argument("--prepare-only", action="store_true", help="distil, export and compile; time nothing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", type=Path, default=RESULTS / "qat_form.json")
    args = ap.parse_args()

    from edgedistill.runtime.hostinfo import host_info

    host = host_info(args.threads)
    arts = prepare(args.out, args.steps, args.qat_steps, args.threads)
    if args.prepare_only:
        return
    p50s = profile(arts, args.rounds, args.min_time, args.threads)
    rows: list[dict[str, Any]] = []
    for name in ARCHS:
        for tname in TARGETS:
            base = p50s[name, tname, "export"]
            row: dict[str, Any] = {"student": name, "target": tname}
            for form in FORMS:
                ms = p50s[name, tname, form]
                ratios = [a / b for a, b in zip(ms, base, strict=True)]  # per round: one run's ratio
                row[form] = {
                    "ms": round(statistics.median(ms), 3),
                    "vs export": round(statistics.median(ratios), 3),
                    "vs export, min-max": [round(min(ratios), 3), round(max(ratios), 3)],
                }
            rows.append(row)
    cpu = f"{host['cpu']} ({', '.join(host['isa'])})"
    lines = [
        f"CPU: {cpu}, {args.threads} threads, {args.rounds} interleaved rounds; INT8, 256x256",
        "",
        "| student | target | export ms | calibrated form / export | QAT form / export |",
        "|---|---|---:|---|---|",
    ]
    for r in rows:
        cells = [f"{r[f]['vs export']:.3f} ({r[f]['vs export, min-max'][0]:.2f}-{r[f]['vs export, min-max'][1]:.2f})"
                 for f in FORMS[1:]]  # fmt: skip
        lines.append(
            f"| {r['student']} | {r['target']} | {r['export']['ms']:.2f} | " + " | ".join(cells) + " |"
        )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    from edgedistill.core.atomic import write_text_atomic

    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        args.results,
        json.dumps(
            {"host": host, "args": {k: _rel(v) for k, v in vars(args).items()}, "rows": rows}, indent=2
        )
        + "\n",
    )
    write_text_atomic(args.results.with_suffix(".md"), text)


def _rel(value: Any) -> str:
    """An argument as the results file records it: paths relative to the repository."""
    if isinstance(value, Path) and value.resolve().is_relative_to(ROOT):
        return str(value.resolve().relative_to(ROOT))
    return str(value)


if __name__ == "__main__":
    main()
