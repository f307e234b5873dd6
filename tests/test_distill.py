"""The distillation trainer end to end on the small digits teacher: files, resume, rollback, DDP."""

import json
import os
import subprocess
import sys

import pytest
import torch

from edgedistill.core.errors import EdgeDistillError
from edgedistill.data.sources import NoiseSource
from edgedistill.distiller.api import distill
from edgedistill.distiller.config import DistillConfig
from edgedistill.models.loading import load_generator

TINY = {"teacher": "digits-dcgan", "width": 0.25, "batch": 4, "checkpoint_every": 3, "log_every": 1,
        "sample_every": 3, "ema": 0.9, "threads": 1}  # fmt: skip


class ScriptedSource(NoiseSource):
    """The digits' real noise source, with one fault injected the first time a step is drawn."""

    def __init__(self, spec, fault_step, fault):
        from edgedistill.data.bundled import digits_images

        super().__init__(spec, seed=0, real=digits_images("train")[0])
        self.fault_step, self.fault, self.fired = fault_step, fault, False
        self.heldout_count = 64

    def batch(self, step, size):
        b = super().batch(step, size)
        if step == self.fault_step and not self.fired:
            self.fired = True
            if self.fault == "interrupt":
                raise KeyboardInterrupt
            b.inputs = torch.full_like(b.inputs, float("nan"))
        return b


def _source(fault_step=-100, fault="nan"):
    return ScriptedSource(load_generator("digits-dcgan").spec, fault_step, fault)


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["total"] for r in rows if "total" in r}


def test_run_directory_contract(tmp_path):
    run = distill(DistillConfig(**TINY, steps=3, out=str(tmp_path / "run")), source=_source())
    for name in (
        "student.safetensors",
        "model.json",
        "config.json",
        "metrics.jsonl",
        "metrics.json",
        "checkpoints/last.pt",
    ):
        assert (run / name).exists(), name
    assert list((run / "samples").glob("step_*.png"))
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("psnr_vs_teacher", "ssim_vs_teacher", "feature_distance", "feature_net", "macs_teacher",
                "macs_student", "params_teacher", "params_student", "steps", "wall_s"):  # fmt: skip
        assert key in metrics, key
    assert metrics["macs_teacher"] > 10 * metrics["macs_student"] and metrics["steps"] == 3
    student = load_generator(str(run))  # the run directory loads back as a generator
    assert student.spec.kwargs["ngf"] == 16 and student.spec.provenance["metrics"]["steps"] == 3


def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path):
    straight = distill(DistillConfig(**TINY, steps=6, out=str(tmp_path / "a")), source=_source())
    with pytest.raises(EdgeDistillError, match="interrupted at step 3: checkpoint saved"):
        distill(DistillConfig(**TINY, steps=6, out=str(tmp_path / "b")), source=_source(3, "interrupt"))
    with pytest.raises(EdgeDistillError, match="already holds a run: add --resume"):
        distill(DistillConfig(**TINY, steps=6, out=str(tmp_path / "b")), source=_source())
    resumed = distill(DistillConfig(**TINY, steps=6, out=str(tmp_path / "b")), source=_source(), resume=True)
    a, b = _losses(straight), _losses(resumed)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6)
    wa = load_generator(str(straight)).module.state_dict()
    wb = load_generator(str(resumed)).module.state_dict()
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)


def test_nan_loss_rolls_back_with_lower_lr(tmp_path, capsys):
    run = distill(DistillConfig(**TINY, steps=5, out=str(tmp_path / "run")), source=_source(4, "nan"))
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rollback = [e for e in events if e.get("event") == "rollback"]
    assert rollback and rollback[0]["to_step"] == 3 and rollback[0]["lr_scale"] == 0.5
    assert "rolled back to step 3" in capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text())["steps"] == 5


def test_image_teacher_without_data_is_one_clear_error(tmp_path):
    from edgedistill.models import create

    ckpt = tmp_path / "g.pth"
    torch.save(create("resnet", ngf=4, n_blocks=1).state_dict(), ckpt)
    r = subprocess.run([sys.executable, "-m", "edgedistill", "distill", f"resnet:{ckpt}", "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "has no default data: pass --data" in r.stderr


def test_image_folder_data(tmp_path):
    from PIL import Image

    from edgedistill.models import create

    data = tmp_path / "photos"
    data.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        arr = (torch.rand(48, 40, 3, generator=gen) * 255).byte().numpy()
        Image.fromarray(arr).save(data / f"{i}.png")
    ckpt = tmp_path / "g.pth"
    torch.save(create("resnet", ngf=8, n_blocks=2).state_dict(), ckpt)
    cfg = DistillConfig(teacher=f"resnet:{ckpt}", data=str(data), out=str(tmp_path / "run"), width=0.5,
                        steps=2, batch=2, patch=32, log_every=1, threads=1)  # fmt: skip
    run = distill(cfg)
    assert json.loads((run / "metrics.json").read_text())["psnr_vs_teacher"] > 0


def test_ddp_two_gloo_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "edgedistill", "distill", "digits-dcgan", "--width", "0.25", "--steps", "3", "--batch", "4",
           "--threads", "1", "--out", str(tmp_path / "ddp")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["steps"] == 3


def test_teacher_cache_and_kernel_alignment(tmp_path):
    cfg = DistillConfig(
        **{**TINY, "batch": 4}, steps=2, cache=24, feat_mode="kernel_alignment", out=str(tmp_path / "run")
    )
    run = distill(cfg, source=_source())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(0 <= r["feat"] <= 1 for r in rows)


def test_ctrl_c_saves_and_resume_continues(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgedistill", "distill", "digits-dcgan", "--steps", "100000", "--batch", "4",
           "--threads", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "interrupted at step" in err and "--resume" in err
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] >= 25
    r = subprocess.run([*cmd[:5], "--steps", str(state["step"] + 2), *cmd[7:], "--resume"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-1500:]
    assert json.loads((out / "metrics.json").read_text())["steps"] == state["step"] + 2
