"""An arm64 Debian userland on an x86_64 host, where aarch64 Python wheels run under qemu-user.

Built once per package list (mmdebstrap's extract variant, then this venv's onnxruntime, numpy and
pillow as aarch64 wheels, installed with pip there), cached under scratch/arm64/, and entered with
chroot while binfmt_misc hands aarch64 executables to qemu. Needs root. Used by arm64_check.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "scratch" / "arm64"
SUITE = "bookworm"  # its python3 is 3.11: the wheels below are fetched for that
PYTHON = "3.11"
APT_PACKAGES = ("python3", "libstdc++6")  # onnxruntime's wheel links the system libstdc++
WHEELS = ("onnxruntime", "numpy", "pillow")  # at this venv's versions: both sides run the same release
WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_35_aarch64")
HOST_TOOLS = {  # command -> Debian package
    "mmdebstrap": "mmdebstrap",
    "arch-test": "arch-test",
    "qemu-aarch64-static": "qemu-user-static",
    "update-binfmts": "binfmt-support",
}
BINFMT = Path("/proc/sys/fs/binfmt_misc")
FAKE_CPUS = 4  # the userland's stand-in /sys/devices/system/cpu (see fake_sysfs_cpu)


class Unavailable(Exception):
    """This host cannot run the check; the message is the one line that says why."""


# ---------------------------------------------------------------------------------- the host
def host_problem() -> str | None:
    """Why this host cannot run the check at all, or None."""
    if sys.platform != "linux":
        return f"needs Linux (this is {sys.platform}): qemu-user and binfmt_misc are Linux features"
    if platform.machine() == "aarch64":
        return "this host is aarch64 already: unzip a bundle and run its run_model.py here directly"
    if platform.machine() != "x86_64":
        return f"needs an x86_64 host (this is {platform.machine()})"
    if os.geteuid() != 0:
        return "needs root (mmdebstrap and chroot): run it with sudo"
    return None


def ensure_host_tools() -> None:
    """Install qemu-user-static, mmdebstrap, arch-test and binfmt-support with apt-get if missing."""
    missing = sorted({pkg for cmd, pkg in HOST_TOOLS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise Unavailable(f"needs {', '.join(missing)} and there is no apt-get here: install them")
    print(f"installing {', '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise Unavailable(f"`{' '.join(cmd)}` failed ({tail[0]}): install {', '.join(missing)}")


def ensure_binfmt() -> None:
    """Mount binfmt_misc and enable qemu-aarch64 in it: the kernel then runs aarch64 ELFs via qemu."""
    if not (BINFMT / "register").exists():
        done = subprocess.run(["mount", "binfmt_misc", "-t", "binfmt_misc", str(BINFMT)], capture_output=True)
        if done.returncode != 0:
            raise Unavailable(
                f"cannot mount binfmt_misc on {BINFMT} ({done.stderr.decode().strip() or 'refused'}): "
                "a container needs it from its host (docker run --privileged)"
            )
    entry = BINFMT / "qemu-aarch64"
    if (not entry.exists() or not entry.read_text().startswith("enabled")) and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        raise Unavailable(
            "qemu-aarch64 is not enabled in binfmt_misc: `update-binfmts --enable qemu-aarch64`"
        )
    if "flags: " not in entry.read_text() or "F" not in entry.read_text().split("flags: ")[1].split()[0]:
        raise Unavailable(f"{entry} lacks the F flag (qemu is not preloaded): reinstall qemu-user-static")


# -------------------------------------------------------------------------------- the userland
def wheel_pins(names: tuple[str, ...] = WHEELS) -> list[str]:
    """name==version of each wheel at this venv's version, so both sides run the same release."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return [f"{name}=={version(name)}" for name in names]
    except PackageNotFoundError as exc:
        raise Unavailable(f"{exc.name} is not installed here: `make setup` first") from None


def userland_key(pins: list[str]) -> str:
    """What the userland is made of, hashed: a change of any package gives a new one."""
    recipe = {"suite": SUITE, "apt": APT_PACKAGES, "wheels": pins, "platforms": WHEEL_PLATFORMS,
              "fake_cpus": FAKE_CPUS, "variant": "extract", "pip": wheel_pins(("pip",))}  # fmt: skip
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def cached_userland(cache: Path = CACHE) -> Path | None:
    """The finished userland for this venv's packages, if one was built before."""
    try:
        done = cache / f"userland-{userland_key(wheel_pins())}"
    except Unavailable:
        return None
    return done if (done / "userland.json").is_file() else None


