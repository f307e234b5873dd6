"""Profile on a device over SSH: copy the artifacts and edgedistill's runtime part, run there.

The device needs Python 3.10+, numpy and the artifact's runtime; no torch, no training deps. What
travels is a zip of edgedistill's pure-Python runtime modules (run from the zip by zipimport),
the artifacts and a request.json; remote_main prints the same report JSON a local run builds.

Everything goes through the system `ssh`/`scp` with argument lists (never a local shell). The one
remote command string is built with shlex.quote; the host is validated before use, so a name
starting with '-' can never become an ssh option.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.core.artifact import MANIFEST, member_path
from edgedistill.core.errors import EdgeDistillError
from edgedistill.runtime.progress import relay
from edgedistill.runtime.report import ProfileReport
from edgedistill.runtime.session import ProfileOptions, Quiet, Reporter
from edgedistill.runtime.sources import Source

RESULT_MARK = "@@edgedistill-result "
RUNTIME_ZIP = "edgedistill-runtime.zip"
RUN_PID = "run.pid"
_PACKAGE = Path(__file__).resolve().parent.parent
# What runs on the device, by folder (docs/architecture.md): the torch-free floor, the ONNX
# graph tools (ONNX Runtime's load checks the .onnx), the backends and the runtime.
DEVICE_PACKAGES = ("core", "onnxtools", "backends", "runtime")
_USER = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_SAFE_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")
# The longest one SSH step (copying the artifacts, the profile run on the device) may take; a
# device that stops answering ends the profile with one line instead of hanging it.
DEFAULT_SSH_TIMEOUT = 900.0
_TIMEOUT_FIX = "give a longer ssh_timeout (--ssh-timeout SECONDS) if the device is just slow"


@dataclass(frozen=True)
class SshHost:
    user: str | None
    host: str
    port: int | None = None

    @property
    def destination(self) -> str:  # for ssh
        return f"{self.user}@{self.host}" if self.user else self.host

    def scp_path(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{path}" if self.user else f"{host}:{path}"

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}{port}"


def parse_host(text: str) -> SshHost:
    """user@host[:port], host, [v6addr]:port; anything that could read as an option is refused."""
    bad = EdgeDistillError(
        f"--host '{text}' is not user@host[:port] (letters, digits, '.', '-', '_'; IPv6 as [addr]:port)"
    )
    user, at, rest = text.rpartition("@")
    if not at:
        user, rest = "", text
    if user and not _USER.match(user):
        raise bad
    port: int | None = None
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep or not re.fullmatch(r"[0-9A-Fa-f:.]+", host) or (tail and not tail.startswith(":")):
            raise bad
        port_text = tail[1:]
    else:
        host, _, port_text = rest.partition(":")
        if not _HOSTNAME.match(host):
            raise bad
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise bad
        port = int(port_text)
    return SshHost(user or None, host, port)


# ----------------------------------------------------------------------------------- the bundle
def build_runtime_zip(path: Path) -> Path:
    """Zip edgedistill's runtime part (pure Python): importable on the device by zipimport."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(_PACKAGE / "__init__.py", "edgedistill/__init__.py")
        for pkg in DEVICE_PACKAGES:
            for file in sorted((_PACKAGE / pkg).glob("*.py")):
                z.write(file, f"edgedistill/{pkg}/{file.name}")
    return path


def stage_request(
    stage: Path, sources: Sequence[Source], opts: ProfileOptions, inputs: dict[str, np.ndarray] | None
) -> list[str]:
    """Lay out what travels in `stage`; returns the top-level names to copy."""
    build_runtime_zip(stage / RUNTIME_ZIP)
    names = [RUNTIME_ZIP, "request.json"]
    models = []
    for i, src in enumerate(sources):
        if src.artifact is None:
            raise EdgeDistillError(
                f"{src.given} is a torch model: over --host only exported artifacts run (the device needs no "
                "torch); export it first (`edgedistill export ...`) and profile the artifact"
            )
        name = f"m{i}"
        copy_artifact(src, stage / name)
        names.append(name)
        models.append({"label": src.label, "given": src.given, "dir": name})
    request: dict[str, Any] = {"options": opts.to_dict(), "models": models, "inputs": None}
    if inputs is not None:
        np.savez(stage / "inputs.npz", **inputs)
        request["inputs"] = "inputs.npz"
        names.append("inputs.npz")
    (stage / "request.json").write_text(json.dumps(request))
    return names


def copy_artifact(src: Source, dest: Path) -> None:
    """The files the runtime loads (+ companions such as .bin, .onnx.data) and the manifest.

    Every name goes through core/artifact.py's member_path, whoever built the manifest: nothing
    outside the artifact directory (by name or by link) is copied to the device."""
    art = src.artifact
    assert art is not None
    where = art.dir / MANIFEST
    links_ok = not where.exists()  # a bare model file, named by the caller: no manifest to distrust
    wanted: set[str] = set()
    for f in art.manifest["files"]:
        p = member_path(art.dir, f, where, links_ok)
        wanted.add(f)
        for pattern in (f"{glob_escape(p.stem)}.*", f"{glob_escape(p.name)}.*"):
            wanted.update(q.relative_to(art.dir).as_posix() for q in p.parent.glob(pattern) if q.is_file())
    paths = {name: member_path(art.dir, name, where, links_ok) for name in sorted(wanted)}
    dest.mkdir()
    for name, p in paths.items():
        if not p.is_file():
            raise EdgeDistillError(f"{p} is listed in {where} but missing: re-run the export")
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest / name)
    (dest / MANIFEST).write_text(json.dumps(art.manifest))


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


