"""The distillation trainer end to end on the small digits teacher: files, resume, rollback, DDP,
Ctrl-C, EMA, teacher cache, and scores that show the student learned from the teacher."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from edgedistill.core.errors import EdgeDistillError
from edgedistill.data.sources import NoiseSource
from edgedistill.distiller.api import distill
from edgedistill.distiller.config import DistillConfig
from edgedistill.distiller.ema import EMA
from edgedistill.models.loading import load_generator

TINY = {"teacher": "digits-dcgan", "width": 0.25, "batch": 4, "checkpoint_every": 3, "log_every": 1,
        "sample_every": 3, "ema": 0.9, "threads": 1}  # fmt: skip

# One real distillation process: the Trainer on the digits teacher's own rank-aware source, run
# alone or under torchrun. It records each step's inputs, can turn one rank's batch into NaN or send
# itself two Ctrl-C in the middle of a step, and writes rank<R>.pt when training completes.
WORKER = r'''
import json, os, signal, sys, time
from dataclasses import replace
from pathlib import Path

import torch

from edgedistill.core.errors import EdgeDistillError
from edgedistill.distiller.api import _init_distributed, build_parts, teacher_d_loss
from edgedistill.distiller.config import DistillConfig
from edgedistill.distiller.trainer import Trainer
from edgedistill.models.loading import load_generator

opts = json.loads(sys.argv[1])
signal.alarm(opts.get("alarm", 200))  # a rank stuck in a collective dies instead of hanging CI
cfg = DistillConfig(teacher="digits-dcgan", width=0.25, batch=4, log_every=1, sample_every=10**6,
                    threads=1, ema=0.9, out=opts["out"], steps=opts["steps"],
                    checkpoint_every=opts.get("checkpoint_every", 2), **opts.get("cfg", {}))
rank, world = _init_distributed()
teacher = load_generator(cfg.teacher)
cfg = cfg.with_defaults(teacher.spec.kind)
cfg = replace(cfg, gan_loss=teacher_d_loss(cfg, teacher) or "lsgan")
torch.manual_seed(cfg.seed)
parts = build_parts(cfg, teacher, rank, None)
Path(cfg.out).mkdir(parents=True, exist_ok=True)


class Recorded:
    """The run's real source; keeps each step's inputs and makes one batch NaN on request."""

    def __init__(self, source):
        self.source, self.name, self.seen, self.fired = source, source.name, {}, False

    def batch(self, step, size):
        b = self.source.batch(step, size)
        if rank == opts.get("nan_rank") and step == opts.get("nan_step") and not self.fired:
            self.fired = True
            b.inputs = torch.full_like(b.inputs, float("nan"))
        self.seen[step] = b.inputs.clone()
        return b

    def heldout(self):
        return self.source.heldout()


parts.source = Recorded(parts.source)
trainer = Trainer(cfg, parts, Path(cfg.out), rank, world)
if rank == opts.get("slow_rank"):  # slow after the step's last collective: this rank's clock runs ahead
    _save = trainer.save_checkpoint
    trainer.save_checkpoint = lambda: (time.sleep(0.3), _save())
if "sigint_in_save" in opts:  # the second of two quick Ctrl-C lands while the stopped run saves
    _write = trainer.save_checkpoint

    def save_then_ctrl_c():
        _write()
        if trainer.step == opts["sigint_in_save"]:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # Python runs the handler here, still inside the save

    trainer.save_checkpoint = save_then_ctrl_c
d_calls = {}


def ctrl_c(module, inputs, output):
    """D's third call in a step scores the student for G: by then D has already stepped."""
    d_calls[trainer.step] = d_calls.get(trainer.step, 0) + 1
    if d_calls[trainer.step] == 3 and trainer.step in (opts.get("sigint_step"), opts.get("sigint_once_step")):
        os.kill(os.getpid(), signal.SIGINT)
        if trainer.step == opts.get("sigint_step"):
            os.kill(os.getpid(), signal.SIGINT)


if parts.discriminator is not None:
    parts.discriminator.register_forward_hook(ctrl_c)


def params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


initial = params(trainer.trainable)
try:
    if opts.get("resume"):
        trainer.resume()
    trainer.train()
