"""How much of the hardware a model uses: achieved ops/s against a peak.

achieved = 2 x MACs / p50 latency. Three peaks can stand beside it:
  - the target profile's `peak_gops` (what the device's datasheet promises),
  - for the machine that ran the profile, the theoretical one (cores x clock x ops/cycle of its ISA),
  - and a practical one measured with a short GEMM (fp32 and int8) through ONNX Runtime's kernels
    on the same number of threads — what a real kernel reaches here.
A generator far below the measured GEMM peak is bound by memory traffic or small layers, not by
arithmetic: that is where a smaller student helps more than a faster precision.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np

from edgedistill.runtime.hostinfo import cpuinfo

GEMM = 1024  # M = N = K of the measuring GEMM: large enough to be compute-bound on a CPU


def achieved_gops(macs: int | None, p50_ms: float | None, batch: int = 1) -> float | None:
    if not macs or not p50_ms:
        return None
    return 2.0 * macs * batch / (p50_ms / 1e3) / 1e9


def peak_for(peaks: dict[str, float] | None, precision: str) -> float | None:
    """The peak that applies to a model at `precision` (fp32 where the device lists no other)."""
    if not peaks:
        return None
    key = precision if precision in peaks else "fp32"
    value = peaks.get(key)
    return float(value) if value else None


def percent(achieved: float | None, peak: float | None) -> float | None:
    if achieved is None or not peak:
        return None
    return 100.0 * achieved / peak


# --------------------------------------------------------------------------------- theoretical
def theoretical_peaks(threads: int) -> dict[str, Any]:
    """cores x clock x ops/cycle, from the ISA flags; `basis` says what was assumed."""
    cpu = cpuinfo()
    flags: set[str] = cpu["flags"]
    mhz = cpu["mhz"]
    cores = min(threads, cpu["physical_cores"] or cpu["logical_cpus"] or threads)
    arch = platform.machine().lower()
    if arch in ("x86_64", "amd64"):
        if "avx512f" in flags:
            isa, fp32 = "AVX-512 (2 FMA units assumed)", 64
        elif "avx2" in flags and "fma" in flags:
            isa, fp32 = "AVX2+FMA (2 FMA units)", 32
        elif "avx" in flags:
            isa, fp32 = "AVX", 16
        else:
            isa, fp32 = "SSE", 8
        vnni = "avx512_vnni" in flags or "avx_vnni" in flags
        int8 = fp32 * (4 if vnni else 2)
        isa += ", int8 via VNNI dot products" if vnni else ", int8 via pmaddubsw"
        if "amx_int8" in flags:
            isa += " (AMX tiles present: not counted, they peak far higher)"
    elif arch in ("aarch64", "arm64"):
        fp32 = 16  # 2 NEON pipes x 4 lanes x 2 (FMA)
        dot = "asimddp" in flags
        int8 = fp32 * (4 if dot else 2)
        isa = "NEON (2 pipes)" + (", int8 via SDOT" if dot else "")
    else:
        return {"fp32": None, "int8": None, "basis": f"unknown ISA for {arch}"}
    if not mhz:
        return {"fp32": None, "int8": None, "basis": f"{isa}; clock unknown"}
    ghz = mhz / 1000.0
    return {
        "fp32": round(cores * ghz * fp32, 1),
        "int8": round(cores * ghz * int8, 1),
        "basis": f"{cores} core(s) x {ghz:.2f} GHz {cpu['clock']} x {fp32} fp32 / {int8} int8 ops per cycle ({isa})",
    }


# ------------------------------------------------------------------------------------ measured
def measured_peaks(threads: int, seconds: float = 0.4) -> dict[str, Any]:
    """Best ops/s of a GEMM-sized MatMul (fp32) and MatMulInteger (u8 x s8) in ONNX Runtime."""
    try:
        import onnx  # noqa: F401  (builds the two one-node graphs)
        import onnxruntime  # noqa: F401
    except ImportError:
        return {"fp32": None, "int8": None, "how": "not measured: needs onnxruntime and onnx"}
    out: dict[str, Any] = {
        "how": f"ONNX Runtime {GEMM}x{GEMM}x{GEMM} MatMul / MatMulInteger, {threads} thread(s), best call"
    }
    for precision in ("fp32", "int8"):
        try:
            out[precision] = round(_gemm_gops(precision, threads, seconds), 1)
        except Exception as exc:  # a runtime without the int8 kernel: say so, keep the rest
            out[precision] = None
            out.setdefault("errors", {})[precision] = str(exc).splitlines()[0][:200]
    return out


def _gemm_gops(precision: str, threads: int, seconds: float) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if precision == "fp32":
        a = rng.standard_normal((GEMM, GEMM), dtype=np.float32)
        b = rng.standard_normal((GEMM, GEMM), dtype=np.float32)
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        in_type, out_type = TensorProto.FLOAT, TensorProto.FLOAT
    else:
        a = rng.integers(0, 255, (GEMM, GEMM), dtype=np.uint8)
        b = rng.integers(-127, 127, (GEMM, GEMM), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        in_type, out_type = TensorProto.UINT8, TensorProto.INT32
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("a", in_type, [GEMM, GEMM])],
        [helper.make_tensor_value_info("y", out_type, [GEMM, GEMM])],
        [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"a": a}
    sess.run(None, feed)
    best = float("inf")
    start = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter_ns()
        sess.run(None, feed)
        best = min(best, time.perf_counter_ns() - t0)
        calls += 1
    return 2.0 * GEMM**3 / (best / 1e9) / 1e9


def host_peaks(threads: int, measure: bool = True) -> dict[str, Any]:
    """Theoretical and (optionally) measured peaks of this machine at `threads` threads."""
    return {
        "theoretical": theoretical_peaks(threads),
        "measured": measured_peaks(threads) if measure else {"fp32": None, "int8": None, "how": "off"},
    }
