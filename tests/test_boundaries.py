"""What crosses edgedistill's boundaries stays in bounds: graph rewrites, manifest paths, files on
disk, the process's logging and stdout, temp dirs, and SSH to a device that stops answering."""

from __future__ import annotations

import gc
import getpass
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from edgedistill.core.artifact import Artifact, load_artifact
from edgedistill.core.atomic import write_atomic, write_text_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.models import create
from edgedistill.onnxtools.qdq_fold import fold_pads

SIZE = 32
FAST = {"threads": 1, "warmup": 1, "iterations": 2, "min_time": 0.0, "layers": 0, "progress": False}


# ------------------------------------------------------------------------- 1. Pad with axes
def _pad_chain(mode: str, axes: list[int]) -> onnx.ModelProto:
    """x -> Q -> DQ -> Pad(pads over `axes`) -> Q -> DQ -> y, opset 18 (what torch's dynamo exporter writes)."""
    out_shape = [1, 2, 5, 6]
    for i, axis in enumerate(axes):  # pads are [begins..., ends...] in the order of `axes`
        out_shape[axis] += (1, 2)[i] * 2
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "zero_point"),
        numpy_helper.from_array(np.array([1, 2, 1, 2], np.int64), "pads"),
        numpy_helper.from_array(np.array(axes, np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["x_q"], name="q_in"),
        helper.make_node("DequantizeLinear", ["x_q", "scale", "zero_point"], ["x_dq"], name="dq_in"),
        helper.make_node("Pad", ["x_dq", "pads", "", "axes"], ["padded"], name="pad", mode=mode),
        helper.make_node("QuantizeLinear", ["padded", "scale", "zero_point"], ["p_q"], name="q_pad"),
        helper.make_node("DequantizeLinear", ["p_q", "scale", "zero_point"], ["y"], name="dq_out"),
    ]
    graph = helper.make_graph(
        nodes,
        "pad_with_axes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize(
    ("mode", "axes"), [("reflect", [2, 3]), ("constant", [2, 3]), ("edge", [-2, -1]), ("reflect", [3, 2])]
)
def test_fold_pads_keeps_pad_axes(mode, axes):
    model = _pad_chain(mode, axes)
    x = np.random.default_rng(0).uniform(-2, 2, (1, 2, 5, 6)).astype(np.float32)
    expected = _run(model, x)
    assert fold_pads(model) == 1
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "Pad", "DequantizeLinear"]
    np.testing.assert_array_equal(_run(model, x), expected)  # ONNX Runtime runs it, to the bit
    onnx.checker.check_model(model, full_check=True)


# ---------------------------------------------------------------- 2. manifest paths, end to end
@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """A real fp32 ONNX Runtime artifact of a tiny ResNet generator, from edgedistill.export."""
    from edgedistill.exporter.api import export

    root = tmp_path_factory.mktemp("boundaries")
    torch.manual_seed(0)
    weights = root / "g.pth"
    torch.save(create("resnet", ngf=8, n_blocks=2, norm="batch").state_dict(), weights)
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    out = root / "artifact"
    export(f"resnet:{weights}", "x86-onnxruntime", out, precision="fp32", size=(SIZE, SIZE),
           calib_data=photos, holdout=2, threads=1, log=lambda _m: None)  # fmt: skip
    return out


def _tampered(artifact: Path, tmp_path: Path, how: str) -> Path:
    """A copy of `artifact` whose model entry leads outside it; a secret lies beside it."""
    (tmp_path / "secret.txt").write_text("not for the bundle\n")
    copy = tmp_path / "art"
    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    if how == "symlink":  # the manifest is clean; the file it names is a link to outside
        (copy / manifest["files"][0]).unlink()
        (copy / manifest["files"][0]).symlink_to(tmp_path / "secret.txt")
    else:
        manifest["files"] = [how, *manifest["files"]]
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


OUTSIDE = ["../secret.txt", "/etc/hostname", "symlink"]


def _one_line_cli_error(*args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "edgedistill", *args], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


