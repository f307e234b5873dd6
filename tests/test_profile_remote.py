"""Profiling over SSH against a real sshd on 127.0.0.1 that the test starts, and the runtime bundle.

The "device" is this machine: the remote side runs this Python from the shipped zip, so what is
tested is exactly what a board runs (zipimport of edgedistill's runtime part, no torch).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgedistill.core.errors import EdgeDistillError
from edgedistill.profiler.api import profile
from edgedistill.profiler.remote import RESULT_MARK, RUNTIME_ZIP, stage_request
from edgedistill.runtime.session import ProfileOptions
from edgedistill.runtime.sources import resolve

SSHD = "/usr/sbin/sshd"
FAST = {
    "threads": 1,
    "warmup": 2,
    "iterations": 5,
    "min_time": 0.2,
    "layers": 3,
    "layer_calls": 2,
    "progress": False,
}


@pytest.fixture(scope="module")
def artifacts(exported, tmp_path_factory) -> dict[str, Path]:
    """fp32 ONNX Runtime and OpenVINO artifacts of the tiny generator, as `edgedistill.export` wrote
    them; the ONNX Runtime one copied to a directory whose name has a space (quoting must hold)."""
    ort_dir = tmp_path_factory.mktemp("remote-artifacts") / "ort fp32"
    shutil.copytree(exported("resnet", "x86-onnxruntime", "fp32"), ort_dir)
    return {"ort": ort_dir, "ov": exported("resnet", "x86-openvino", "fp32")}


# ------------------------------------------------------------------------------ runtime bundle
def test_runtime_bundle_runs_without_torch(artifacts, tmp_path):
    """The zip the device gets profiles both artifacts with `import torch` made impossible."""
    sources = [resolve(artifacts["ov"]), resolve(artifacts["ort"])]
    opts = ProfileOptions(
        threads=1, warmup=2, iterations=3, min_time=0.1, layers=2, layer_calls=2, roofline=False
    )
    stage_request(tmp_path, sources, opts, None)
    script = (
        "import sys, runpy\n"
        "sys.modules['torch'] = None  # a device without torch: any import of it fails\n"
        f"sys.path.insert(0, {str(tmp_path / RUNTIME_ZIP)!r})\n"
        "import edgedistill\n"
        f"assert {RUNTIME_ZIP!r} in edgedistill.__file__, edgedistill.__file__\n"
        "sys.argv = ['remote_main', 'request.json']\n"
        "runpy.run_module('edgedistill.runtime.remote_main', run_name='__main__')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith(RESULT_MARK))
    report = json.loads(line[len(RESULT_MARK) :])["report"]
    assert report["host"]["torch_imported"] is False
    assert [m["backend"] for m in report["models"]] == ["openvino", "onnxruntime"]
    assert all(m["stats"]["n"] == report["settings"]["rounds"] for m in report["models"])
    assert report["models"][1]["psnr_vs_first"] > 60


def test_torch_model_over_ssh_is_refused(tiny_generators):
    with pytest.raises(EdgeDistillError, match="only exported artifacts run"):
        profile(tiny_generators["resnet"], host="me@127.0.0.1:9", **FAST)


# ------------------------------------------------------------------------------------- sshd
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


SFTP_SERVERS = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
)


def _start_sshd(d: Path, sftp: bool):
    """A real sshd on 127.0.0.1:<free port> that accepts the key `d/id_user`; (process, how to reach it)."""
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        pytest.skip(f"{SSHD} or the OpenSSH client is missing (CI installs openssh-server in .ci/run)")
    _keygen(d / "host_key")
    _keygen(d / "id_user")
    _keygen(d / "id_other")  # a key the server does not know
    (d / "authorized_keys").write_text((d / "id_user.pub").read_text())
    port = _free_port()
    config = d / "sshd_config"
    text = (
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nLogLevel ERROR\n"
    )
    if sftp:  # scp speaks SFTP by default; boards with dropbear have none and get scp's old protocol
        server = next((p for p in SFTP_SERVERS if os.path.exists(p)), None)
        if server is None:
            pytest.skip("no sftp-server next to sshd")
        text += f"Subsystem sftp {server}\n"
    config.write_text(text)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, f"sshd rejects the test config: {check.stderr}"
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.1)
    known = f"UserKnownHostsFile={d / 'known_hosts'}"
    return proc, {
        "host": f"{getpass.getuser()}@127.0.0.1:{port}",
        "identity": d / "id_user",
        "ssh_options": [known, "StrictHostKeyChecking=accept-new", "IdentitiesOnly=yes"],
        "remote_python": sys.executable,
        "dir": d,
    }


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    proc, reach = _start_sshd(tmp_path_factory.mktemp("sshd"), sftp=True)
    yield reach
    _stop(proc)


@pytest.fixture(scope="module")
def sshd_no_sftp(tmp_path_factory):
    proc, reach = _start_sshd(tmp_path_factory.mktemp("sshd-no-sftp"), sftp=False)
    yield reach
    _stop(proc)


def _remote_kwargs(sshd, **over):
    kw = {k: sshd[k] for k in ("host", "identity", "ssh_options", "remote_python")}
    return {**kw, **over}


def _leftover_dirs() -> set[str]:
    tmp = os.environ.get("TMPDIR", "/tmp")
    return {p.name for p in Path(tmp).glob("edgedistill-profile.*")}


def test_remote_profile_through_sshd(sshd, artifacts):
    before = _leftover_dirs()
    report = profile([artifacts["ort"], artifacts["ov"]], **_remote_kwargs(sshd), **FAST)
    assert report.remote == sshd["host"]
    assert report.host["torch_imported"] is False  # the device side never imported torch
    ort, ov = report.models
    assert ort.name == "ort fp32" and ort.source == str(artifacts["ort"])
    assert ort.stats.n == ov.stats.n == report.settings["rounds"] >= 5
    assert ov.psnr_vs_first > 60 and ov.layers and ov.layers[0]["precision"]
    macs = json.loads((artifacts["ort"] / "manifest.json").read_text())["macs"]
    assert macs > 1_000_000 and ort.macs == macs and ort.achieved_gops > 0  # the manifest's, via SSH
    assert _leftover_dirs() == before  # the device's temp dir was removed


def test_remote_cli_json_without_sftp(sshd_no_sftp, artifacts, tmp_path):
    sshd = sshd_no_sftp
    args = [sys.executable, "-m", "edgedistill", "profile", str(artifacts["ov"]), "--host", sshd["host"],
            "--identity", str(sshd["identity"]), "--remote-python", sshd["remote_python"], "--threads", "1",
            "-n", "3", "--min-time", "0.1", "--layers", "0", "--no-roofline", "--json", str(tmp_path / "r.json")]  # fmt: skip
    for opt in sshd["ssh_options"]:
        args += ["--ssh-option", opt]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["remote"] == sshd["host"] and data["models"][0]["stats"]["n"] >= 3
    assert "127.0.0.1" in r.stdout


def _blocking_python(tmp_path: Path, module: str) -> str:
    """A `python` for the device that behaves as if `module` were not installed there."""
    path = tmp_path / f"python-without-{module}"
    path.write_text(
        f"#!{sys.executable}\nimport runpy, sys\nsys.modules[{module!r}] = None\n"
        "assert sys.argv[1] == '-m'\nsys.argv = sys.argv[2:]\n"
        "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
    )
    path.chmod(0o755)
    return str(path)


def _cli_error(*args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "edgedistill", "profile", *args], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


def test_bad_host_unreachable_auth_and_runtime(sshd, artifacts, tmp_path):
    ov = str(artifacts["ov"])
    common = ["--remote-python", sshd["remote_python"], "-n", "2", "--min-time", "0", "--no-roofline"]
    for opt in sshd["ssh_options"]:
        common += ["--ssh-option", opt]
    closed = _free_port()
    assert "connection refused" in _cli_error(ov, "--host", f"root@127.0.0.1:{closed}", *common)
    assert "not user@host" in _cli_error(ov, "--host", "-oProxyCommand=touch pwned", *common)
    err = _cli_error(ov, "--host", sshd["host"], "--identity", str(sshd["dir"] / "id_other"), *common)
    assert "authentication failed" in err
    good = [*common, "--identity", str(sshd["identity"]), "--host", sshd["host"]]
    err = _cli_error(ov, *good, "--remote-python", _blocking_python(tmp_path, "openvino"))
    assert "openvino cannot run on the device" in err and "pip install" in err
    err = _cli_error(ov, *good, "--remote-python", _blocking_python(tmp_path, "numpy"))
    assert "numpy is not installed" in err
    assert "not found on the device" in _cli_error(ov, *good, "--remote-python", "/no/such/python3")
