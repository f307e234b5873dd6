"""`edgedistill compress` end to end on the digits teacher: stages, skip on re-run, report files."""

import json
import subprocess
import sys

import pytest

from edgedistill.pipeline.compress import CompressOptions, compress
from edgedistill.pipeline.stages import StageBook, fingerprint


def test_fingerprint_tracks_options_and_file_bytes(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    a = fingerprint({"x": 1}, [f])
    assert a == fingerprint({"x": 1}, [f]) != fingerprint({"x": 2}, [f])
    f.write_bytes(b"abd")
    assert fingerprint({"x": 1}, [f]) != a
    book = StageBook(tmp_path)
    book.mark("s", a)
    assert StageBook(tmp_path).is_done("s", a, [f]) and not StageBook(tmp_path).is_done(
        "s", a, [tmp_path / "gone"]
    )


@pytest.mark.slow
def test_compress_digits_then_resume_skips_stages(tmp_path):
    out = tmp_path / "c"
    opts = CompressOptions(
        teacher="digits-dcgan", targets=["x86-onnxruntime", "jetson-orin-nano"], out=out, width=0.25, steps=40, cache=64,
        calib_size=32, threads=1, profile_seconds=0.5, samples=4,
    )  # fmt: skip
    logs: list[str] = []
    report = compress(opts, log=logs.append)
    for name in ("report.md", "report.json", "samples.png", "latency.png", "stages.json"):
        assert (out / name).exists(), name
    names = [r["model"] for r in report["rows"]]
    assert names == ["teacher", "student", "onnxruntime int8", "jetson-orin-nano int8"]
    row = report["rows"][2]
    assert row["precision"] == "int8" and float(row["PSNR vs fp32 dB"]) >= 35
    jetson = report["rows"][3]  # no TensorRT here: scored through its QDQ ONNX, not timed
    assert jetson["p50 ms"] == "n/a" and float(jetson["PSNR vs teacher dB"]) > 5
    assert float(report["rows"][1]["PSNR vs teacher dB"]) > 5
    saved = json.loads((out / "report.json").read_text())
    assert saved["rows"] == report["rows"]

    again: list[str] = []
    compress(opts, log=again.append)
    assert any("distill: unchanged, skipped" in m for m in again)
    assert any("x86-onnxruntime int8: unchanged, skipped" in m for m in again)
    assert any("jetson-orin-nano int8: unchanged, skipped" in m for m in again)


@pytest.mark.slow
def test_compress_cli_wrong_target_is_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "edgedistill", "compress", "digits-dcgan", "-t", "x86-onnxrt", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean x86-onnxruntime" in lines[0]
    assert not (tmp_path / "x").exists()
