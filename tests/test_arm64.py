"""The ARM targets' artifacts on an aarch64 ONNX Runtime (qemu-user), against x86: scripts/arm64_check.py.

The emulated check needs root, binfmt_misc and an arm64 userland. It reuses the one cached under
scratch/arm64/ (built once by `sudo .venv/bin/python scripts/arm64_check.py`, ~2 min); it builds one
itself only when EDGEDISTILL_ARM64_BUILD=1 (as .ci/run sets it), within BUILD_TIMEOUT. Otherwise it skips with the
script's one line. The probe that runs on both sides is also tested here on x86 alone, everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "arm64_check.py"
BUILD_TIMEOUT = 600.0  # s; a cold build took ~1.5 min on a 2-core machine


@pytest.fixture(scope="module")
def arm64_check():
    spec = importlib.util.spec_from_file_location("arm64_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_arm_targets_match_x86_under_emulation(arm64_check, tmp_path: Path) -> None:
    """Every precision of every aarch64 ONNX Runtime target: same outputs on aarch64 as on x86.

    Emulates a Cortex-A76 (Raspberry Pi 5): it has fp16 arithmetic and dot product, so ORT takes
    its fp16 kernels there, which x86 never runs.
    """
    build = os.environ.get("EDGEDISTILL_ARM64_BUILD") == "1"
    try:
        result = arm64_check.check(
            tmp_path, cpus=("cortex-a76",), build=build, build_timeout=BUILD_TIMEOUT, log=lambda _m: None
        )
    except arm64_check.Unavailable as exc:
        pytest.skip(f"arm64 check not run: {exc}")
    run = result["runs"]["cortex-a76"]
    assert run["machine"] == "aarch64" and {"fp16", "dotprod"} <= set(run["cpu_features"])
    assert set(run["cases"]) == {f"{t}-{p}" for t, p in arm64_check.arm_cases()}
    for name, row in run["cases"].items():
        assert row["ran"] and row["within_tolerance"], f"{name}: {arm64_check.summary(row)}"
        assert row["output_std"] > 0.05, f"{name}: a flat output would match anything"
        assert set(row["nodes"]) <= set(row["providers"]), f"{name}: nodes on an EP the session lacks"
        if name.endswith("int8"):  # the convs ran as int8 kernels there, not dequantized to float
            assert row["nodes"]["CPUExecutionProvider"].get("QLinearConv", 0) >= 5, name
    table = arm64_check.markdown(result)
    assert all(f"| {t} | {p} | yes" in table for t, p in arm64_check.arm_cases())
    if os.environ.get("EDGEDISTILL_WHERE_IT_RAN"):  # asked to record it (scripts/where_it_ran.py)
        command = "sudo EDGEDISTILL_WHERE_IT_RAN=benchmarks/results/where_it_ran pytest tests/test_arm64.py"
        arm64_check.ledger(result, command).write(Path(os.environ["EDGEDISTILL_WHERE_IT_RAN"]) / "arm64.json")


def test_without_a_userland_it_says_what_is_missing_and_exits_3(tmp_path: Path) -> None:
    """No cached userland and --no-build (or no root): one line on stderr, exit 3, nothing built."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--no-build", "--cache", str(tmp_path / "cache"),
         "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("arm64 check not run: "), done.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "r.json").exists()


def test_probe_runs_a_bundle_through_its_own_runner(arm64_check, exported, tmp_path: Path) -> None:
    """The probe (what runs in the userland) on x86: the bundle's run_model.py gives the outputs an
    ONNX Runtime session of the same file gives, and the int8 convs are placed as QLinearConv."""
    import onnxruntime as ort

    from edgedistill.ship.bundle import bundle

    art = exported("resnet", "arm64-onnxruntime", "int8")
    made = {"case-int8": {"zip": bundle(art, tmp_path / "b.zip").path}}
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    job = tmp_path / "job"
    arm64_check.stage(made, job, x)
    report = arm64_check.run_probe(
        [sys.executable, str(job / "arm64_probe.py"), str(job)], job, "on x86", None, 300
    )
    case = report["cases"]["case-int8"]
    session = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    want = np.concatenate(
        [session.run(None, {session.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(2)]
    )
    np.testing.assert_array_equal(case["outputs"], want)
    assert case["providers"] == ["CPUExecutionProvider"]
    assert case["nodes"]["CPUExecutionProvider"].get("QLinearConv", 0) >= 5
