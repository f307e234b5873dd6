"""Training a classifier on real images: the teachers, the from-scratch baseline, and KD with data.

The same loop serves all three so the benchmark compares like with like: only the target differs
(labels, or the teacher's softened logits), never the optimiser, schedule or augmentation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.datafree.augment import shift_flip
from edgedistill.datafree.losses import kd_kl


def train_supervised(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    *,
    batch: int = 64,
    lr: float = 2e-3,
    flip: bool = False,
    teacher: nn.Module | None = None,
    temperature: float = 4.0,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """AdamW with cosine decay on shifted (and flipped) batches; with `teacher`, KL to its logits (+ CE).

    The KD target is recomputed on the augmented batch, as Hinton-style KD does with data.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))
    )
    if teacher is not None:
        teacher.eval()
    model.train()
    for step in range(steps):
        idx = torch.randint(len(x), (batch,), generator=gen)
        xb = shift_flip(x[idx], gen, flip=flip)
        logits = model(xb)
        loss = F.cross_entropy(logits, y[idx])
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(xb)
            loss = 0.1 * loss + kd_kl(logits, t_logits, temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step, float(loss.detach()))
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Logits for all of `x`, in eval mode, in chunks."""
    model.eval()
    return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x).argmax(1) == y).float().mean())
