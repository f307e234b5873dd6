"""Training, calibration and held-out data from one folder: one split, used everywhere.

Paired folders (A/ inputs, B/ same-named targets) and plain folders; the stable hash split and
`--val-data`; ground truth in the spec's OUTPUT range; compress re-runs a stage when the teacher's
bytes or the data folder change. Images are uniform colours, so every sample says which file it
came from.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import spec_for_family
from edgedistill.data.calibration import build_calibration
from edgedistill.data.heldout import heldout_inputs
from edgedistill.data.sources import make_source

pytestmark = pytest.mark.filterwarnings("ignore:only .* calibration samples", "ignore:.*readable images")


def _png(path: Path, value: int, size: tuple[int, int] = (24, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


def _paired(root: Path, n: int, a0: int = 10, b0: int = 200) -> Path:
    """A/i.png uniform a0+i, B/i.png uniform b0+i: a sample's value names its file and side."""
    for i in range(n):
        _png(root / "A" / f"img{i:03d}.png", a0 + i)
        _png(root / "B" / f"img{i:03d}.png", b0 + i)
    return root


def _plain(root: Path, n: int, v0: int = 10) -> Path:
    for i in range(n):
        _png(root / f"img{i:03d}.png", v0 + i)
    return root


def _values(x: np.ndarray | torch.Tensor, lo: float, hi: float) -> list[int]:
    """The 8-bit value of each uniform sample of (N, C, H, W) in [lo, hi]."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    assert np.allclose(flat.min(1), flat.max(1), atol=1e-4), "samples are not uniform"
    return [round((v - lo) / (hi - lo) * 255) for v in flat[:, 0]]


def _value(path: Path) -> int:
    with Image.open(path) as im:
        return int(np.asarray(im)[0, 0, 0])


@pytest.fixture
def spec():
    return spec_for_family("resnet", {"ngf": 4, "n_blocks": 1})  # image, RGB, [-1, 1] in and out


# ------------------------------------------------------------------------------ 1. ground truth
def test_ground_truth_is_built_in_the_output_range(tmp_path, spec):
    spec01 = replace(spec, input_range=(0.0, 1.0))  # inputs in [0, 1], outputs in [-1, 1]
    data = _paired(tmp_path / "pairs", 12)
    src = make_source("resnet:teacher", spec01, data, 0, 16)
    for batch in (src.batch(0, 6), src.heldout()):
        assert batch.real is not None and batch.inputs.min() >= 0
        assert batch.real.min() >= -1 and batch.real.max() <= 1
        for a, b in zip(_values(batch.inputs, 0, 1), _values(batch.real, -1, 1), strict=True):
            assert b == a - 10 + 200, "Batch.real is the clean target mapped to the OUTPUT range"


# ------------------------------------------------------------------------------ 2. paired folders
def test_paired_calibration_reads_training_inputs_of_a_only(tmp_path, spec):
    data = _paired(tmp_path / "pairs", 40)
    calib = build_calibration(spec, data, 40, input_size=(8, 8))
    got = set(_values(calib.arrays["image"], -1, 1))
    assert not got & set(range(200, 240)), "B/ targets leaked into the calibration set"
    from edgedistill.data.images import split_folder

    split = split_folder(data)
    assert got == {_value(p.input) for p in split.train}, "calibration = the training inputs of A/"


def test_heldout_inputs_come_from_the_validation_split(tmp_path, spec):
    from edgedistill.data.images import split_folder

    data = _paired(tmp_path / "pairs", 40)
    x = heldout_inputs("resnet:teacher", spec, (8, 8), 8, data)
    val = {_value(p.input) for p in split_folder(data).val}
    assert x.shape[1:] == (3, 8, 8) and set(_values(x, -1, 1)) <= val, "held-out = validation inputs"


def test_split_is_disjoint_stable_and_a_new_file_moves_nothing(tmp_path):
    from edgedistill.data.images import IMAGE_SUFFIXES, VAL_FRACTION, split_folder

    assert ".png" in IMAGE_SUFFIXES and 0 < VAL_FRACTION < 1
    data = _paired(tmp_path / "pairs", 40)

    def names(pairs):
        return {p.input.name for p in pairs}

    first = split_folder(data)
    train, val = names(first.train), names(first.val)
    assert train and val and not train & val and len(train | val) == 40
    assert 1 <= len(val) <= 12, "about a tenth held out"
    assert all(p.target == data / "B" / p.input.name for p in first.train + first.val)
    assert all(p.input.parent == data / "A" for p in first.train + first.val)
    again = split_folder(data)
    assert (names(again.train), names(again.val)) == (train, val)
    _png(data / "A" / "new.png", 99)
    _png(data / "B" / "new.png", 199)
    grown = split_folder(data)
    assert names(grown.train) - {"new.png"} == train and names(grown.val) - {"new.png"} == val
    assert "new.png" in names(grown.train) ^ names(grown.val)


def test_paired_folder_trains_a_to_b_on_the_training_split(tmp_path, spec):
    from edgedistill.data.images import split_folder

    data = _paired(tmp_path / "pairs", 40)
    split = split_folder(data)
    src = make_source("resnet:teacher", spec, data, 0, 16)
    seen = set()
    for step in range(10):
        b = src.batch(step, 8)
        pairs = zip(_values(b.inputs, -1, 1), _values(b.real, -1, 1), strict=True)
        assert all(t == a + 190 for a, t in pairs), "each input is trained towards its own B/ target"
        seen |= set(_values(b.inputs, -1, 1))
    assert seen <= {_value(p.input) for p in split.train}
    held = src.heldout()
    assert set(_values(held.inputs, -1, 1)) <= {_value(p.input) for p in split.val}


def test_val_data_overrides_the_split(tmp_path, spec):
    from edgedistill.data.images import split_folder

    data = _paired(tmp_path / "pairs", 10)
    val = _paired(tmp_path / "val", 3, a0=100, b0=150)
    split = split_folder(data, val_data=val)
    assert len(split.train) == 10 and {p.input.parent for p in split.val} == {val / "A"}
    held = make_source("resnet:teacher", spec, data, 0, 16, val_data=val).heldout()
    ins, outs = _values(held.inputs, -1, 1), _values(held.real, -1, 1)
    assert set(ins) <= {100, 101, 102} and all(t == a + 50 for a, t in zip(ins, outs, strict=True))
    x = heldout_inputs("resnet:teacher", spec, (8, 8), 8, data, val_data=val)
    assert sorted(_values(x, -1, 1)) == [100, 101, 102]
    with pytest.raises(EdgeDistillError, match="--val-data"):
        split_folder(data, val_data=data)


def test_val_data_option_on_distill_and_compress():
    import typer.main

    from edgedistill.cli.app import app
    from edgedistill.distiller.config import DistillConfig
    from edgedistill.pipeline.compress import CompressOptions

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for verb in ("distill", "compress"):
        assert "--val-data" in [o for p in commands[verb].params for o in p.opts], verb
    assert DistillConfig(teacher="t").val_data is None
    assert CompressOptions(teacher="t", targets=[]).val_data is None


def test_distill_on_pairs_with_val_data_scores_against_targets(tmp_path):
    import json

    from edgedistill.distiller.api import distill
    from edgedistill.distiller.config import DistillConfig

    ckpt = _teacher_ckpt(tmp_path / "g.pth", 0)
    data = _paired(tmp_path / "pairs", 4)
    val = _paired(tmp_path / "val", 2, a0=100, b0=150)
    cfg = DistillConfig(teacher=f"resnet:{ckpt}", data=str(data), val_data=str(val), out=str(tmp_path / "run"),
                        steps=2, batch=2, patch=16, lambda_gt=1.0, log_every=1, threads=1)  # fmt: skip
    run = distill(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "psnr_vs_target" in metrics and "teacher_psnr_vs_target" in metrics
    assert json.loads((run / "config.json").read_text())["val_data"] == str(val)


def test_plain_folder_still_works(tmp_path, spec):
    from edgedistill.data.images import split_folder

    data = _plain(tmp_path / "plain", 12)
    split = split_folder(data)
    assert split.train and split.val and all(p.target is None for p in split.train + split.val)
    src = make_source("resnet:teacher", spec, data, 0, 16)
    b = src.batch(0, 4)
    assert b.real is None and tuple(b.inputs.shape) == (4, 3, 16, 16)
    val = {_value(p.input) for p in split.val}
    assert set(_values(src.heldout().inputs, -1, 1)) <= val
    assert set(_values(heldout_inputs("resnet:teacher", spec, (8, 8), 8, data), -1, 1)) <= val
    calib = build_calibration(spec, data, 12, input_size=(8, 8))
    assert sorted(_values(calib.arrays["image"], -1, 1)) == list(range(10, 22)), "a plain folder: all of it"
    (data / "broken.png").write_text("not a png")
    with pytest.raises(EdgeDistillError, match=r"broken\.png"):
        make_source("resnet:teacher", spec, data, 0, 16)


def test_image_suffixes_are_one_list():
    from edgedistill.data import calibration, sources
    from edgedistill.data.images import IMAGE_SUFFIXES

    for module in (calibration, sources):
        assert getattr(module, "IMAGE_SUFFIXES", IMAGE_SUFFIXES) is IMAGE_SUFFIXES, module.__name__


# ------------------------------------------------------------------------------ 3. stage inputs
def _teacher_ckpt(path: Path, seed: int) -> Path:
    from edgedistill.models import create

    torch.manual_seed(seed)
    torch.save(create("resnet", ngf=4, n_blocks=1).state_dict(), path)
    return path


def _flip_byte(path: Path, keep_mtime: bool = True) -> None:
    st = path.stat()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    if keep_mtime:  # same size, same time: only the bytes tell
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:  # an edit made later (coarse clocks may not tick between two writes in a test)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_stage_fingerprints_follow_teacher_bytes_and_data_files(tmp_path):
    from edgedistill.pipeline.compress import CompressOptions, distill_fingerprint, export_fingerprint

    ckpt = _teacher_ckpt(tmp_path / "g.pth", 0)
    data = _plain(tmp_path / "data", 4)
    student = tmp_path / "student"
    student.mkdir()
    (student / "student.safetensors").write_bytes(b"weights")
    opts = CompressOptions(
        teacher=f"resnet:{ckpt}", targets=["x86-onnxruntime"], out=tmp_path / "c", data=data
    )

    def both() -> tuple[str, str]:
        return distill_fingerprint(opts), export_fingerprint(opts, "x86-onnxruntime", student)

    base = both()
    assert both() == base, "unchanged inputs keep their fingerprints"
    _flip_byte(ckpt)
    assert distill_fingerprint(opts) != base[0], "the teacher's bytes changed"
    _flip_byte(ckpt)
    assert both() == base
    _png(data / "extra.png", 77)
    now = both()
    assert now[0] != base[0] and now[1] != base[1], "a file added to --data"
    (data / "extra.png").unlink()
    assert both() == base
    _flip_byte(data / "img000.png", keep_mtime=False)
    now = both()
    assert now[0] != base[0] and now[1] != base[1], "a --data file edited"

    run = tmp_path / "run"  # a run directory as the teacher: its files count
    run.mkdir()
    (run / "model.json").write_text("{}")
    (run / "student.safetensors").write_bytes(b"abc")
    opts.teacher = str(run)
    fp = distill_fingerprint(opts)
    _flip_byte(run / "student.safetensors")
    assert distill_fingerprint(opts) != fp


def test_compress_redistills_when_the_teacher_or_data_change(tmp_path):
    from edgedistill.pipeline.compress import CompressOptions, _distill_stage
    from edgedistill.pipeline.stages import StageBook

    ckpt = _teacher_ckpt(tmp_path / "g.pth", 0)
    data = _plain(tmp_path / "data", 6)
    opts = CompressOptions(
        teacher=f"resnet:{ckpt}", targets=[], out=tmp_path / "c", steps=2, data=data, cache=0, threads=1,
        distill_options={"patch": 16, "batch": 2, "log_every": 1},
    )  # fmt: skip
    opts.out.mkdir()

    def run() -> bool:
        """True when the stage was skipped."""
        logs: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _distill_stage(opts, StageBook(opts.out), logs.append)
        return any("unchanged, skipped" in m for m in logs)

    assert not run() and run()
    _teacher_ckpt(ckpt, 1)  # other weights, same path
    assert not run(), "a changed teacher at the same path must be distilled again"
    assert run()
    _png(data / "extra.png", 77)
    assert not run(), "a changed --data folder must be distilled again"
