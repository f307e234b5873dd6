"""What machine a profile ran on: CPU, cores, clock, ISA, runtime versions.

Read from /proc/cpuinfo and package metadata only (no runtime is imported), so it is cheap and
works the same on a device over SSH.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from functools import lru_cache
from typing import Any

from edgedistill.core.versions import installed_versions

RUNTIMES = ("numpy", "onnxruntime", "openvino", "tensorrt", "torch", "edgedistill")
# The vector/matrix extensions that decide which kernels run (OpenVINO's jit_avx2 vs jit_avx512 vs
# AMX, bf16 or not, int8 dot products): what a latency number must be read with.
ISA_FLAGS = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "asimddp", "sve", "i8mm", "bf16",
)  # fmt: skip


def isa(flags: set[str] | None = None) -> list[str]:
    """This CPU's kernel-relevant extensions, in ISA_FLAGS order (e.g. ['avx2', 'fma'] on Zen3)."""
    have = cpuinfo()["flags"] if flags is None else flags
    return [f for f in ISA_FLAGS if f in have]


@lru_cache(maxsize=1)
def cpuinfo() -> dict[str, Any]:
    """Model name, ISA flags, clock (MHz) and physical core count, as far as the OS tells."""
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(), "flags": set(), "mhz": None}
    cores: set[tuple[str, str]] = set()
    phys = core = ""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key in ("model name", "Model", "Hardware") and value:
            info["model"] = value
        elif key in ("flags", "Features"):
            info["flags"].update(value.split())
        elif key == "cpu MHz" and info["mhz"] is None:
            info["mhz"] = _float(value)
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
            cores.add((phys, core))
    info["clock"] = "nominal (/proc/cpuinfo; turbo may run faster)" if info["mhz"] else "unknown"
    max_khz = _read_number("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_khz:
        info["mhz"] = max_khz / 1000.0
        info["clock"] = "maximum (cpufreq)"
    info["physical_cores"] = len(cores) or None
    info["logical_cpus"] = os.cpu_count()
    return info


def versions() -> dict[str, str]:
    return installed_versions(RUNTIMES)


def host_info(threads: int) -> dict[str, Any]:
    cpu = cpuinfo()
    return {
        "hostname": socket.gethostname(),
        "system": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": cpu["model"],
        "isa": isa(),
        "cpu_mhz": cpu["mhz"],
        "logical_cpus": cpu["logical_cpus"],
        "physical_cores": cpu["physical_cores"],
        "threads": threads,
        "python": platform.python_version(),
        "versions": versions(),
        "torch_imported": sys.modules.get("torch") is not None,
    }


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _read_number(path: str) -> float | None:
    try:
        with open(path) as f:
            return _float(f.read().strip())
    except OSError:
        return None