@pytest.mark.parametrize("how", OUTSIDE)
def test_bundle_refuses_manifest_paths_outside_the_artifact(artifact, tmp_path, how):
    art = _tampered(artifact, tmp_path, how)
    out = tmp_path / "dist" / "app.zip"
    err = _one_line_cli_error("bundle", str(art), "--out", str(out))
    assert "outside the artifact directory" in err
    assert not out.exists() and (not out.parent.exists() or list(out.parent.iterdir()) == [])


@pytest.mark.parametrize("how", OUTSIDE)
def test_model_path_never_leaves_the_artifact(artifact, tmp_path, how):
    art = _tampered(artifact, tmp_path, how)
    with pytest.raises(EdgeDistillError, match="outside the artifact directory"):
        load_artifact(art).model_path  # noqa: B018
    if how != "symlink":  # a link is judged where a manifest is read or files are shipped
        manifest = json.loads((art / "manifest.json").read_text())
        with pytest.raises(EdgeDistillError, match="outside the artifact directory"):
            Artifact(art, manifest).model_path  # noqa: B018  (built without read_manifest)


@pytest.mark.parametrize("how", OUTSIDE)
def test_copy_for_the_device_refuses_manifest_paths_outside(artifact, tmp_path, how):
    from edgedistill.profiler.remote import copy_artifact
    from edgedistill.runtime.sources import artifact_source

    clean = load_artifact(artifact)
    art = _tampered(artifact, tmp_path, how)
    manifest = json.loads((art / "manifest.json").read_text())
    source = artifact_source(Artifact(art, manifest), str(art))  # as a caller holding a manifest would
    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.raises(EdgeDistillError, match="outside the artifact directory"):
        copy_artifact(source, stage / "m0")
    copied = [p.read_bytes() for p in stage.rglob("*") if p.is_file()]
    assert b"not for the bundle\n" not in copied and not (tmp_path / "etc").exists()
    copy_artifact(artifact_source(clean, str(artifact)), stage / "ok")  # a clean one still copies
    assert (stage / "ok" / clean.manifest["files"][0]).is_file()
    with pytest.raises(EdgeDistillError, match="outside the artifact directory"):
        _with_deadline(lambda: _profile(art, "me@127.0.0.1:9"), 60)


def test_tensorrt_engine_named_in_the_manifest_stays_inside(tmp_path):
    """backend_info.engine is a manifest path too: never an engine file from elsewhere."""
    from edgedistill.backends.tensorrt import engine_path

    (tmp_path / "evil.engine").write_bytes(b"not ours")
    art_dir = tmp_path / "art"
    art_dir.mkdir()
    (art_dir / "model.onnx").write_bytes(b"")
    for engine in ("../evil.engine", str(tmp_path / "evil.engine")):
        manifest = {"backend": "tensorrt", "files": ["model.onnx"], "backend_info": {"engine": engine}}
        with pytest.raises(EdgeDistillError, match="outside the artifact directory"):
            engine_path(Artifact(art_dir, manifest))


def test_a_bare_model_file_may_be_a_link_of_the_callers(artifact, tmp_path):
    """No manifest, nothing to distrust: a model file the caller names is theirs, links and all."""
    from edgedistill.profiler.remote import copy_artifact
    from edgedistill.runtime.sources import resolve

    model = load_artifact(artifact).model_path
    (tmp_path / "models").mkdir()
    link = tmp_path / "models" / "latest.onnx"
    link.symlink_to(model)
    copy_artifact(resolve(str(link)), tmp_path / "m0")
    assert (tmp_path / "m0" / "latest.onnx").read_bytes() == model.read_bytes()


