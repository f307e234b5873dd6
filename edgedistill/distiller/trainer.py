"""The distillation loop: KD + adversarial steps, EMA, atomic checkpoints, exact resume, NaN rollback.

One step: the teacher (or its cache) gives y_T and its features on a batch; D learns real (data,
or y_T when there is none) vs the student's y_S; the student learns
    lambda_pix * pixel_kd(y_S, y_T) + lambda_feat * feature_kd + lambda_adv * g_loss(D(y_S)).

Under DDP every rank must take the same branch, or one waits in a collective the others never
join: whether a step is taken (all losses finite) and whether to stop (Ctrl-C) are agreed by
all-reduce. A checkpoint is written only between steps, so it is always whole.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from edgedistill.core.atomic import write_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.data.imageio import save_grid
from edgedistill.data.sources import Batch, DataSource
from edgedistill.distiller.budget import PROBE_STEPS, BudgetFitter
from edgedistill.distiller.config import DistillConfig
from edgedistill.distiller.ema import EMA
from edgedistill.distiller.features import FeatureTap
from edgedistill.distiller.interrupt import stop_on_sigint
from edgedistill.distiller.losses import (
    FeatureKD,
    colour_kd,
    d_feature_layers,
    d_feature_match,
    d_loss,
    g_loss,
    pixel_kd,
)
from edgedistill.distiller.teacher_cache import TeacherCache
from edgedistill.distiller.validation import BestKeeper

MAX_ROLLBACKS = 3


@dataclass
class Parts:
    """What the trainer trains and against what; built by edgedistill.distiller.api."""

    teacher: nn.Module
    student: nn.Module
    spec: GeneratorSpec
    source: DataSource
    discriminator: nn.Module | None = None
    conditional_d: bool = False
    layers: list[str] = field(default_factory=list)
    feature_kd: FeatureKD | None = None


class Trainable(nn.Module):
    """The student and its feature adapters as one module, so DDP syncs both in one reducer."""

    def __init__(self, student: nn.Module, feature_kd: FeatureKD | None) -> None:
        super().__init__()
        self.student = student
        self.feature_kd = feature_kd

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.student(*args)


class Trainer:
    def __init__(
        self, cfg: DistillConfig, parts: Parts, run_dir: Path, rank: int = 0, world: int = 1
    ) -> None:
        self.cfg, self.p, self.run_dir, self.rank, self.world = cfg, parts, run_dir, rank, world
        self.device = next(parts.student.parameters()).device
        self.main = rank == 0
        self.console = Console(stderr=True)
        self.trainable = Trainable(parts.student, parts.feature_kd)
        self.g_module: nn.Module = self.trainable
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.g_module = DistributedDataParallel(self.trainable)
        self.opt_g = torch.optim.Adam(self.trainable.parameters(), cfg.lr, betas=(0.5, 0.999))
        self.opt_d = (
            torch.optim.Adam(parts.discriminator.parameters(), cfg.lr_d, betas=(0.5, 0.999))
            if parts.discriminator is not None
            else None
        )
        self.ema = EMA(parts.student, cfg.ema)
        self.step, self.lr_scale, self.wall_s = 0, 1.0, 0.0
        self.cache = (
            TeacherCache(
                parts.teacher,
                parts.source,
                cfg.cache,
                parts.layers,
                cfg.seed + 1000 * rank,
                refresh_count(cfg),
            )
            if cfg.cache
            else None
        )
        self.fixed = parts.source.heldout().rows(slice(0, 4))
        self.ckpt_path = run_dir / "checkpoints" / "last.pt"
        self.best = BestKeeper(parts.teacher, parts.spec, parts.source, run_dir / "checkpoints" / "best.pt")
        self.val_every = max(cfg.steps // 10, 1) if cfg.val_every is None else cfg.val_every
        self.step_cap = cfg.steps  # a time budget fits the step count under this
        self.fitted_steps = 0  # the count last reported for the time budget

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = {
            "trainable": self.trainable.state_dict(),
            "ema": self.ema.model.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "step": self.step,
            "lr_scale": self.lr_scale,
            "wall_s": self.wall_s,
            "planned_steps": self.cfg.steps,
            "best_score": self.best.score,
            "best_step": self.best.step,
            "identity": json.dumps(self.cfg.training_identity(), sort_keys=True),
        }
        if self.p.discriminator is not None and self.opt_d is not None:
            state["discriminator"] = self.p.discriminator.state_dict()
            state["opt_d"] = self.opt_d.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.trainable.load_state_dict(state["trainable"])
        self.ema.model.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.p.discriminator is not None and self.opt_d is not None:
            self.p.discriminator.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.lr_scale, self.wall_s = state["step"], state["lr_scale"], state["wall_s"]
        self.best.score, self.best.step = state.get("best_score", -math.inf), state.get("best_step", 0)
        if self.cfg.time_budget_s and state.get("planned_steps") and self.step >= PROBE_STEPS:
            self.cfg = replace(self.cfg, steps=state["planned_steps"])  # the budget was fitted before
        self._set_lr()

    def save_checkpoint(self) -> None:
        if self.main:
            state = self.state_dict()
            write_atomic(self.ckpt_path, lambda p: torch.save(state, p))

    def resume(self) -> None:
        if not self.ckpt_path.exists():
            raise EdgeDistillError(
                f"--resume: no checkpoint in {self.ckpt_path.parent}; start without --resume"
            )
        state = torch.load(self.ckpt_path, map_location=self.device, weights_only=True)
        if state["identity"] != json.dumps(self.cfg.training_identity(), sort_keys=True):
            raise EdgeDistillError(
                f"--resume: {self.run_dir} was trained with other options (see its config.json); "
                "resume with the same options or use another --out"
            )
        self.load_state_dict(state)

    def _set_lr(self) -> None:
        for opt, base in ((self.opt_g, self.cfg.lr), (self.opt_d, self.cfg.lr_d)):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = base * self.lr_scale * _decay(self.step, self.cfg.steps)

    # ------------------------------------------------------------------------------ one step
    def _teacher(self, step: int) -> tuple[Batch, torch.Tensor, list[torch.Tensor]]:
        if self.cache is not None:
            batch, y_t, feats = self.cache.batch(step, self.cfg.batch)
            return batch.to(self.device), y_t.to(self.device), [f.to(self.device) for f in feats]
        batch = self.p.source.batch(step, self.cfg.batch).to(self.device)
        with torch.no_grad(), FeatureTap(self.p.teacher, self.p.layers) as tap:
            y_t = self.p.teacher(*batch.args)
            return batch, y_t, list(tap.features)

    def _d_input(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A conditional D (pix2pix) sees input and output side by side; a super-resolver's input is
        resized to its output first, so D judges the pair at the output's resolution."""
        if not self.p.conditional_d:
            return y
        if x.shape[-2:] != y.shape[-2:]:
            x = torch.nn.functional.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([x, y], 1)

    def train_step(self) -> tuple[dict[str, float], bool]:
        """One D step and one G step; returns the losses and whether the step was taken.

        Not taken (nothing stepped) when a loss is non-finite on any rank: the caller rolls back.
        """
        batch, y_t, t_feats = self._teacher(self.step)
        with FeatureTap(self.p.student, self.p.layers if self.p.feature_kd else []) as tap:
            y_s = self.g_module(*batch.args)
            s_feats = list(tap.features)
        losses: dict[str, float] = {}
        if not self._step_d(batch, y_t, y_s, losses):
            return losses, False
        total = self._g_loss(batch, y_t, y_s, s_feats, t_feats, losses)
        if self._on_any_rank(not _finite(losses)):
            return losses, False
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        self.ema.update(self.p.student, self.step)
        return losses, True

    def _step_d(self, batch: Batch, y_t: torch.Tensor, y_s: torch.Tensor, losses: dict[str, float]) -> bool:
        """D learns real vs the student's outputs; False (D untouched) when its loss is bad on any rank."""
        disc = self.p.discriminator
        if disc is None or self.opt_d is None:
            return True
        real = batch.real if batch.real is not None else y_t
        disc.requires_grad_(True)
        d_real = disc(self._d_input(batch.inputs, real))
        d_fake = disc(self._d_input(batch.inputs, y_s.detach()))
        loss_d = d_loss(d_real, d_fake, self.cfg.gan_loss)
        losses["d"] = loss_d.item()
        ok = not self._on_any_rank(not math.isfinite(losses["d"]))
        if ok:
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self._average_d_grads()
            self.opt_d.step()
        disc.requires_grad_(False)
        return ok

    def _g_loss(
        self,
        batch: Batch,
        y_t: torch.Tensor,
        y_s: torch.Tensor,
        s_feats: list[torch.Tensor],
        t_feats: list[torch.Tensor],
        losses: dict[str, float],
    ) -> torch.Tensor:
        cfg, disc = self.cfg, self.p.discriminator
        total = torch.zeros((), device=self.device)
        if cfg.lambda_pix > 0:
            lp = pixel_kd(y_s, y_t, cfg.pix_loss)
            total = total + cfg.lambda_pix * lp
            losses["pix"] = lp.item()
        if cfg.lambda_colour and y_s.dim() == 4:
            lc = colour_kd(y_s, y_t)
            total = total + cfg.lambda_colour * lc
            losses["colour"] = lc.item()
        if cfg.lambda_gt > 0 and batch.real is not None and batch.real.shape == y_s.shape:
            lg = pixel_kd(y_s, batch.real, cfg.pix_loss)  # paired data: the ground truth, no teacher
            total = total + cfg.lambda_gt * lg
            losses["gt"] = lg.item()
        if self.p.feature_kd is not None and cfg.lambda_feat > 0:
            lf = self.p.feature_kd(s_feats, t_feats)
            total = total + cfg.lambda_feat * lf
            losses["feat"] = lf.item()
        match = disc is not None and bool(cfg.lambda_dfeat)
        if disc is not None and (cfg.lambda_adv > 0 or match):
            layers = d_feature_layers(disc) if match else []
            with FeatureTap(disc, layers) as tap:
                d_fake = disc(self._d_input(batch.inputs, y_s))
                s_feats = list(tap.features)
            if cfg.lambda_adv > 0:
                la = g_loss(d_fake, cfg.gan_loss)
                total = total + cfg.lambda_adv * self._adv_ramp() * la
                losses["adv"] = la.item()
            if match and layers:
                with torch.no_grad(), FeatureTap(disc, layers) as tap:
                    disc(self._d_input(batch.inputs, y_t))
                    t_feats_d = list(tap.features)
                lm = d_feature_match(s_feats, t_feats_d)
                total = total + cfg.lambda_dfeat * lm
                losses["dfeat"] = lm.item()
        losses["total"] = total.item()
        return total

    def _on_any_rank(self, flag: bool) -> bool:
        """`flag` or-ed over the ranks: a branch every rank must take alike (see the module doc)."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        agreed = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        return bool(agreed.item())

    def _adv_ramp(self) -> float:
        """0 -> 1 over the first `adv_warmup` of the steps. A D (the teacher's, above all) judges a
        fresh student with huge logits; at full weight its first gradients fill Adam's second moment
        and freeze the student for thousands of steps (measured: pixel KD stuck at its initial value)."""
        warm = self.cfg.adv_warmup * self.cfg.steps
        return 1.0 if warm <= 0 else min(1.0, self.step / warm)

    def _average_d_grads(self) -> None:
        """D runs twice per step (real, fake), which DDP's reducer does not allow: average by hand."""
        if self.world > 1 and self.p.discriminator is not None:
            import torch.distributed as dist

            for p in self.p.discriminator.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world

    # ------------------------------------------------------------------------------ the loop
    def train(self) -> None:
        """Run to `cfg.steps`. A first Ctrl-C ends the current step, saves and exits; a second
        one exits at once without saving (the last whole checkpoint stays)."""
        if self.step == 0:
            self.save_checkpoint()  # step 0 is the first rollback point
        columns = [
            TextColumn("[bold]distill"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[losses]}"), TextColumn("{task.fields[speed]}"), TimeRemainingColumn(),
        ]  # fmt: skip
        progress = Progress(*columns, console=self.console, disable=not self.main)
        with progress, stop_on_sigint() as stop:
            try:
                self._loop(stop, progress)
                if self.step < self.cfg.steps:  # stopped by the first Ctrl-C, between two steps
                    stop.settled = True  # the save is short and whole: a second press waits for it
                    self.save_checkpoint()
            except KeyboardInterrupt:  # inside a step (second Ctrl-C): its state may be half-stepped
                raise EdgeDistillError(
                    f"interrupted during step {self.step + 1}: stopped without saving it; the last "
                    f"complete checkpoint stays in {self.ckpt_path.parent}; continue with the same "
                    "command and --resume"
                ) from None
            if self.step < self.cfg.steps:  # raised while the handler still holds Ctrl-C
                raise EdgeDistillError(
                    f"interrupted at step {self.step}: checkpoint saved in {self.ckpt_path.parent}; "
                    "continue with the same command and --resume"
                )
        self.restore_best()

    # ------------------------------------------------------------------------------ validation
    def validate(self) -> float:
        """Score the EMA student on the validation set (the best is kept: distiller/validation.py)."""
        score = self.best.validate(self.ema.model, self.step)
        self._append_metrics({"step": self.step, "val_psnr_vs_teacher": round(score, 3)})
        return score

    def restore_best(self) -> None:
        """The EMA student becomes the best validated one (GAN students oscillate)."""
        if self.main and self.val_every:
            self.best.restore(self.ema.model)

    def _loop(self, stop: threading.Event, progress: Progress) -> None:
        cfg = self.cfg
        task = progress.add_task("distill", total=cfg.steps, completed=self.step, losses="", speed="")
        rollbacks, t_last = 0, time.perf_counter()
        budget = BudgetFitter(self.step, self.wall_s) if cfg.time_budget_s else None
        while self.step < cfg.steps and not self._on_any_rank(stop.is_set()):
            self._set_lr()
            t0 = time.perf_counter()
            losses, taken = self.train_step()
            if not taken:
                rollbacks += 1
                self._rollback(losses, rollbacks)
                continue
            rollbacks = 0
            self.step += 1
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                its = cfg.log_every / max(time.perf_counter() - t_last, 1e-9)
                t_last = time.perf_counter()
                self._log(losses, its)
                shown = " ".join(f"{k}={v:.3g}" for k, v in losses.items())
                progress.update(task, losses=shown, speed=f"{its:.2f} it/s")
            progress.update(task, completed=self.step)
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
            if self.main and (self.step % cfg.sample_every == 0 or self.step == cfg.steps):
                self.save_samples()
            if self.main and self.val_every and (self.step % self.val_every == 0 or self.step == cfg.steps):
                self.validate()
            self.wall_s += time.perf_counter() - t0  # the whole loop: validation and checkpoints count too
            if budget is not None and budget.due(self.step, self.wall_s, cfg.steps):
                cfg = self._fit_budget(budget.seconds_per_step(self.step, self.wall_s))
                progress.update(task, total=cfg.steps)

    def _fit_budget(self, per_step: float) -> DistillConfig:
        """Steps that fit the time budget at this machine's measured speed (the slowest rank's).

        Called after PROBE_STEPS and again while the learning rate is still constant: a probe taken
        while other work shares the machine (or a GPU still warming up) would otherwise fix a count
        that fills half the budget."""
        wall = self.wall_s
        if self.world > 1:  # every rank must fit the same count: the slowest rank's speed and clock
            import torch.distributed as dist

            t = torch.tensor([per_step, wall])
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            per_step, wall = (float(v) for v in t.tolist())
        budget = float(self.cfg.time_budget_s or 0)
        remaining = max(budget - wall, 0.0)
        steps = max(self.step + 1, min(self.step_cap, self.step + int(remaining / per_step)))
        self.cfg = replace(self.cfg, steps=steps)
        if self.cfg.val_every is None:
            self.val_every = max(steps // 10, 1)
        if self.main and abs(steps - self.fitted_steps) > 0.05 * self.fitted_steps:
            self.fitted_steps = steps
            self.console.print(
                f"this machine trains at {1 / per_step:.2f} it/s: {steps} steps fit the "
                f"{budget:.0f} s budget (~{(wall + (steps - self.step) * per_step) / 60:.1f} min)"
            )
            self._append_metrics(
                {"step": self.step, "event": "time_budget", "it_per_s": 1 / per_step, "steps": steps}
            )
        return self.cfg

    def _rollback(self, losses: dict[str, float], count: int) -> None:
        if count > MAX_ROLLBACKS:
            raise EdgeDistillError(
                f"loss stays non-finite at step {self.step} after {MAX_ROLLBACKS} rollbacks ({losses}); "
                "lower --lr or the --lambda-* weights, or check the data for NaN/inf"
            )
        state = torch.load(self.ckpt_path, map_location=self.device, weights_only=True)
        bad_step = self.step
        self.load_state_dict(state)
        self.lr_scale = state["lr_scale"] * 0.5
        self._set_lr()
        if self.main:
            where = "" if not _finite(losses) else " on another rank"
            self.console.print(
                f"[yellow]loss became non-finite{where} at step {bad_step}: rolled back to step {self.step}, "
                f"learning rates x{self.lr_scale:g}[/]"
            )
            self._append_metrics(
                {"step": bad_step, "event": "rollback", "to_step": self.step, "lr_scale": self.lr_scale}
            )

    def _log(self, losses: dict[str, float], its: float) -> None:
        if self.main:
            row = {
                "step": self.step,
                **{k: round(v, 6) for k, v in losses.items()},
                "it_per_s": round(its, 3),
            }
            row["lr"] = self.opt_g.param_groups[0]["lr"]
            self._append_metrics(row)

    def _append_metrics(self, row: dict) -> None:
        with (self.run_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")

    @torch.no_grad()
    def save_samples(self) -> Path:
        """teacher | student (EMA) | |diff| x4 (and the input first, for image generators)."""
        spec = self.p.spec
        x = self.fixed.inputs[:, : spec.image_channels] if spec.kind == "image" else self.fixed.inputs
        args = self.fixed.to(self.device).args
        y_t = spec.to_pixels(self.p.teacher(*args).cpu())
        y_s = spec.to_pixels(self.ema.model(*args).cpu())
        rows = [y_t, y_s, ((y_t - y_s).abs() * 4).clamp(0, 1)]
        if spec.kind == "image" and x.shape[1] in (1, 3):  # an inpainter's shows its holes, not its mask
            rows.insert(
                0,
                spec.to_pixels(x)
                if spec.input_range == spec.output_range
                else (x - x.min()) / (x.max() - x.min()),
            )
        return save_grid(rows, self.run_dir / "samples" / f"step_{self.step:06d}.png")


def _finite(losses: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in losses.values())


def _decay(step: int, steps: int) -> float:
    """Constant, then linear decay to 10 % over the last 30 % of steps."""
    start = int(0.7 * steps)
    return 1.0 if step < start else 1.0 - 0.9 * (step - start) / max(steps - start, 1)


def refresh_count(cfg: DistillConfig) -> int:
    """Teacher-cache entries replaced per step: a quarter of a batch unless set (0: a fixed pool)."""
    return max(1, cfg.batch // 4) if cfg.cache_refresh is None else cfg.cache_refresh
