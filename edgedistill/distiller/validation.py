"""Validate the EMA student during training and keep the best weights.

GAN students oscillate: the last weights are not the best ones. Every N steps the EMA student is
scored against the teacher (PSNR) on the source's validation set — drawn apart from the held-out
set the run is finally scored on — and the best weights so far are written to best.pt; at the end
the EMA student becomes the best one.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from edgedistill.core.atomic import write_atomic
from edgedistill.core.quality import psnr
from edgedistill.core.spec import GeneratorSpec
from edgedistill.data.sources import Batch, DataSource
from edgedistill.distiller.evaluate import run_batched


class BestKeeper:
    def __init__(self, teacher: nn.Module, spec: GeneratorSpec, source: DataSource, path: Path) -> None:
        self.teacher, self.spec, self.source, self.path = teacher, spec, source, path
        self.score, self.step = -math.inf, 0
        self._val: tuple[Batch, torch.Tensor] | None = None

    @torch.no_grad()
    def validate(self, model: nn.Module, step: int) -> float:
        """PSNR of `model` vs the teacher on the validation set; a new best is saved."""
        if self._val is None:  # the teacher's outputs once
            val = validation_set(self.source)
            self._val = (val, run_batched(self.teacher, val, chunk=32))
        val, y_t = self._val
        score = psnr(self.spec.to_pixels(run_batched(model, val, chunk=32)), self.spec.to_pixels(y_t))
        if score > self.score:
            self.score, self.step = score, step
            weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            write_atomic(self.path, lambda p: torch.save({"step": step, "score": score, "ema": weights}, p))
        return score

    def restore(self, model: nn.Module) -> None:
        """Load the best validated weights into `model` (nothing when none was saved)."""
        if not self.path.exists():
            return
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        state = torch.load(self.path, map_location=device, weights_only=True)
        model.load_state_dict(state["ema"])
        self.step, self.score = state["step"], state["score"]


def validation_set(source: DataSource) -> Batch:
    """The source's validation set; a user's source without one validates on its first held-out rows."""
    if hasattr(source, "validation"):
        return source.validation()
    return source.heldout().rows(slice(0, 64))
