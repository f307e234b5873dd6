"""The ARM targets' artifacts, run by an aarch64 ONNX Runtime under emulation, checked against x86.

    sudo .venv/bin/python scripts/arm64_check.py [--out DIR] [--json FILE] [--markdown FILE] [--ledger FILE]

On an x86_64 Debian/Ubuntu host with root it builds (once; cached under scratch/arm64/, keyed by
its package list: arm64_userland.py) a Debian bookworm arm64 userland with mmdebstrap, installs the
aarch64 wheels of this venv's onnxruntime, numpy and pillow there with pip, and runs it with
qemu-user through binfmt_misc. It exports a tiny ResNet student (32x32) for every precision of every aarch64 target
(targets/*.toml), bundles each (`edgedistill bundle`), and runs each bundle's own standalone
run_model.py (through arm64_probe.py) twice on the same inputs: here (x86) and in the userland (aarch64, as a Cortex-A76,
then a Cortex-A72, the Raspberry Pi 5's and 4's cores). It compares the outputs (tolerance per
precision, TOLERANCE below) and records which execution provider ran each node there (ORT's
session profiling). It writes the result as JSON, as Markdown rows, and as its where-it-ran ledger
(benchmarks/results/where_it_ran/arm64.json: `python scripts/where_it_ran.py` puts it in README).

Correctness only: under qemu a millisecond says nothing about an ARM device, so no time the
emulated runs take is reported as latency (the JSON's `check_wall_s` is how long this check took).

Where the host cannot do it (not x86_64 Linux, no root, no apt-get for the missing tools, no
binfmt_misc) it prints one line saying what is missing and exits 3; a mismatch exits 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its siblings, run as a script or loaded by path
from arm64_userland import (
    CACHE,
    Unavailable,
    cached_userland,
    chroot,
    ensure_binfmt,
    ensure_host_tools,
    host_problem,
    userland,
    userland_env,
)

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().with_name("arm64_probe.py")  # copied beside the bundles, run on both sides
CPUS = ("cortex-a76", "cortex-a72")  # QEMU_CPU: Pi 5 (Armv8.2: fp16, dot product), Pi 4 (Armv8.0)
SIZE = 32
JOB = "root/arm64-check"  # where a run's bundles are unzipped inside the userland (one folder per run)
# Max |x86 - aarch64| on outputs in [-1, 1]. fp32: kernels differ (NEON vs AVX) only in summation
# order. fp16: the ARM CPU EP may compute in fp16 where x86 converts to fp32 (10-bit mantissa).
# int8: an activation may round to the neighbouring level on one side; the step is per model, so
# the bound is INT8_STEPS of the largest activation step, carried through the float last layer.
TOLERANCE = {"fp32": 1e-5, "fp16": 1e-2}
INT8_STEPS = 3


# ------------------------------------------------------------------------------- the artifacts
def student_run(root: Path) -> Path:
    """A tiny ResNet generator (ngf 8, 2 blocks, BatchNorm) whose output visibly depends on its input (models/probe.py)."""
    from edgedistill.models.probe import probe_run

    return probe_run(root, SIZE, ngf=8, n_blocks=2, seed=1)


def photo_crops(count: int, size: int, split: str, seed: int) -> np.ndarray:
    """(count, 3, size, size) crops of the bundled photos in [0, 1]: real activation ranges."""
    import torch

    from edgedistill.data.bundled import bundled_photos, random_crops

    return random_crops(bundled_photos(split), count, size, torch.Generator().manual_seed(seed)).numpy()


def calibration_folder(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(photo_crops(40, 48, "train", 0)):
        Image.fromarray((crop.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def arm_cases() -> list[tuple[str, str]]:
    """(target, precision) for every precision of every aarch64 ONNX Runtime target profile.

    The Jetsons are aarch64 too, but their TensorRT engines are built on the device
    (scripts/tensorrt_check.py); no emulator runs a GPU.
    """
    from edgedistill.core.targets import load_targets

    targets = load_targets().values()
    return [
        (t.name, p)
        for t in targets
        if t.arch == "aarch64" and t.backend == "onnxruntime"
        for p in t.precisions
    ]


def export_bundles(out: Path, log=print) -> dict[str, dict]:
    """Export the student for each ARM case here (x86) and bundle it: case -> zip and export facts."""
    import edgedistill
    from edgedistill.ship.bundle import bundle

    run, photos = student_run(out), calibration_folder(out / "calibration")
    made = {}
    for target, precision in arm_cases():
        name = f"{target}-{precision}"
        art = edgedistill.export(
            str(run), target, out / name, precision=precision, size=(SIZE, SIZE), calib_data=photos,
            calib_size=32, holdout=4, min_psnr=20.0, threads=1, log=lambda _m: None,
        )  # fmt: skip
        made[name] = {
            "target": target,
            "precision": precision,
            "zip": bundle(art.out, out / f"{name}.zip").path,
            "files": art.manifest["files"],
            "gate_psnr_vs_fp32": art.manifest["quality"]["psnr_vs_fp32"],
            "tolerance": tolerance(precision, art.out),
        }
        log(f"exported and bundled {name}: {', '.join(art.manifest['files'])}")
    return made


def tolerance(precision: str, folder: Path) -> float:
    """The bound on max |x86 - aarch64| (see TOLERANCE); int8's from the export's own QDQ scales."""
    if precision != "int8":
        return TOLERANCE[precision]
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / "model.onnx"))  # .ort exports keep their QDQ .onnx beside
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scales = [float(inits[n.input[1]].max()) for n in model.graph.node
              if n.op_type == "QuantizeLinear" and n.input[1] in inits]  # fmt: skip
    return INT8_STEPS * max(scales)


def inputs() -> np.ndarray:
    """What both sides run: held-out photo crops, mapped to the model's input range [-1, 1]."""
    return (photo_crops(3, SIZE, "heldout", 1) * 2 - 1).astype(np.float32)


