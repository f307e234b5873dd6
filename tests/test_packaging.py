"""Shipped data is found in a checkout and travels inside a non-editable wheel."""

import subprocess
import sys
import tomllib
import zipfile

import pytest

from edgedistill.core.atomic import atomic_dir, write_text_atomic
from edgedistill.core.resources import data_files


def test_targets_and_calibration_are_found():
    for name in ("targets", "calibration"):
        files = data_files(name)
        assert files, name
        for f in files:
            assert tomllib.loads(f.read_text())  # every file parses


@pytest.mark.slow
def test_wheel_carries_data_and_teachers(tmp_path):
    repo = data_files("targets")[0].parents[1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(repo),
        ],
        check=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("edgedistill-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "edgedistill/_data/targets/x86-openvino.toml" in names
    assert "edgedistill/_data/calibration/photo-restore.toml" in names
    for teacher in ("photo-restore", "digits-dcgan"):
        for f in ("model.json", "generator.safetensors", "discriminator.safetensors"):
            assert f"edgedistill/models/embedded/{teacher}/{f}" in names
    assert max(i.file_size for i in zipfile.ZipFile(wheel).infolist()) < 20 * 2**20


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "old")

    def explode(_p):
        raise RuntimeError("boom")

    from edgedistill.core.atomic import write_atomic

    with pytest.raises(RuntimeError):
        write_atomic(target, explode)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]

    out = tmp_path / "artifact"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("interrupted")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_writers_finishing_one_dir_at_once_all_succeed_and_one_wins_whole(tmp_path):
    """Two exports into one folder used to race at the swap (ENOTEMPTY): each must land or lose whole."""
    import threading

    out, writers, rounds = tmp_path / "art", 6, 20
    start, errors = threading.Barrier(writers), []

    def write(n: int) -> None:
        for r in range(rounds):
            try:
                with atomic_dir(out) as tmp:
                    for f in ("a.bin", "b.bin"):
                        (tmp / f).write_text(f"{n}-{r}")
                    if r == 0:
                        start.wait()  # all finish their first dir at the same moment
            except Exception as err:  # any failure is the test's finding
                errors.append(repr(err))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in out.iterdir()) == ["a.bin", "b.bin"]
    assert (out / "a.bin").read_text() == (out / "b.bin").read_text()  # one writer's dir, whole
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temp or moved-aside dirs left
