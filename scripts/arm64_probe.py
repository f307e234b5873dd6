"""What runs inside each runtime, x86 and the arm64 userland: every unzipped bundle through its own
run_model.py, recording its outputs and which execution provider ran each node.

    python arm64_probe.py DIR      # DIR: inputs.npy and one unzipped bundle per folder

Standalone on purpose: the userland has numpy and onnxruntime only, no edgedistill.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
from pathlib import Path

import numpy as np


def probe(cases: Path, threads: int = 1) -> None:
    """Run each bundle under cases/ through its own run_model.Model; write outputs and placement.

    Runs on either side with numpy and onnxruntime only (no edgedistill in the userland).
    """
    import onnxruntime as ort

    x = np.load(cases / "inputs.npy")
    report = {"machine": platform.machine(), "onnxruntime": ort.__version__, "cpu_features": arm_features(),
              "available_providers": ort.get_available_providers(), "cases": {}}  # fmt: skip
    for folder in sorted(p for p in cases.iterdir() if (p / "run_model.py").is_file()):
        report["cases"][folder.name] = probe_case(folder, x, threads)
    (cases / "probe.json").write_text(json.dumps(report, indent=2) + "\n")


def arm_features() -> list[str] | None:
    """The aarch64 features the kernel (here: qemu) reports, which ORT's kernels pick paths by."""
    if platform.machine() != "aarch64":
        return None
    import ctypes

    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    hwcap, hwcap2 = libc.getauxval(16), libc.getauxval(26)  # AT_HWCAP, AT_HWCAP2
    bits = {
        "fp16": hwcap >> 9,
        "dotprod": hwcap >> 20,
        "sve": hwcap >> 22,
        "i8mm": hwcap2 >> 13,
        "bf16": hwcap2 >> 14,
    }
    return [name for name, bit in bits.items() if bit & 1]


def probe_case(folder: Path, x: np.ndarray, threads: int) -> dict:
    """One bundle: its run_model.Model on x, one input at a time; outputs.npy and where nodes ran.

    ORT's profiler is switched on in the session the runner itself creates (a subclass that only
    sets the option and keeps the session), so the placement recorded is that of the compared run.
    """
    import onnxruntime as ort

    sessions: list = []

    class Profiled(ort.InferenceSession):
        def __init__(self, path, sess_options=None, providers=None, **kw):
            sess_options = sess_options or ort.SessionOptions()
            sess_options.enable_profiling = True
            sess_options.profile_file_prefix = str(folder / "ort_profile")
            super().__init__(path, sess_options, providers=providers, **kw)
            sessions.append(self)

    spec = importlib.util.spec_from_file_location(f"run_model_{folder.name}", folder / "run_model.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    original, ort.InferenceSession = ort.InferenceSession, Profiled
    try:
        model = runner.Model(folder, threads=threads)
    finally:
        ort.InferenceSession = original
    np.save(folder / "outputs.npy", np.concatenate([model(x[i : i + 1]) for i in range(len(x))]))
    session = sessions[0]
    trace = json.loads(Path(session.end_profiling()).read_text())
    options = (model.manifest.get("target") or {}).get("options") or {}
    return {
        "model_file": model.manifest["files"][0],
        "requested_providers": options.get("execution_providers") or ["CPUExecutionProvider"],
        "providers": session.get_providers(),
        "nodes": placement(trace),
    }


def placement(trace: list[dict]) -> dict[str, dict[str, int]]:
    """Provider -> {op type: nodes} from an ORT profile (each node's kernel event, counted once)."""
    seen: dict[str, tuple[str, str]] = {}
    for event in trace:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args and event["name"].endswith("_kernel_time"):
            seen[event["name"]] = (args["provider"], args.get("op_name", "?"))
    table: dict[str, dict[str, int]] = {}
    for provider, op in seen.values():
        table.setdefault(provider, {})
        table[provider][op] = table[provider].get(op, 0) + 1
    return {p: dict(sorted(ops.items())) for p, ops in sorted(table.items())}


if __name__ == "__main__":
    probe(Path(sys.argv[1]))