# ------------------------------------------------------------------------------ the comparison
def stage(made: dict[str, dict], job: Path, x: np.ndarray) -> None:
    """Unzip every bundle into job/<case>/ beside the shared inputs and the probe (arm64_probe.py)."""
    shutil.rmtree(job, ignore_errors=True)
    job.mkdir(parents=True)
    for name, case in made.items():
        with zipfile.ZipFile(case["zip"]) as zf:
            zf.extractall(job / name)
    np.save(job / "inputs.npy", x)
    shutil.copy2(PROBE, job / PROBE.name)


def run_probe(cmd: list[str], job: Path, what: str, env: dict[str, str] | None, timeout: float) -> dict:
    """Run the probe over `job`; its report, with each case's outputs loaded."""
    for old in job.glob("*/outputs.npy"):
        old.unlink()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the probe failed {what}: {done.stderr.strip()[-800:]}")
    report = json.loads((job / "probe.json").read_text())
    for name, case in report["cases"].items():
        case["outputs"] = np.load(job / name / "outputs.npy")
    return report


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(f"{np.max(np.abs(a.astype(np.float64) - b)):.3g}")


def compare(made: dict[str, dict], x86: dict, arm: dict, first: dict | None) -> dict:
    """Per case: max |x86 - aarch64| against its bound, and where the nodes ran on aarch64."""
    rows = {}
    for name, case in made.items():
        ref, got = x86["cases"][name], arm["cases"].get(name)
        if got is None:
            rows[name] = {"ran": False, "within_tolerance": False}
            continue
        err = max_abs(got["outputs"], ref["outputs"])
        rows[name] = {
            "ran": True,
            "model_file": got["model_file"],
            "max_abs_err": err,
            "tolerance": float(f"{case['tolerance']:.3g}"),
            "within_tolerance": err <= case["tolerance"],
            "output_std": float(f"{ref['outputs'].std():.3g}"),  # a flat output would match anything
            "requested_providers": got["requested_providers"],
            "providers": got["providers"],
            "nodes": got["nodes"],
        }
        if first is not None:  # the same aarch64 wheel on another core: which kernels differ
            rows[name]["max_abs_err_vs_first_cpu"] = max_abs(got["outputs"], first["cases"][name]["outputs"])
    return rows


