"""Options of a data-free (or with-data) classifier distillation run, with the papers' defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgedistill.core.errors import EdgeDistillError

METHODS = ("replay", "dafl", "dfad", "kd")  # kd: ordinary KD on real images (--data), for comparison


@dataclass
class DataFreeConfig:
    teacher: str
    method: str = "dafl"
    steps: int = 1500
    batch: int = 64
    lr_student: float = 2e-3
    lr_generator: float = 1e-3
    temperature: float = 4.0
    nz: int = 100
    ngf: int = 32
    # DAFL's MNIST weights: one-hot CE 1, activation 0.1, information entropy 5
    w_one_hot: float = 1.0
    w_activation: float = 0.1
    w_entropy: float = 5.0
    bn_weight: float = 0.0  # DeepInversion-style BN-statistics matching, added to any method's generator loss
    student_steps: int = 5  # DFAD, replay: student steps per generator step
    # replay (Fast-DFKD / CMI-style): a class-conditional generator, its batches kept in a bank the
    # student trains on; the generator also seeks inputs where student and teacher disagree
    w_adv: float = 0.0
    bn_first: float = 1.0  # weight of the first BatchNorm's term within BN matching (DeepInversion)
    bank_size: int = 0  # synthetic images kept for the student (replay)
    jitter: int = 0  # random shifts (pixels) of synthetic batches before teacher and student
    flip: bool = False  # random mirroring of synthetic batches, too
    student_width: float | None = None  # fraction of the teacher's width; None: the family's default
    inherit: bool = False  # LeNet students start from the teacher's strongest channels
    ema_decay: float = 0.99
    seed: int = 0
    threads: int | None = None
    checkpoint_every: int = 200
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EdgeDistillError(f"--method must be one of {', '.join(METHODS[:3])} (got '{self.method}')")
        for name in ("steps", "batch", "student_steps", *(("bank_size",) if self.method == "replay" else ())):
            if getattr(self, name) < 1:
                raise EdgeDistillError(f"--{name.replace('_', '-')} must be at least 1")
        if min(self.bn_weight, self.w_adv, self.bn_first, self.jitter) < 0:
            raise EdgeDistillError("--bn-weight (and w_adv, bn_first, jitter) must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed (not logging or threads)."""
        d = self.to_dict()
        for k in ("threads", "checkpoint_every", "log_every", "steps"):
            d.pop(k)
        return d