# ----------------------------------------------------------------------------------- ssh calls
class Ssh:
    def __init__(
        self,
        host: SshHost,
        options: Sequence[str] = (),
        identity: str | Path | None = None,
        timeout: float = DEFAULT_SSH_TIMEOUT,
    ) -> None:
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise EdgeDistillError(f"`{tool}` is not installed here: install the OpenSSH client")
        if not timeout > 0:
            raise EdgeDistillError(f"ssh_timeout must be a positive number of seconds, not {timeout}")
        self.host = host
        self.timeout = float(timeout)
        common = ["-o", "BatchMode=yes"]  # never a password prompt: nothing could answer it
        if identity is not None:
            common += ["-i", str(identity)]
        for opt in options:
            if not re.match(r"^[A-Za-z][A-Za-z0-9]*[= ]", opt):
                raise EdgeDistillError(f"--ssh-option '{opt}' is not Key=Value (as ssh -o takes it)")
            common += ["-o", opt]
        common += _timeout_options(self.timeout)  # after the user's: ssh keeps an option's first value
        self._ssh = ["ssh", *common, *(["-p", str(host.port)] if host.port else [])]
        self._scp = ["scp", "-q", "-r", *common, *(["-P", str(host.port)] if host.port else [])]

    def run(self, command: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """One remote command (a string the remote shell reads: build it with shlex.quote)."""
        argv = [*self._ssh, "--", self.host.destination, command]
        done = self._call(argv, timeout or self.timeout, "the command")
        if done.returncode == 255:
            raise EdgeDistillError(ssh_error(self.host, done.stderr))
        return done

    def _call(self, argv: list[str], timeout: float, doing: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:  # subprocess.run has killed ssh/scp by now
            raise EdgeDistillError(timed_out(self.host, doing, timeout)) from None

    def copy_to(self, local: Sequence[Path], remote_dir: str) -> None:
        if not _SAFE_REMOTE_PATH.match(remote_dir):
            raise EdgeDistillError(f"{self.host}: unexpected remote directory {remote_dir!r}")
        args = ["--", *map(str, local), self.host.scp_path(remote_dir + "/")]
        doing = "copying the artifacts"
        done = self._call([*self._scp, *args], self.timeout, doing)
        if done.returncode != 0 and re.search(r"Connection closed|subsystem request failed", done.stderr):
            # No SFTP server on the device (dropbear, minimal images): scp's original protocol (-O).
            # The remote path then passes the remote shell; it is a checked mktemp path, no quoting needed.
            legacy = self._call([*self._scp, "-O", *args], self.timeout, doing)
            if legacy.returncode == 0 or "unknown option" not in legacy.stderr:
                done = legacy
        if done.returncode != 0:
            raise EdgeDistillError(ssh_error(self.host, done.stderr, "copying the artifacts failed"))

    def stream(self, command: str, reporter: Reporter) -> tuple[int, str, str]:
        """Run `command`, relaying its progress lines (stderr) to `reporter`; (rc, stdout, other stderr)."""
        argv = [*self._ssh, "--", self.host.destination, command]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        errors: list[str] = []

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if not relay(line.rstrip("\n"), reporter):
                    errors.append(line)

        out: list[str] = []

        def drain() -> None:
            assert proc.stdout is not None
            out.append(proc.stdout.read())

        readers = [threading.Thread(target=f, daemon=True) for f in (pump, drain)]
        for reader in readers:
            reader.start()
        try:
            rc = proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise StepTimedOut(timed_out(self.host, "the profile run", self.timeout)) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        for reader in readers:
            reader.join(timeout=5)
        return rc, "".join(out), "".join(errors)


class StepTimedOut(EdgeDistillError):
    """A step outlived the SSH timeout (ssh was killed; what it started on the device may not be)."""


def _timeout_options(timeout: float) -> list[str]:
    """ssh's own limits within `timeout`: to connect (TCP and handshake) and to notice a link that
    died mid-step (keepalives unanswered for 3 intervals)."""
    connect = max(1, min(10, int(timeout)))
    alive = max(1, min(15, int(timeout // 4)))
    options = (f"ConnectTimeout={connect}", f"ServerAliveInterval={alive}", "ServerAliveCountMax=3")
    return [arg for opt in options for arg in ("-o", opt)]


def timed_out(host: SshHost, doing: str, seconds: float) -> str:
    return (
        f"{host}: {doing} got no answer within {seconds:g} s: check that the device is on and its sshd "
        f"answers (`ssh -p {host.port or 22} {host.destination} true`), or {_TIMEOUT_FIX}"
    )


def ssh_error(host: SshHost, stderr: str, doing: str = "ssh failed") -> str:
    """One line for what ssh said: unreachable, refused, auth, host key."""
    text = stderr.strip()
    port = host.port or 22
    if "Could not resolve hostname" in text:
        return f"{host}: host name not found (check --host)"
    if "Connection refused" in text:
        return f"{host}: connection refused on port {port} (is sshd running there? right port?)"
    if re.search(r"timed out|No route to host|Network is unreachable", text):
        return (
            f"{host}: unreachable on port {port} ({_last_line(text)}): check that the device is on and "
            f"sshd listens on port {port}, or {_TIMEOUT_FIX}"
        )
    if "Permission denied" in text or "Too many authentication failures" in text:
        return (
            f"{host}: authentication failed (no password prompts here: install your key with ssh-copy-id, "
            "or give --identity KEYFILE)"
        )
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return (
            f"{host}: host key unknown or changed: connect once with `ssh {host.destination}` to check and "
            "store it (or --ssh-option StrictHostKeyChecking=accept-new for a new device)"
        )
    return f"{host}: {doing}: {_last_line(text) or 'no message from ssh'}"


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


# ------------------------------------------------------------------------------------- the run
def run_remote(
    host: str,
    sources: Sequence[Source],
    opts: ProfileOptions,
    inputs: dict[str, np.ndarray] | None = None,
    ssh_options: Sequence[str] = (),
    identity: str | Path | None = None,
    remote_python: str = "python3",
    reporter: Reporter | None = None,
    timeout: float | None = None,
) -> ProfileReport:
    """Copy, run remote_main on the device, bring the report back; the device's temp dir is removed.
    `timeout`: seconds any one step may take (DEFAULT_SSH_TIMEOUT when None)."""
    rep = reporter or Quiet()
    target = parse_host(host)
    ssh = Ssh(target, ssh_options, identity, DEFAULT_SSH_TIMEOUT if timeout is None else timeout)
    with tempfile.TemporaryDirectory(prefix="edgedistill-remote-") as tmp:
        stage = Path(tmp)
        names = stage_request(stage, sources, opts, inputs)
        rep.stage(f"connecting to {target}")
        made = ssh.run('mktemp -d "${TMPDIR:-/tmp}/edgedistill-profile.XXXXXX"', min(ssh.timeout, 120))
        remote_dir = _last_line(made.stdout)  # a login script may print before it
        if made.returncode != 0 or not _SAFE_REMOTE_PATH.match(remote_dir):
            raise EdgeDistillError(
                f"{target}: could not make a temp directory ({_last_line(made.stderr) or remote_dir!r})"
            )
        try:
            rep.stage(f"copying {len(sources)} artifact(s) to {target}")
            ssh.copy_to([stage / n for n in names], remote_dir)
            # exec keeps the shell's pid, written down first: a run that outlives the timeout is
            # killed by it (closing ssh alone leaves it running on the device).
            command = (
                f"cd {shlex.quote(remote_dir)} && echo $$ > {RUN_PID} && exec env "
                f"PYTHONPATH={shlex.quote(remote_dir + '/' + RUNTIME_ZIP)} "
                f"{shlex.quote(remote_python)} -m edgedistill.runtime.remote_main request.json"
            )
            try:
                rc, out, err = ssh.stream(command, rep)
            except StepTimedOut:
                with contextlib.suppress(EdgeDistillError):
                    pid_file = shlex.quote(f"{remote_dir}/{RUN_PID}")
                    ssh.run(f"kill $(cat {pid_file}) 2>/dev/null", timeout=min(ssh.timeout, 30))
                raise
        finally:
            with contextlib.suppress(EdgeDistillError):
                ssh.run(f"rm -rf {shlex.quote(remote_dir)}", timeout=min(ssh.timeout, 30))
    return parse_result(target, remote_python, rc, out, err)


def parse_result(host: SshHost, python: str, rc: int, out: str, err: str) -> ProfileReport:
    """The report from remote_main's output, or one line saying what went wrong on the device."""
    payload = None
    for line in out.splitlines():
        if line.startswith(RESULT_MARK):
            payload = json.loads(line[len(RESULT_MARK) :])
    if payload is not None and "error" in payload:
        raise EdgeDistillError(f"{host}: {payload['error']}")
    if payload is not None and "report" in payload:
        report = ProfileReport.from_dict(payload["report"])
        report.remote = str(host)
        return report
    if rc == 255:
        raise EdgeDistillError(ssh_error(host, err))
    if rc == 127:  # the shell's (and env's) "command not found"
        raise EdgeDistillError(
            f"{host}: `{python}` not found on the device: install Python 3.10+ or give --remote-python PATH"
        )
    missing = re.search(r"No module named '([\w.]+)'", err)
    if missing:
        mod = missing.group(1).split(".")[0]
        raise EdgeDistillError(
            f"{host}: `{mod}` is not installed for {python} on the device: pip install {mod} there"
        )
    raise EdgeDistillError(
        f"{host}: the profile failed on the device (exit {rc}): {_last_line(err) or 'no output'}"
    )
