"""The joint loop: a generator synthesises inputs, the student learns the teacher's answers on them.

One step is, for replay (the default), one generator update on a fresh class-conditional batch,
which joins a bank of past batches, then `student_steps` KD updates on jittered batches from the
bank; for DAFL, a generator update (one-hot CE + activation + information entropy [+ BN
matching]) then a student update (KD on the same, detached, images); for DFAD, `student_steps`
student updates (L1 between logits) then one generator update that maximises that L1; for `kd`,
one student update on a real, shifted batch (the with-data baseline, same optimiser and EMA).
Reused from the generator distiller: the EMA of the student's weights (what gets evaluated), the
two-stage Ctrl-C, atomic checkpoints with resume, and a rollback with halved learning rates when
a loss turns non-finite.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from edgedistill.core.atomic import write_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.datafree import losses as L
from edgedistill.datafree.augment import shift_flip
from edgedistill.datafree.config import DataFreeConfig
from edgedistill.datafree.generator import SampleGenerator, balanced_labels
from edgedistill.distiller.ema import EMA
from edgedistill.distiller.interrupt import stop_on_sigint

MAX_ROLLBACKS = 8


class DataFreeTrainer:
    def __init__(
        self,
        cfg: DataFreeConfig,
        teacher: nn.Module,
        student: nn.Module,
        generator: SampleGenerator | None,
        run_dir: Path,
        real: tuple[torch.Tensor, bool] | None = None,
        console: Console | None = None,
    ) -> None:
        """`real` = (images, flip) for the `kd` method; data-free methods never receive images."""
        if (cfg.method == "kd") != (real is not None):
            raise EdgeDistillError("internal: the kd method needs real images and the data-free ones none")
        self.cfg, self.run_dir, self.console = cfg, run_dir, console or Console(stderr=True)
        self.teacher = teacher.eval().requires_grad_(False)
        self.student, self.generator, self.real = student, generator, real
        self.ema = EMA(student, cfg.ema_decay)
        self.opt_s = torch.optim.Adam(student.parameters(), lr=cfg.lr_student)
        self.opt_g = (
            torch.optim.Adam(generator.parameters(), lr=cfg.lr_generator, betas=(0.5, 0.999))
            if generator is not None
            else None
        )
        self.features = L.PreHeadFeatures(self.teacher)
        self.bn = L.BNStatistics(self.teacher, cfg.bn_first) if cfg.bn_weight > 0 else None
        self.bank = SyntheticBank(cfg.bank_size) if cfg.method == "replay" else None
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step, self.lr_scale, self.wall_s = 0, 1.0, 0.0
        self.ckpt_path = run_dir / "checkpoints" / "last.pt"

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "identity": json.dumps(self.cfg.identity(), sort_keys=True),
            "step": self.step,
            "lr_scale": self.lr_scale,
            "wall_s": self.wall_s,
            "student": self.student.state_dict(),
            "ema": self.ema.model.state_dict(),
            "opt_s": self.opt_s.state_dict(),
            "generator": self.generator.state_dict() if self.generator is not None else None,
            "opt_g": self.opt_g.state_dict() if self.opt_g is not None else None,
            "bank": self.bank.state_dict() if self.bank is not None else None,
            "rng": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step, self.lr_scale, self.wall_s = state["step"], state["lr_scale"], state["wall_s"]
        self.student.load_state_dict(state["student"])
        self.ema.model.load_state_dict(state["ema"])
        self.opt_s.load_state_dict(state["opt_s"])
        if self.generator is not None:
            self.generator.load_state_dict(state["generator"])
            self.opt_g.load_state_dict(state["opt_g"])  # type: ignore[union-attr]
        if self.bank is not None:
            self.bank.load_state_dict(state["bank"])
        self.gen.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])

    def save_checkpoint(self) -> None:
        state = self.state_dict()
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.ckpt_path, lambda p: torch.save(state, p))

    def resume(self) -> None:
        if not self.ckpt_path.exists():
            raise EdgeDistillError(
                f"--resume: no checkpoint in {self.ckpt_path.parent}; start without --resume"
            )
        state = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        if state["identity"] != json.dumps(self.cfg.identity(), sort_keys=True):
            raise EdgeDistillError(
                f"--resume: {self.run_dir} was trained with other options (see its config.json); "
                "resume with the same options or use another --out"
            )
        self.load_state_dict(state)

    # ------------------------------------------------------------------------------ steps
    def _set_lr(self) -> None:
        decay = 0.5 * (1 + math.cos(math.pi * min(self.step / self.cfg.steps, 1.0)))
        for g in self.opt_s.param_groups:
            g["lr"] = self.cfg.lr_student * self.lr_scale * decay
        if self.opt_g is not None:
            for g in self.opt_g.param_groups:
                g["lr"] = self.cfg.lr_generator * self.lr_scale

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """DeepInversion's jitter (and flips): the teacher must agree on shifted copies, too."""
        if not self.cfg.jitter and not self.cfg.flip:
            return x
        return shift_flip(x, self.gen, pad=self.cfg.jitter, flip=self.cfg.flip)

    def _synthesise(self) -> torch.Tensor:
        z = torch.randn(self.cfg.batch, self.cfg.nz, generator=self.gen)
        return self.generator(z)  # type: ignore[misc]

    def _bn_term(self) -> torch.Tensor:
        return self.bn.loss() if self.bn is not None else torch.zeros(())

    def _student_update(self, loss: torch.Tensor) -> None:
        self.opt_s.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_s.step()

    def _generator_update(self, loss: torch.Tensor) -> None:
        self.opt_g.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        loss.backward()
        self.opt_g.step()  # type: ignore[union-attr]

    def train_step(self) -> dict[str, float]:
        """One step; returns its losses (a non-finite one means nothing may be trusted)."""
        cfg = self.cfg
        self.student.train()
        if cfg.method == "kd":
            x_all, flip = self.real  # type: ignore[misc]
            x = shift_flip(
                x_all[torch.randint(len(x_all), (cfg.batch,), generator=self.gen)], self.gen, flip=flip
            )
            with torch.no_grad():
                t = self.teacher(x)
            loss = L.kd_kl(self.student(x), t, cfg.temperature)
            self._student_update(loss)
            return {"kd": float(loss.detach())}
        self.generator.train()  # type: ignore[union-attr]
        if cfg.method == "replay":
            return self._replay_step()
        if cfg.method == "dafl":
            x = self._synthesise()
            if self.bn is not None:
                self.bn.clear()
            t = self.teacher(x)
            feats = self.features.value
            oh, act, ie = L.one_hot_ce(t), L.activation(feats), L.information_entropy(t)  # type: ignore[arg-type]
            bn = self._bn_term()
            g_loss = cfg.w_one_hot * oh + cfg.w_activation * act + cfg.w_entropy * ie + cfg.bn_weight * bn
            self._generator_update(g_loss)
            kd = L.kd_kl(self.student(x.detach()), t.detach(), cfg.temperature)
            self._student_update(kd)
            return {
                k: float(v.detach()) for k, v in {"oh": oh, "act": act, "ie": ie, "bn": bn, "kd": kd}.items()
            }
        # dfad
        for _ in range(cfg.student_steps):
            with torch.no_grad():
                x = self._synthesise()
                t = self.teacher(x)
            s_loss = L.logit_l1(self.student(x), t)
            self._student_update(s_loss)
        if self.bn is not None:
            self.bn.clear()
        x = self._synthesise()
        t = self.teacher(x)
        self.student.eval()  # the generator chases the student as it is, its BN statistics unmoved
        adv = L.logit_l1(self.student(x), t)
        bn = self._bn_term()
        self._generator_update(-adv + cfg.bn_weight * bn)
        self.student.zero_grad(set_to_none=True)
        return {k: float(v.detach()) for k, v in {"l1": s_loss, "adv": adv, "bn": bn}.items()}

    def _replay_step(self) -> dict[str, float]:
        """One generator update on a fresh class-conditional batch (CE to the asked class + BN matching
        − the agreeing KL to the student), the batch into the bank, then `student_steps` KD updates
        on (augmented) batches drawn from the bank: every image is learnt from many times."""
        cfg, gen_net = self.cfg, self.generator
        labels = balanced_labels(cfg.batch, gen_net.classes, self.gen)  # type: ignore[union-attr]
        x = gen_net(torch.randn(cfg.batch, cfg.nz, generator=self.gen), labels)  # type: ignore[misc]
        xa = self._augment(x)
        if self.bn is not None:
            self.bn.clear()
        t = self.teacher(xa)
        bn = self._bn_term()
        ce = F.cross_entropy(t, labels)
        adv = torch.zeros(())
        if cfg.w_adv > 0:
            self.student.eval()  # the generator chases the student as it is, its BN statistics unmoved
            adv = L.agreeing_kl(self.student(xa), t)
        self._generator_update(cfg.w_one_hot * ce + cfg.bn_weight * bn - cfg.w_adv * adv)
        self.student.zero_grad(set_to_none=True)
        self.bank.add(x.detach())  # type: ignore[union-attr]
        self.student.train()
        if self.bn is not None:
            self.bn.enabled = False
        try:
            for _ in range(cfg.student_steps):
                xb = self._augment(self.bank.draw(cfg.batch, self.gen))  # type: ignore[union-attr]
                with torch.no_grad():
                    tb = self.teacher(xb)
                kd = L.kd_kl(self.student(xb), tb, cfg.temperature)
                self._student_update(kd)
        finally:
            if self.bn is not None:
                self.bn.enabled = True
        return {k: float(v.detach()) for k, v in {"ce": ce, "bn": bn, "adv": adv, "kd": kd}.items()}

    # ------------------------------------------------------------------------------ loop
    def train(self) -> None:
        """Run to `cfg.steps`; a first Ctrl-C saves and stops after the current step."""
        if self.step == 0:  # a resumed run keeps the RNG state its checkpoint restored
            torch.manual_seed(self.cfg.seed)
            self.save_checkpoint()
        columns = [
            TextColumn(f"[bold]{self.cfg.method}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[losses]}"), TimeRemainingColumn(),
        ]  # fmt: skip
        with Progress(*columns, console=self.console) as progress, stop_on_sigint() as stop:
            task = progress.add_task("train", total=self.cfg.steps, completed=self.step, losses="")
            try:
                self._loop(stop, progress, task)
                if self.step < self.cfg.steps:
                    stop.settled = True  # the save is short and whole: a second press waits for it
                    self.save_checkpoint()
            except KeyboardInterrupt:
                raise EdgeDistillError(
                    f"interrupted during step {self.step + 1}: the last complete checkpoint stays in "
                    f"{self.ckpt_path.parent}; continue with the same command and --resume"
                ) from None
        if self.step < self.cfg.steps:
            raise EdgeDistillError(
                f"interrupted at step {self.step}: checkpoint saved in {self.ckpt_path.parent}; "
                "continue with the same command and --resume"
            )
        self.features.remove()
        if self.bn is not None:
            self.bn.remove()

    def _loop(self, stop: object, progress: Progress, task: object) -> None:
        rollbacks = 0
        while self.step < self.cfg.steps and not stop.is_set():  # type: ignore[attr-defined]
            self._set_lr()
            t0 = time.perf_counter()
            losses = self.train_step()
            if not all(math.isfinite(v) for v in losses.values()):
                rollbacks += 1
                self._rollback(losses, rollbacks)
                continue
            rollbacks = 0
            self.step += 1
            self.ema.update(self.student, self.step)
            self.wall_s += time.perf_counter() - t0
            if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                shown = " ".join(f"{k}={v:.3g}" for k, v in losses.items())
                progress.update(task, losses=shown)  # type: ignore[arg-type]
                self._append_metrics({"step": self.step, **{k: round(v, 5) for k, v in losses.items()}})
            progress.update(task, completed=self.step)  # type: ignore[arg-type]
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                self.save_checkpoint()

    def _rollback(self, losses: dict[str, float], count: int) -> None:
        if count > MAX_ROLLBACKS:
            raise EdgeDistillError(
                f"loss stays non-finite at step {self.step} after {MAX_ROLLBACKS} rollbacks ({losses}); "
                "lower the learning rates or --bn-weight"
            )
        state = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        bad = self.step
        self.load_state_dict(state)
        self.lr_scale = state["lr_scale"] * 0.5
        self.console.print(
            f"[yellow]loss became non-finite at step {bad}: rolled back to step {self.step}, "
            f"learning rates x{self.lr_scale:g}[/]"
        )
        self._append_metrics(
            {"step": bad, "event": "rollback", "to_step": self.step, "lr_scale": self.lr_scale}
        )

    def _append_metrics(self, row: dict) -> None:
        with (self.run_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")


class SyntheticBank:
    """A ring buffer of past synthetic batches (float16, saved with the checkpoint): the student
    learns from all the generator has made so far, not only from its latest, drifting output."""

    def __init__(self, size: int) -> None:
        self.size, self.images, self.next, self.count = size, torch.empty(0), 0, 0

    def add(self, x: torch.Tensor) -> None:
        if self.images.numel() == 0:
            self.images = torch.empty(self.size, *x.shape[1:], dtype=torch.float16)
        idx = (self.next + torch.arange(len(x))) % self.size
        self.images[idx] = x.to(torch.float16)
        self.next = int(idx[-1] + 1) % self.size
        self.count = min(self.count + len(x), self.size)

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return self.images[torch.randint(self.count, (n,), generator=gen)].float()

    def state_dict(self) -> dict:
        return {"images": self.images[: self.count].clone(), "next": self.next}

    def load_state_dict(self, state: dict) -> None:
        self.images, self.next = torch.empty(0), state["next"]
        self.count = len(state["images"])
        if self.count:
            self.images = torch.empty(self.size, *state["images"].shape[1:], dtype=torch.float16)
            self.images[: self.count] = state["images"]