def check(out: Path, cpus: tuple[str, ...] = CPUS, build: bool = True, build_timeout: float | None = None,
          cache: Path = CACHE, log=print) -> dict:  # fmt: skip
    """Export, bundle, run on both sides, compare. Raises Unavailable when the host cannot."""
    started = time.monotonic()
    if (why := host_problem()) is not None:
        raise Unavailable(why)
    if not build and cached_userland(cache) is None:
        userland(build=False, cache=cache)  # raises the one line saying how to build it
    if build:
        ensure_host_tools()
    ensure_binfmt()
    t0 = time.monotonic()
    walls = {"userland_cached": cached_userland(cache) is not None}
    land = userland(build=build, timeout=build_timeout, cache=cache)
    walls["userland_s"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    made = export_bundles(out, log)
    walls["export_s"] = round(time.monotonic() - t0, 1)
    rootfs = land / "rootfs"
    job = rootfs / JOB / str(os.getpid())  # one folder per check: two checks may share the userland
    stage(made, job, inputs())
    try:
        result = compare_runs(made, rootfs, job, cpus, walls, log)
    finally:
        shutil.rmtree(job, ignore_errors=True)
    result["userland"] = json.loads((land / "userland.json").read_text())
    walls["total_s"] = round(time.monotonic() - started, 1)
    result["check_wall_s"] = walls
    return result


def compare_runs(made: dict[str, dict], rootfs: Path, job: Path, cpus: tuple[str, ...], walls: dict,
                 log) -> dict:  # fmt: skip
    """The probe here, then in the userland once per emulated core; each compared with here."""
    t0 = time.monotonic()
    x86 = run_probe([sys.executable, str(job / PROBE.name), str(job)], job, "on x86", None, 600)
    walls["x86_s"] = round(time.monotonic() - t0, 1)
    exports = {name: {k: v for k, v in case.items() if k != "zip"} for name, case in made.items()}
    for name, case in x86["cases"].items():
        exports[name]["x86"] = {"ran": True, "providers": case["providers"], "nodes": case["nodes"]}
    result = {"host": {"machine": platform.machine(), "onnxruntime": x86["onnxruntime"],
                       "providers": x86["available_providers"]}, "exports": exports, "runs": {}}  # fmt: skip
    inside = f"/{job.relative_to(rootfs)}"
    first = None
    for cpu in cpus:
        t0 = time.monotonic()
        cmd = [chroot(), str(rootfs), "/usr/bin/python3", f"{inside}/{PROBE.name}", inside]
        arm = run_probe(cmd, job, f"in the aarch64 userland ({cpu})", userland_env(cpu), 1200)
        walls[f"emulated_probe_{cpu}_s"] = round(time.monotonic() - t0, 1)
        result["runs"][cpu] = {"machine": arm["machine"], "onnxruntime": arm["onnxruntime"],
                               "cpu_features": arm["cpu_features"], "available_providers": arm["available_providers"],
                               "cases": compare(made, x86, arm, first)}  # fmt: skip
        first = first or arm
        for name, row in result["runs"][cpu]["cases"].items():
            log(f"{cpu} {name}: {summary(row)}")
    result["passed"] = all(
        r["within_tolerance"] for run in result["runs"].values() for r in run["cases"].values()
    )
    return result


def summary(row: dict) -> str:
    if not row["ran"]:
        return "did not run"
    verdict = "ok" if row["within_tolerance"] else "MISMATCH"
    return (
        f"{verdict}: max |err| {row['max_abs_err']:.3g} (bound {row['tolerance']:.3g}); {ops(row['nodes'])}"
    )


def ops(nodes: dict[str, dict[str, int]]) -> str:
    """`CPU: 7 QLinearConv, 2 Pad` for a placement table."""
    return "; ".join(
        f"{p.removesuffix('ExecutionProvider')}: {', '.join(f'{n} {op}' for op, n in counts.items())}"
        for p, counts in nodes.items()
    )


# ------------------------------------------------------------------------------------ the tables
def markdown(result: dict) -> str:
    """ "Where it has run" rows for the ARM targets and the aarch64 node placement, from a result."""
    runs, exports = result["runs"], result["exports"]
    ort = result["host"]["onnxruntime"]
    lines = [
        f"<!-- written by scripts/arm64_check.py from its JSON (onnxruntime {ort} on both sides, qemu-user "
        f"for aarch64). Bound on max |x86 - aarch64| (outputs in [-1, 1]): fp32 {TOLERANCE['fp32']:g}, "
        f"fp16 {TOLERANCE['fp16']:g}, int8 {INT8_STEPS:g} x the model's largest activation step. "
        "Emulated runs check correctness only: their times are not latencies. -->",
        "| target | precision | built here (x86) | run here (x86) | run on aarch64 runtime (emulated) |",
        "|---|---|---|---|---|",
    ]
    for name, case in exports.items():
        built = f"yes: {', '.join(case['files'][:1])}, gate {case['gate_psnr_vs_fp32']:.1f} dB vs fp32"
        here = "yes: bundle's run_model.py" if case.get("x86", {}).get("ran") else "no"
        cells = [arm_cell(cpu, run["cases"][name]) for cpu, run in runs.items()]
        lines.append(f"| {case['target']} | {case['precision']} | {built} | {here} | {'; '.join(cells)} |")
    lines += ["", "| case | emulated core (features) | execution providers asked → used | nodes by provider |",
              "|---|---|---|---|"]  # fmt: skip
    for name in exports:
        for cpu, run in runs.items():
            row = run["cases"][name]
            if not row["ran"]:
                continue
            asked = "+".join(p.removesuffix("ExecutionProvider") for p in row["requested_providers"])
            used = "+".join(p.removesuffix("ExecutionProvider") for p in row["providers"])
            features = ", ".join(run["cpu_features"] or []) or "Armv8.0 base"
            lines.append(f"| {name} | {cpu} ({features}) | {asked} → {used} | {ops(row['nodes'])} |")
    return "\n".join(lines) + "\n"


def arm_cell(cpu: str, row: dict) -> str:
    if not row["ran"]:
        return f"{cpu}: did not run"
    verdict = "matches x86" if row["within_tolerance"] else "**differs from x86**"
    return f"{cpu}: {verdict} (max abs {row['max_abs_err']:.2g} ≤ {row['tolerance']:.2g})"


# ------------------------------------------------------------------- the where-it-ran ledger
def where_it_ran_module():
    """scripts/where_it_ran.py (the ledger format and README table), imported by path."""
    if "where_it_ran" not in sys.modules:
        spec = importlib.util.spec_from_file_location("where_it_ran", ROOT / "scripts" / "where_it_ran.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["where_it_ran"] = module
        spec.loader.exec_module(module)
    return sys.modules["where_it_ran"]


def ledger(result: dict, command: str | None = None):
    """This run as README's "Where it has run" cells: built and run here, and on the emulated cores."""
    cores = ", ".join(result["runs"])
    led = where_it_ran_module().new_ledger(
        "arm64",
        f"scripts/arm64_check.py: each bundle's run_model.py on x86 and in an arm64 Debian userland under "
        f"qemu-user ({cores}), outputs compared (correctness only, emulated times are no latencies)",
        command,
    )
    for name, case in result["exports"].items():
        target, precision = case["target"], case["precision"]
        led.add(target, precision, "built", "pass",
                f"{case['files'][0]}, gate {case['gate_psnr_vs_fp32']:.1f} dB vs fp32")  # fmt: skip
        ran_here = case.get("x86", {}).get("ran")
        led.add(target, precision, "run_x86", "pass" if ran_here else "fail",
                "bundle's run_model.py" if ran_here else "the bundle's run_model.py did not run")  # fmt: skip
        rows = {cpu: run["cases"][name] for cpu, run in result["runs"].items()}
        ok = all(r["ran"] and r["within_tolerance"] for r in rows.values())
        available = next(iter(result["runs"].values())).get("available_providers", [])
        led.add(target, precision, "run_aarch64", "pass" if ok else "fail", aarch64_detail(rows, available))
    return led


def aarch64_detail(rows: dict[str, dict], available: list[str] | None = None) -> str:
    """`max abs vs x86: cortex-a76 0.03, cortex-a72 0.03 (bound 0.1); EP Xnnpack+CPU → CPU` for one case;
    when an asked provider is not in the wheel at all, it says so (PyPI's aarch64 onnxruntime has no
    XNNPACK: only the Android/iOS packages carry it)."""
    ran = [(cpu, row) for cpu, row in rows.items() if row["ran"]]
    errs = [
        f"{cpu} {row['max_abs_err']:.2g}" + ("" if row["within_tolerance"] else " (over)") for cpu, row in ran
    ]
    errs += [f"{cpu} did not run" for cpu, row in rows.items() if not row["ran"]]
    if not ran:
        return ", ".join(errs)
    first = ran[0][1]
    asked = "+".join(p.removesuffix("ExecutionProvider") for p in first["requested_providers"])
    used = "+".join(p.removesuffix("ExecutionProvider") for p in first["providers"])
    ep = f"EP {asked} → {used}" if asked != used else f"EP {used}"
    missing = [
        p.removesuffix("ExecutionProvider")
        for p in first["requested_providers"]
        if available and p not in available
    ]
    if missing:
        ep += f" ({'+'.join(missing)} is not in this onnxruntime wheel)"
    return f"max abs vs x86: {', '.join(errs)} (bound {first['tolerance']:.2g}); {ep}"


def write_text(path: Path, text: str) -> None:
    from edgedistill.core.atomic import write_atomic

    write_atomic(path, lambda tmp: tmp.write_text(text))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=CACHE / "check", help="exports and bundles go here")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "arm64_check.json")
    ap.add_argument("--markdown", type=Path, default=ROOT / "benchmarks" / "results" / "arm64_check.md")
    ap.add_argument(
        "--cpu", action="append", help=f"QEMU_CPU to emulate (repeatable; default {', '.join(CPUS)})"
    )
    ap.add_argument("--ledger", type=Path, default=ROOT / "benchmarks" / "results" / "where_it_ran" / "arm64.json",
                    help="the where-it-ran ledger (scripts/where_it_ran.py puts it in README)")  # fmt: skip
    ap.add_argument("--no-build", action="store_true", help="use a cached userland only; never build one")
    ap.add_argument("--cache", type=Path, default=CACHE, help="where userlands are built and kept")
    args = ap.parse_args(argv)
    try:
        result = check(args.out, tuple(args.cpu or CPUS), build=not args.no_build, cache=args.cache)
    except Unavailable as exc:
        print(f"arm64 check not run: {exc}", file=sys.stderr)
        return 3
    write_text(args.json, json.dumps(result, indent=2) + "\n")
    write_text(args.markdown, markdown(result))
    ledger(result).write(args.ledger)
    print(
        f"wrote {args.json}, {args.markdown} and {args.ledger}; check wall times (not latencies): "
        f"{result['check_wall_s']}"
    )
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run from a bare checkout, installed or not
    sys.exit(main())
