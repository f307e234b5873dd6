"""The command line as a user runs it: real subprocesses, exit codes, one-line errors."""

import json
import os
import subprocess
import sys

import torch

from edgedistill.models import create


def edgedistill(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "edgedistill", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_inspect_digits_teacher_json():
    r = edgedistill("inspect", "digits-dcgan", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["spec"]["kind"] == "noise" and info["spec"]["family"] == "dcgan"
    assert info["params"] == sum(layer["params"] for layer in info["layers"]) > 100_000
    assert info["macs"] == sum(layer["macs"] for layer in info["layers"]) > 10_000_000


def test_inspect_photo_teacher_at_256_is_big_enough_to_compress():
    r = edgedistill("inspect", "photo-restore", "--size", "256", "256", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["input_shapes"] == [[1, 3, 256, 256]]
    assert info["macs"] >= 10e9
    assert info["spec"]["kwargs"]["ngf"] == 64 and info["spec"]["kwargs"]["n_blocks"] >= 6


def test_inspect_table_and_macs_scale_with_size(tmp_path):
    path = tmp_path / "g.pth"
    torch.save(create("resnet", ngf=8, n_blocks=2).state_dict(), path)
    small = json.loads(edgedistill("inspect", f"resnet:{path}", "--size", "64", "64", "--json").stdout)
    big = json.loads(edgedistill("inspect", f"resnet:{path}", "--size", "128", "128", "--json").stdout)
    assert big["macs"] == 4 * small["macs"]
    wide = {**os.environ, "COLUMNS": "200"}  # one table row per line, whatever the terminal
    r = edgedistill("inspect", f"resnet:{path}", "--size", "64", "64", "--top", "3", env=wide)
    assert r.returncode == 0, r.stderr
    # the header totals, then a table of exactly the 3 costliest layers, costliest first
    assert f"params {small['params'] / 1e3:.2f}k  MACs {small['macs'] / 1e6:.2f}M" in r.stdout
    rows = [[cell.strip() for cell in line.strip("│").split("│")] for line in r.stdout.splitlines()
            if line.startswith("│")]  # fmt: skip
    costliest = sorted(small["layers"], key=lambda layer: -layer["macs"])[:3]
    assert [row[:2] for row in rows] == [[layer["name"], layer["type"]] for layer in costliest]
    assert [row[4] for row in rows] == [f"{layer['macs'] / 1e6:.2f}M" for layer in costliest]
    assert costliest[0]["macs"] > small["macs"] / 10 and len(small["layers"]) > 3


def test_models_lists_families_and_teachers():
    r = edgedistill("models")
    assert r.returncode == 0
    for word in ("resnet", "unet", "dcgan", "patchgan", "photo-restore", "digits-dcgan"):
        assert word in r.stdout


def test_bad_inputs_give_one_line_and_exit_2(tmp_path):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    cases = [
        (("inspect", f"resnet:{tmp_path / 'missing.pth'}"), "not found"),
        (("inspect", str(evil)), "refusing to load"),
        (("inspect", "no-such-teacher"), "neither an embedded teacher"),
        (("inspect", "digits-dcgan", "--size", "64", "64"), "--size applies to image generators"),
        (("inspect", "resnet:x.pth", "--arg", "oops"), "is not key=value"),
    ]
    for args, message in cases:
        r = edgedistill(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (args, r.stderr)
        assert "Traceback" not in r.stderr
