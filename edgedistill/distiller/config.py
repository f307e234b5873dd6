"""Every option of a distillation run, saved as the run's config.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from edgedistill.core.errors import EdgeDistillError
from edgedistill.distiller.batchnorm import BN_STATS

_NOISE_WEIGHTS = {  # no pairs, no D features worth matching on 32x32 digits, no colour to cast
    "lambda_pix": 1.0,
    "lambda_feat": 1.0,
    "lambda_adv": 0.01,
    "lambda_gt": 0.0,
    "lambda_dfeat": 0.0,
    "lambda_colour": 0.0,
}
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    # image: measured on the photo teacher at 404 steps (README, "Distillation ablation"): feature KD
    # (adapters + MSE) dominated the loss and cost 0.4 dB and 30 % feature distance, so it is off;
    # colour KD at 100 instead of 10 cut the cast only from 3.2 to 2.9 % and slowed fitting elsewhere
    "image": {
        "lambda_pix": 10.0,
        "lambda_feat": 0.0,
        "lambda_adv": 0.1,
        "lambda_gt": 10.0,
        "lambda_dfeat": 1.0,
        "lambda_colour": 10.0,
    },
    "noise": _NOISE_WEIGHTS,
    "noise+label": _NOISE_WEIGHTS,
}


# BatchNorm while training (distiller/batchnorm.py). image: frozen at the student's own statistics,
# measured on the photo teacher at 400 steps (2 seeds): +3.3 dB vs the teacher, a smaller cast;
# noise: per batch, as before (digits at 1500 steps: 27.42 vs 27.40 dB, FD 11.0 vs 11.9 frozen)
DEFAULT_BN_STATS = {"image": "frozen", "noise": "batch", "noise+label": "batch"}

# --train-minutes without --steps: the budget alone decides how many steps
BUDGET_STEP_CAP = 1_000_000


@dataclass
class DistillConfig:
    teacher: str
    out: str = "runs/student"
    width: float = 0.25
    # a built-in family's student architecture (per-stage widths, n_blocks, ops: distiller/student.py
    # ARCH_KEYS), e.g. from `edgedistill search`; None: the teacher's shape at --width
    arch: dict[str, Any] | None = None
    init: str = "inherit"  # inherit | scratch
    student_norm: str | None = None  # None keeps the teacher's (see README: batch folds into convs for INT8)
    bn_stats: str | None = None  # batch | frozen: BatchNorm by batch or by its statistics; None: per kind
    data: str | None = None
    val_data: str | None = None  # held-out image folder; None: a fixed tenth of --data (data/images.py)
    steps: int = 2000
    batch: int = 8
    patch: int = 64
    lr: float = 2e-4
    lr_d: float = 2e-4
    # None: the per-kind defaults of DEFAULT_WEIGHTS (chosen by benchmarks/distill_ablation.py)
    lambda_pix: float | None = None
    lambda_feat: float | None = None
    lambda_adv: float | None = None
    # pixel loss to the data's own targets where the data is paired (degraded -> clean, A/ + B/):
    # the student can then be better than its teacher, as GAN Compression and CAT train it
    lambda_gt: float | None = None
    lambda_dfeat: float | None = None  # D-feature matching of student vs teacher output (perceptual)
    lambda_colour: float | None = None  # L1 of 8x8-cell means vs the teacher: sees a colour cast
    pix_loss: str = "l1"
    feat_mode: str = "adapter"  # adapter (GAN Compression) | kernel_alignment (CAT)
    gan_loss: str | None = None  # None: the loss the teacher's D was trained with, else lsgan
    adv_warmup: float = 0.25  # the adversarial weight ramps up over this fraction of the steps
    d_from_teacher: bool = True  # init D from the teacher's shipped discriminator when there is one
    ndf: int = 32  # width of a fresh PatchGAN when the teacher ships no D
    ema: float = 0.999
    cache: int = 0  # >0: precompute teacher outputs for this many inputs and train on them
    cache_refresh: int | None = None  # pool entries replaced by fresh teacher outputs per step; None: batch/4
    # none | permute (data/colour_aug.py); None: permute on the bundled photos, none on a user's --data
    colour_aug: str | None = None
    seed: int = 0
    threads: int | None = None
    device: str = "auto"  # auto: the first CUDA GPU when torch sees one, else cpu
    # held-out samples scored at the end; None: photo 512, noise 10k, folder 128
    eval_samples: int | None = None
    # validate the EMA student every N steps, keep the best; None: steps/10; 0: off
    val_every: int | None = None
    # train for this long: the steps (capped by `steps`) are fitted to this machine's measured speed
    # and refitted until the decay (a 2-core AVX2 box runs ~4x slower than an AMX Xeon); the schedule follows
    time_budget_s: float | None = None
    qat_steps: int = 0  # >0: a final quantization-aware KD phase of this many steps (distiller/qat.py)
    checkpoint_every: int = 250
    sample_every: int = 500
    log_every: int = 25
    feature_net: str | None = None  # for FID-style scores: a TorchScript/module path; default per teacher
    model_kwargs: dict[str, Any] | None = None
    weights: str | None = None

    def with_defaults(self, kind: str) -> DistillConfig:
        """Fill the loss weights (and BatchNorm mode) left unset with the defaults for this kind of generator."""
        filled = dict(asdict(self))
        for key, value in {**DEFAULT_WEIGHTS[kind], "bn_stats": DEFAULT_BN_STATS[kind]}.items():
            if filled[key] is None:
                filled[key] = value
        return DistillConfig(**filled)

    def validate(self) -> None:
        if not 0 < self.width <= 1:
            raise EdgeDistillError(f"--width must be in (0, 1], got {self.width}")
        if self.steps < 1 or self.batch < 1:
            raise EdgeDistillError("--steps and --batch must be at least 1")
        if self.init not in ("inherit", "scratch"):
            raise EdgeDistillError(f"--init must be inherit or scratch, got '{self.init}'")
        weights = [
            w
            for w in (
                self.lambda_pix,
                self.lambda_feat,
                self.lambda_adv,
                self.lambda_gt,
                self.lambda_dfeat,
                self.lambda_colour,
            )
            if w is not None
        ]
        if weights and min(weights) < 0:
            raise EdgeDistillError("loss weights (--lambda-*) must be >= 0")
        if len(weights) == 6 and sum(weights) == 0:
            raise EdgeDistillError("all loss weights are 0: nothing to train")
        if self.bn_stats is not None and self.bn_stats not in BN_STATS:
            raise EdgeDistillError(f"--bn-stats must be one of {', '.join(BN_STATS)}, got '{self.bn_stats}'")
        if self.qat_steps < 0:
            raise EdgeDistillError(f"--qat-steps must be >= 0, got {self.qat_steps}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def training_identity(self) -> dict[str, Any]:
        """The options a resumed run must share with the one it continues."""
        skip = {
            "steps",
            "checkpoint_every",
            "sample_every",
            "log_every",
            "threads",
            "out",
            "feature_net",
            "device",
            "eval_samples",
            "val_every",
            "qat_steps",  # the QAT phase checks its own options on resume
        }
        for optional in ("val_data", "colour_aug"):
            if getattr(self, optional) is None:
                skip.add(optional)  # runs saved before the option existed still resume
        return {k: v for k, v in asdict(self).items() if k not in skip}
