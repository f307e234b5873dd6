"""Exponential moving average of the student's weights: what gets evaluated and exported.

GAN students oscillate; the average of their recent weights is smoother and scores better.
Float buffers (BatchNorm's running mean and variance) are averaged with the same decay as the
weights: the live model's statistics belong to the live weights, and copying them onto averaged
weights pairs each layer with statistics of activations it never produced.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # warm-up: early on the average would be dominated by the (poor) initial weights
        d = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.model.parameters())
        torch._foreach_mul_(ema_params, d)
        torch._foreach_add_(ema_params, [p.detach() for p in model.parameters()], alpha=1 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            if b_ema.is_floating_point():
                b_ema.lerp_(b, 1 - d)
            else:
                b_ema.copy_(b)  # counters, such as BatchNorm's num_batches_tracked