except EdgeDistillError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
torch.save({"step": trainer.step, "lr_scale": trainer.lr_scale, "initial": initial,
            "trainable": params(trainer.trainable), "d": params(parts.discriminator or torch.nn.Module()),
            "ema": params(trainer.ema.model), "seen": parts.source.seen, "nan_fired": parts.source.fired},
           Path(cfg.out) / f"rank{rank}.pt")
if world > 1:
    torch.distributed.destroy_process_group()
'''


class ScriptedSource(NoiseSource):
    """The digits' real noise source, with one fault injected the first time a step is drawn."""

    def __init__(self, spec, fault_step, fault):
        from edgedistill.data.bundled import digits_images

        super().__init__(spec, seed=0, real=digits_images("train")[0])
        self.fault_step, self.fault, self.fired = fault_step, fault, False
        self.heldout_count = 64

    def batch(self, step, size):
        fire = step == self.fault_step and not self.fired
        self.fired = self.fired or fire
        if fire and self.fault == "sigint":  # a real Ctrl-C: the step goes on and ends
            os.kill(os.getpid(), signal.SIGINT)
        if fire and self.fault == "raise":  # an interrupt that escapes from inside a step
            raise KeyboardInterrupt
        b = super().batch(step, size)
        if fire and self.fault == "nan":
            b.inputs = torch.full_like(b.inputs, float("nan"))
        return b


def _source(fault_step=-100, fault="nan"):
    return ScriptedSource(load_generator("digits-dcgan").spec, fault_step, fault)


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["total"] for r in rows if "total" in r}


def _run_worker(tmp_path, opts, nproc=1, timeout=260):
    """Run WORKER (under torchrun when nproc > 1); a hang fails the test instead of blocking CI."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*launcher, str(script), json.dumps(opts)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun passes SIGTERM on to its workers
        proc.communicate(timeout=60)
        pytest.fail(f"distillation {opts} still running after {timeout} s: a rank hangs")
    if f"exitcode: -{int(signal.SIGALRM)}" in err:
        pytest.fail(f"distillation {opts}: a rank hung in a collective until its alarm killed it")
    return proc.returncode, err


def _assert_same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{what}: {differ[:3]} differ between ranks"


def _assert_whole(state: dict) -> None:
    """A checkpoint is whole when G's and D's optimizers took exactly `step` steps each."""
    expected = {state["step"]} if state["step"] else set()
    for opt in ("opt_g", "opt_d"):
        taken = {int(s["step"]) for s in state[opt]["state"].values()}
        assert taken == expected, f"{opt} took {taken} steps but the checkpoint says step {state['step']}"


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


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    return distill(DistillConfig(**TINY, steps=6, out=str(out)), source=_source())


@pytest.mark.parametrize(
    ("fault", "at", "message", "saved"),
    [
        ("sigint", 3, "interrupted at step 4: checkpoint saved", 4),
        ("raise", 4, "interrupted during step 5: stopped without saving it", 3),
    ],
)
def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path, straight_run, fault, at, message, saved):
    with pytest.raises(EdgeDistillError, match=message):
        distill(DistillConfig(**TINY, steps=6, out=str(tmp_path / "b")), source=_source(at, fault))
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == saved
    _assert_whole(state)
    with pytest.raises(EdgeDistillError, match="already holds a run: add --resume"):
        distill(DistillConfig(**TINY, steps=6, out=str(tmp_path / "b")), source=_source())
    resumed = distill(DistillConfig(**TINY, steps=6, out=str(tmp_path / "b")), source=_source(), resume=True)
    a, b = _losses(straight_run), _losses(resumed)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6)
    wa = load_generator(str(straight_run)).module.state_dict()
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


def test_distilled_student_beats_its_start_on_paired_folder(tmp_path):
    """Training moves the student toward the teacher, and paired data is scored on its targets.

    The targets (B/) are the teacher's own outputs, so the teacher must score near-perfectly on them
    and the student exactly as well as it matches the teacher; smooth inputs keep 30 steps enough.
    """
    from PIL import Image

    from edgedistill.distiller.api import build_parts
    from edgedistill.distiller.evaluate import evaluate_student
    from edgedistill.models import create

    ckpt = tmp_path / "g.pth"
    torch.save(create("resnet", ngf=8, n_blocks=2).state_dict(), ckpt)
    teacher = load_generator(f"resnet:{ckpt}")
    gen = torch.Generator().manual_seed(0)
    for sub in ("A", "B"):
        (tmp_path / "photos" / sub).mkdir(parents=True)
    for i in range(6):
        coarse = torch.rand(1, 3, 5, 5, generator=gen)
        x = torch.nn.functional.interpolate(coarse, size=(40, 40), mode="bilinear", align_corners=False)
        x = (x * 255).round() / 255
        with torch.no_grad():
            y = teacher.spec.to_pixels(teacher.module(teacher.spec.to_input(x)))
        for sub, img in (("A", x), ("B", y)):
            arr = (img[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
            Image.fromarray(arr).save(tmp_path / "photos" / sub / f"{i}.png")
    cfg = DistillConfig(teacher=f"resnet:{ckpt}", data=str(tmp_path / "photos"), out=str(tmp_path / "run"),
                        width=0.5, steps=30, lr=1e-3, batch=2, patch=32, log_every=1, threads=1)  # fmt: skip
    metrics = json.loads((distill(cfg) / "metrics.json").read_text())

    torch.manual_seed(cfg.seed)  # as distill() does: the student as it was at step 0
    parts = build_parts(cfg.with_defaults(teacher.spec.kind), teacher, 0, None)
    start = evaluate_student(teacher.module, parts.student.eval(), parts.spec, parts.source, None)
    assert metrics["psnr_vs_teacher"] > start["psnr_vs_teacher"] + 1.5, (metrics, start)
    for key in ("psnr_vs_target", "ssim_vs_target", "teacher_psnr_vs_target", "teacher_ssim_vs_target"):
        assert key in metrics and math.isfinite(metrics[key]), key
    assert metrics["teacher_psnr_vs_target"] > 40, metrics  # targets aligned and in the teacher's range
    assert metrics["psnr_vs_target"] == pytest.approx(metrics["psnr_vs_teacher"], abs=0.3), metrics


def test_ddp_ranks_stay_identical_on_different_batches(tmp_path):
    out = tmp_path / "ddp"
    rc, err = _run_worker(tmp_path, {"out": str(out), "steps": 4}, nproc=2)
    assert rc == 0, err[-2000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] == 4
    assert sorted(r0["seen"]) == sorted(r1["seen"]) == [0, 1, 2, 3]
    same = [s for s in r0["seen"] if torch.equal(r0["seen"][s], r1["seen"][s])]
    assert not same, f"both ranks drew the same batch at steps {same}"
    # different batches, same weights: the gradients were averaged across ranks
    moved = [k for k in r0["initial"] if not torch.equal(r0["initial"][k], r0["trainable"][k])]
    assert moved, "no weight changed: nothing was trained"
    for part in ("trainable", "d", "ema"):
        _assert_same(r0[part], r1[part], part)


def test_ddp_ranks_fit_one_step_count_to_a_time_budget(tmp_path):
    """Each rank's clock differs: fitted alone, the counts could differ and one rank would wait
    forever in an all-reduce the other never reaches. The slowest rank's speed and clock decide."""
    out = tmp_path / "ddp"
    opts = {"out": str(out), "steps": 400, "slow_rank": 1, "cfg": {"time_budget_s": 8.0, "val_every": 0}}
    rc, err = _run_worker(tmp_path, opts, nproc=2)
    assert rc == 0, err[-2000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert 20 < r0["step"] == r1["step"] < 400
    for part in ("trainable", "d", "ema"):
        _assert_same(r0[part], r1[part], part)


@pytest.mark.parametrize("lambda_adv", [0.0, 0.01], ids=["no-D", "with-D"])
def test_ddp_nan_on_one_rank_rolls_back_on_every_rank(tmp_path, lambda_adv):
    """Without D only rank 1's G loss is NaN: the ranks must agree to skip, or rank 0 waits forever
    in the gradient all-reduce. With D the NaN reaches D's loss first: D must not step either."""
    out = tmp_path / "ddp"
    opts = {"out": str(out), "steps": 5, "checkpoint_every": 2, "nan_rank": 1, "nan_step": 3,
            "cfg": {"lambda_adv": lambda_adv}}  # fmt: skip
    rc, err = _run_worker(tmp_path, opts, nproc=2)
    assert rc == 0, err[-2000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r1["nan_fired"] and not r0["nan_fired"]
    assert "loss became non-finite on another rank at step 3" in err  # rank 0 reports rank 1's NaN
    assert all(torch.isfinite(x).all() for x in r0["seen"].values())  # rank 0 never saw the NaN itself
    assert r0["step"] == r1["step"] == 5 and r0["lr_scale"] == r1["lr_scale"] == 0.5
    for part in ("trainable", "d", "ema"):
        _assert_same(r0[part], r1[part], part)
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e for e in events if e.get("event") == "rollback"] == [
        {"step": 3, "event": "rollback", "to_step": 2, "lr_scale": 0.5}
    ]


def test_second_ctrl_c_mid_step_writes_no_checkpoint(tmp_path):
    """Two Ctrl-C after D stepped and before G did: exit at once, the last whole checkpoint stays."""
    opts = {"out": str(tmp_path / "b"), "steps": 7, "checkpoint_every": 2}
    rc, err = _run_worker(tmp_path, {**opts, "sigint_step": 5})
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    _assert_whole(state)
    assert state["step"] == 4
    assert rc == 2 and "interrupted during step 6: stopped without saving it" in err, err[-2000:]
    rc, err = _run_worker(tmp_path, {**opts, "resume": True})
    assert rc == 0, err[-2000:]
    rc, err = _run_worker(tmp_path, {**opts, "out": str(tmp_path / "a")})
    assert rc == 0, err[-2000:]
    resumed, straight = (torch.load(tmp_path / d / "rank0.pt", weights_only=True) for d in "ba")
    for part in ("trainable", "d", "ema"):
        for k, v in straight[part].items():
            assert torch.allclose(v, resumed[part][k], atol=1e-6), (part, k)


def test_second_ctrl_c_while_the_stopped_run_saves_lets_the_save_finish(tmp_path):
    """Ctrl-C mid step 5 stops the run after it; a second press inside the save that follows changes
    nothing: the error says the step was saved, and it was (CI once saw 'stopped without saving it'
    above a whole checkpoint of the stopped step)."""
    opts = {"out": str(tmp_path / "b"), "steps": 9, "checkpoint_every": 4, "sigint_once_step": 4}
    rc, err = _run_worker(tmp_path, {**opts, "sigint_in_save": 5})
    assert rc == 2 and "interrupted at step 5: checkpoint saved" in err, err[-2000:]
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    _assert_whole(state)
    assert state["step"] == 5


def test_two_quick_ctrl_c_leave_a_whole_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgedistill", "distill", "digits-dcgan", "--steps", "100000", "--batch", "4",
           "--threads", "1", "--checkpoint-every", "3", "--sample-every", "2", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "samples" / "step_000004.png").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.02)  # two presses, not one: signals sent at the same instant merge into one
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "interrupted" in err and "--resume" in err, err[-1500:]
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    _assert_whole(state)
    if "checkpoint saved" not in err:  # the second press came mid-step: only a periodic checkpoint exists
        assert "stopped without saving it" in err and state["step"] % 3 == 0
    r = subprocess.run([*cmd[:5], "--steps", str(state["step"] + 2), *cmd[7:], "--resume"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-1500:]
    assert json.loads((out / "metrics.json").read_text())["steps"] == state["step"] + 2


def test_teacher_cache_holds_the_teachers_outputs_and_features(tmp_path):
    from edgedistill.distiller.features import FeatureTap, kd_layer_names
    from edgedistill.distiller.student import make_student
    from edgedistill.distiller.teacher_cache import TeacherCache

    teacher = load_generator("digits-dcgan")
    t_net, spec = teacher.module, teacher.spec
    example = spec.example_inputs()
    student, _ = make_student(t_net, spec, 0.25, "inherit", None, example)
    layers = kd_layer_names(t_net, student, example, family=spec.family)
    assert layers
    cache = TeacherCache(t_net, _source(), 24, layers, seed=0)
    for step in (0, 5):
        batch, y_t, feats = cache.batch(step, 4)
        with torch.no_grad(), FeatureTap(t_net, layers) as tap:
            assert torch.allclose(y_t, t_net(batch.inputs), atol=1e-5)
        for cached, live in zip(feats, tap.features, strict=True):
            assert torch.allclose(cached, live, rtol=1e-2, atol=1e-2)
    a, b = cache.batch(0, 8)[0].inputs, cache.batch(1, 8)[0].inputs
    assert not torch.equal(a, b)  # each step draws its own batch from the pool
    other_rank = TeacherCache(t_net, _source(), 24, layers, seed=1000)
    assert not torch.equal(other_rank.batch(0, 8)[0].inputs, a)


def test_teacher_cache_run_scores_closer_than_noise(tmp_path):
    from edgedistill.metrics.feature_distance import feature_distance, load_feature_net

    cfg = DistillConfig(
        **{**TINY, "batch": 4}, steps=2, cache=24, feat_mode="kernel_alignment", out=str(tmp_path / "run")
    )
    source = _source()
    run = distill(cfg, source=source)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "total" in r]  # training rows (validation rows are interleaved)
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["feat"]) for r in rows)
    metrics = json.loads((run / "metrics.json").read_text())
    real = load_generator("digits-dcgan").spec.to_pixels(source.heldout().real)
    noise = torch.rand_like(real)
    to_noise = feature_distance(load_feature_net("digits-dcgan"), real, noise)["fid"]
    assert metrics["feature_distance_teacher"] < metrics["feature_distance"] < to_noise / 2, (
        metrics,
        to_noise,
    )


def test_ema_averages_batchnorm_statistics_with_the_weights():
    live = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    ema = EMA(live, decay=0.5)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        live[0].weight.add_(1.0)
    live.train()(torch.randn(8, 1, 4, 4) * 3 + 5)  # moves the running statistics
    ema.update(live, step=10**6)  # long past the warm-up: d = decay
    now, averaged = live.state_dict(), ema.model.state_dict()
    for key in ("0.weight", "1.running_mean", "1.running_var"):
        assert torch.allclose(averaged[key], 0.5 * before[key] + 0.5 * now[key], atol=1e-6), key
    assert averaged["1.num_batches_tracked"] == now["1.num_batches_tracked"]


def test_teacher_cache_keeps_features_beyond_half_precision():
    """Features are cached in fp16 to save memory, but not where fp16 would turn them into inf."""
    from edgedistill.data.sources import Batch, step_generator
    from edgedistill.distiller.teacher_cache import TeacherCache

    class Pixels:  # a data source: batch(step, size) and heldout()
        name = "pixels"

        def batch(self, step, size):
            return Batch(torch.rand(size, 1, 4, 4, generator=step_generator(0, step)) + 1)

        def heldout(self):
            return self.batch(-1000, 4)

    teacher = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Tanh())
    with torch.no_grad():
        teacher[0].weight.fill_(1e5)  # conv outputs reach 2e5, beyond fp16's 65504
    cache = TeacherCache(teacher, Pixels(), 20, ["0"], seed=0)
    assert torch.isfinite(cache.features[0]).all()
    with torch.no_grad():
        assert torch.allclose(cache.features[0].float(), teacher[0](cache.inputs), rtol=1e-5)


SIGINT_ON_A_BAD_ALT_STACK = """
import ctypes, mmap, os, signal
from edgedistill.distiller.interrupt import stop_on_sigint
class StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
size = 1 << 16  # PROT_NONE (0): no signal frame can be written there
unusable = libc.mmap(None, size, 0, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
assert libc.sigaltstack(ctypes.byref(StackT(unusable, 0, size)), None) == 0
with stop_on_sigint() as stop:
    os.kill(os.getpid(), signal.SIGINT)
after = StackT()
libc.sigaltstack(None, ctypes.byref(after))
print("stopped" if stop.is_set() else "not stopped", after.ss_sp == unusable)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="sigaltstack through libc: Linux")
def test_ctrl_c_survives_an_unusable_alternate_signal_stack():
    """OpenVINO's CPU plugin leaves an alternate signal stack on a thread that compiled a model; a real
    Ctrl-C delivered on it once segfaulted the whole test suite. Training's handler must not use it
    (and puts it back after)."""
    r = subprocess.run(
        [sys.executable, "-c", SIGINT_ON_A_BAD_ALT_STACK], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-800:]}"
    assert r.stdout.split() == ["stopped", "True"]