# ----------------------------------------------------------------------------- 3. atomic writes
def test_failed_write_keeps_old_contents_and_leaves_no_temp(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old\n")

    def half_then_fail(path: Path) -> None:
        path.write_text("half a repo")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["report.json"]
    with pytest.raises(TypeError):
        write_text_atomic(target, None)  # type: ignore[arg-type]
    assert target.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["report.json"]


def test_write_atomic_syncs_the_file_before_the_rename_and_then_the_directory(tmp_path, monkeypatch):
    target = tmp_path / "out" / "model.json"
    real_fsync = os.fsync
    synced: list[tuple[int, bool, bool]] = []  # (inode, is a directory, target already had this inode)

    def recording_fsync(fd: int) -> None:
        st = os.fstat(fd)
        renamed = target.exists() and target.stat().st_ino == st.st_ino
        synced.append((st.st_ino, stat.S_ISDIR(st.st_mode), renamed))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    file_syncs = [s for s in synced if s[0] == target.stat().st_ino]
    assert file_syncs and not file_syncs[0][1] and not file_syncs[0][2]  # synced before the rename
    assert (target.parent.stat().st_ino, True, False) in synced  # the rename itself made durable


# --------------------------------------------------------------------- 4. scoped quiet for ORT
@pytest.fixture
def captured_records() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    other = logging.getLogger("edgedistill.test.other")
    other.addHandler(handler)
    yield records
    other.removeHandler(handler)


def test_quantize_leaves_root_logger_and_stdout_alone(
    tmp_path, captured_records, monkeypatch, capsys, caplog
):
    from onnxruntime import quantization

    from edgedistill.core.calibset import CalibrationSet
    from edgedistill.core.spec import spec_for_family
    from edgedistill.exporter.onnx_export import export_onnx
    from edgedistill.onnxtools.qdq import compute_ranges, quantize_qdq

    kwargs = {"ngf": 8, "n_blocks": 1, "norm": "batch"}
    spec = spec_for_family("resnet", kwargs)
    export_onnx(create("resnet", **kwargs).eval(), spec, tmp_path / "fp32.onnx", size=(SIZE, SIZE))
    calib = CalibrationSet(spec.example_arrays((SIZE, SIZE), batch=8, seed=1), method="entropy")
    real_quantize = quantization.quantize_static

    def quantize_while_another_part_logs(*args: Any, **kwargs: Any) -> Any:
        """The real quantizer; meanwhile another part of the program logs a warning."""
        logging.getLogger("edgedistill.test.other").warning("during")
        return real_quantize(*args, **kwargs)

    monkeypatch.setattr(quantization, "quantize_static", quantize_while_another_part_logs)
    root = logging.getLogger()
    before = (root.level, list(root.handlers), list(root.filters), sys.stdout)
    ranges = compute_ranges(tmp_path / "fp32.onnx", calib, tmp_path, progress=False)
    quantize_qdq(tmp_path / "fp32.onnx", tmp_path / "q.onnx", ranges)
    assert (root.level, list(root.handlers), list(root.filters), sys.stdout) == before
    assert onnx.load(str(tmp_path / "q.onnx")).graph.node  # the real quantizer wrote a model
    logging.getLogger("edgedistill.test.other").warning("after")
    assert [r.getMessage() for r in captured_records] == ["during", "after"]
    assert capsys.readouterr().out == ""  # ORT's progress prints stayed muted
    reached_root = [(r.name, r.getMessage()) for r in caplog.records]
    assert reached_root == [("edgedistill.test.other", "during"), ("edgedistill.test.other", "after")]


def test_quiet_mutes_only_onnxruntime_in_the_calling_thread(captured_records, capsys):
    from edgedistill.onnxtools.quiet import quiet

    ort_logger = logging.getLogger("onnxruntime.quantization.quant_utils")
    seen_ort: list[str] = []
    probe = logging.Handler()
    probe.emit = lambda r: seen_ort.append(r.getMessage())  # type: ignore[method-assign]
    ort_logger.addHandler(probe)
    try:
        with quiet():
            logging.getLogger("edgedistill.test.other").warning("during")
            ort_logger.warning("ort chatter")
            print("ort progress")

            def other_thread() -> None:
                print("another thread's line")
                logging.getLogger("edgedistill.test.other").warning("from a thread")

            t = threading.Thread(target=other_thread)
            t.start()
            t.join()
    finally:
        ort_logger.removeHandler(probe)
    assert [r.getMessage() for r in captured_records] == ["during", "from a thread"]
    assert seen_ort == []
    out = capsys.readouterr().out
    assert "another thread's line" in out and "ort progress" not in out


# ------------------------------------------------------------- 5. ORT profiling temp directory
def test_profiling_dir_is_removed_when_the_runner_goes(artifact, tmp_path, monkeypatch):
    from edgedistill.backends.onnxruntime import OnnxRuntimeBackend

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    art = load_artifact(artifact)
    x = {"image": np.zeros((1, 3, SIZE, SIZE), np.float32)}

    def profiled() -> list[str]:
        return sorted(p.name for p in tmp_path.glob("edgedistill-ortprof-*"))

    runner = OnnxRuntimeBackend().load(art, threads=1, profile_layers=True)
    runner.run(x)
    assert len(profiled()) == 1
    del runner  # never asked for layer_times()
    gc.collect()
    assert profiled() == []
    runner = OnnxRuntimeBackend().load(art, threads=1, profile_layers=True)
    runner.run(x)
    assert runner.layer_times() and profiled() == []  # read, then removed at once
    assert runner.layer_times()  # still answers from what it read
    runner = OnnxRuntimeBackend().load(art, threads=1, profile_layers=True)
    runner.run(x)
    runner.close()  # the explicit way
    assert profiled() == [] and runner.layer_times() == []
    del runner
    gc.collect()
    assert list(tmp_path.iterdir()) == []  # nothing written after the sessions went


# ------------------------------------------------------------------------- 6. SSH that hangs
def _with_deadline(call: Callable[[], Any], seconds: float) -> Any:
    """Run `call` in a thread; fail (instead of hanging the suite) if it outlives `seconds`."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # re-raised below, in the test's thread
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _profile(artifact: Path, host: str, **kw: Any) -> Any:
    from edgedistill import profile

    return profile([artifact], host=host, **{**FAST, **kw})


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte (a hung device)."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1], conns
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


def test_hanging_host_fails_in_bounded_time_with_one_line(artifact, silent_server):
    if shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client here")
    port, conns = silent_server
    host = f"{getpass.getuser()}@127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(EdgeDistillError) as err:
        _with_deadline(lambda: _profile(artifact, host, ssh_timeout=3), 60)
    elapsed = time.monotonic() - t0
    msg = str(err.value)
    assert elapsed < 30, elapsed
    assert conns, "ssh never reached the server"
    assert len(msg.splitlines()) == 1 and f"127.0.0.1:{port}" in msg and "ssh_timeout" in msg, msg


def test_host_that_reads_as_an_option_is_refused_before_ssh(artifact, tmp_path):
    marker = tmp_path / "pwned"
    for host in (
        f"-oProxyCommand=touch {marker}",
        f"me@-oProxyCommand=touch {marker}",
        f"-oProxyCommand=touch {marker}@localhost",
    ):
        with pytest.raises(EdgeDistillError, match="not user@host"):
            _with_deadline(lambda h=host: _profile(artifact, h), 60)
    assert not marker.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())  # a zombie has ended


def test_hanging_run_on_the_device_times_out(artifact, tmp_path_factory, tmp_path):
    """Connected and copied, then the device's Python never returns: the run's timeout ends it."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_profile_remote import _start_sshd, _stop
    finally:
        sys.path.pop(0)
    proc, reach = _start_sshd(tmp_path_factory.mktemp("sshd-hang"), sftp=True)
    try:
        stuck, pid_file = tmp_path / "python-that-hangs", tmp_path / "stuck.pid"
        stuck.write_text(
            f"#!{sys.executable}\nimport os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
            "time.sleep(600)\n"
        )
        stuck.chmod(0o755)
        kw = {k: reach[k] for k in ("identity", "ssh_options")}
        t0 = time.monotonic()
        with pytest.raises(EdgeDistillError) as err:
            _with_deadline(
                lambda: _profile(artifact, reach["host"], remote_python=str(stuck), ssh_timeout=6, **kw), 90
            )
        assert time.monotonic() - t0 < 60
        msg = str(err.value)
        assert len(msg.splitlines()) == 1 and reach["host"].split("@")[1] in msg and "ssh_timeout" in msg, msg
        assert "profile run" in msg, msg
        pid = int(pid_file.read_text())
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "the hung run was left running on the device"
    finally:
        _stop(proc)