def run_logged(
    cmd: list[str], what: str, timeout: float | None = None, env: dict | None = None, needs: str = ""
) -> str:
    """Run a build step, return its stdout; on failure one line with the step and its output's tail.

    `needs` names what a download step needs from the host (the network): its failure is then the
    host's limit (Unavailable, exit 3), not a fault of the check."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise Unavailable(
            f"{what} took over {timeout:.0f} s: gave up (the partial build was removed)"
        ) from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        if needs:
            raise Unavailable(f"{what} failed ({tail}): it needs {needs}")
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {tail}")
    return done.stdout


def fake_sysfs_cpu(rootfs: Path, count: int = FAKE_CPUS) -> None:
    """A stand-in /sys/devices/system/cpu (the chroot has no /sys): what ORT's cpuinfo reads to count cores.

    Only online/possible/present and each CPU's topology. Without it ORT 1.32 warns and carries on,
    but runtimes have crashed probing caches there. CPU features do not come from here: ORT reads
    them from the kernel's HWCAP bits, which qemu sets per QEMU_CPU (see arm_features).
    """
    base = rootfs / "sys" / "devices" / "system" / "cpu"
    span = f"0-{count - 1}"
    for name in ("online", "possible", "present"):
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(span + "\n")
    for i in range(count):
        topo = base / f"cpu{i}" / "topology"
        topo.mkdir(parents=True, exist_ok=True)
        for name, value in {"physical_package_id": "0", "core_id": str(i), "cluster_id": "0",
                            "thread_siblings_list": str(i), "core_siblings_list": span,
                            "cluster_cpus_list": span, "package_cpus_list": span}.items():  # fmt: skip
            (topo / name).write_text(value + "\n")


def build_userland(dest: Path, pins: list[str], timeout: float | None) -> None:
    """Unpack an arm64 bookworm with python3 into dest/rootfs, pip-install the wheels there, check it.

    Packages are only unpacked (mmdebstrap's extract variant): a full install with python3-pip took
    ~11 min here, nearly all of it maintainer scripts under emulation, which Python does not need. The
    bytecode of the userland's Python 3.11 is compiled here natively: .pyc files do not depend on
    the CPU, and compiling under emulation at every start would cost seconds per import.
    """
    deadline = None if timeout is None else time.monotonic() + timeout

    def left() -> float | None:
        return None if deadline is None else max(1.0, deadline - time.monotonic())

    rootfs = dest / "rootfs"
    print(f"building the arm64 userland in {dest} (a few minutes)", flush=True)
    run_logged(["mmdebstrap", "--quiet", "--mode=root", "--arch=arm64", "--variant=extract",
                f"--include={','.join(APT_PACKAGES)}", SUITE, str(rootfs)], "mmdebstrap", left(),
               needs="deb.debian.org (or an apt proxy)")  # fmt: skip
    wheels = rootfs / "opt" / "wheels"  # seen from inside the userland as /opt/wheels
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    pip = wheel_pins(("pip",))[0]  # pip itself as a wheel: it runs from the zip, no python3-pip needed
    run_logged([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels), *platforms,
                "--python-version", PYTHON, "--only-binary=:all:", pip, *pins], "pip download (aarch64 wheels)",
               left(), needs="PyPI (or the pip index configured here)")  # fmt: skip
    fake_sysfs_cpu(rootfs)
    pip_wheel = next(wheels.glob("pip-*.whl")).name
    run_logged([chroot(), str(rootfs), "/usr/bin/python3", f"/opt/wheels/{pip_wheel}/pip", "install", "--quiet",
                "--no-index", "--no-compile", "--break-system-packages", "--root-user-action=ignore",
                "--no-warn-script-location", "--find-links", "/opt/wheels", *pins],
               "pip install (in the userland)", left())  # fmt: skip
    shutil.rmtree(wheels)
    run_logged([sys.executable, "-m", "compileall", "-q", "-j", "0", "-s", str(rootfs), "-p", "/",
                str(rootfs / "usr" / "lib" / f"python{PYTHON}"),
                str(rootfs / "usr" / "local" / "lib" / f"python{PYTHON}")], "compileall", left())  # fmt: skip
    probe = "import onnxruntime, numpy, PIL, platform; print(platform.machine(), onnxruntime.__version__)"
    said = run_logged([chroot(), str(rootfs), "/usr/bin/python3", "-c", probe], "importing onnxruntime there",
                      left(), userland_env("max"))  # fmt: skip
    if not said.startswith("aarch64"):
        raise RuntimeError(f"the new userland's Python is not aarch64: it says {said.strip()!r}")
    meta = {"suite": SUITE, "apt": list(APT_PACKAGES), "wheels": pins, "check": said.strip()}
    (dest / "userland.json").write_text(json.dumps(meta, indent=2) + "\n")


def chroot() -> str:
    """chroot's full path: the userland's environment has no sbin on PATH to find it by."""
    return shutil.which("chroot") or shutil.which("chroot", path="/usr/sbin:/sbin") or "/usr/sbin/chroot"


def userland(build: bool = True, timeout: float | None = None, cache: Path = CACHE) -> Path:
    """The cached userland for this venv's packages; built first (into a temp dir, then renamed)."""
    if (done := cached_userland(cache)) is not None:
        return done
    pins = wheel_pins()
    done = cache / f"userland-{userland_key(pins)}"
    if not build:
        raise Unavailable(
            f"no arm64 userland cached in {done}: build it once with `sudo {_command()}` (~2 min)"
        )
    partial = cache / f".building-{done.name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        build_userland(partial, pins, timeout)
        partial.rename(done)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return done


def userland_env(cpu: str) -> dict[str, str]:
    """A clean environment for the userland; QEMU_CPU picks the emulated core."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "QEMU_CPU": cpu}  # fmt: skip


def _command() -> str:
    return f"{Path(sys.executable)} {Path(__file__).resolve().with_name('arm64_check.py')}"
