"""BatchNorm while distilling: normalise by each batch, or by the frozen running statistics.

Why a choice: a student trained with BatchNorm in train mode is scored and exported in eval mode,
where every BN is a fixed affine map folded into its conv. On batches of 8 small crops, half of the
bundled photos greyscale and the rest recoloured at random, the batch statistics swing from batch to
batch, and what the loss trains is a different function from the one that ships: the photo student's
train-mode outputs scored 17 dB vs the teacher on held-out crops where its eval-mode outputs scored
26-29 dB, and its training error sat almost entirely in the 8x8-cell means (a colour term as large
as the pixel term). With `frozen`, each BN is first given statistics of the student's own
activations (`recalibrate_batch_norm`: the teacher's, inherited, belong to other activations) and then
kept at them while its affine weights train: the loss sees the exported function, as QAT does.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

BN_STATS = ("batch", "frozen")
CALIBRATION_BATCHES = 32
# the calibration batches' steps: apart from training's (>= 0), the teacher cache's pool (-1, -2, ...)
# and its refreshes (-2**40 - step), so calibration never shows the student a crop it trains on
CALIBRATION_STEP = -(1 << 30)


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorms that keep running statistics (one built without them always uses the batch's)."""
    return [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, batches: Iterable[tuple[torch.Tensor, ...]]) -> None:
    """Set every BatchNorm's running statistics to the plain average over `batches` (each a tuple of
    the model's inputs). Why: a student inherits the teacher's statistics for its kept channels, but
    its own activations differ once channels are cut; frozen at the teacher's, it starts far off."""
    norms = _batch_norms(model)
    if not norms:
        return  # nothing to calibrate: no need to run the batches
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
    training = model.training
    model.train()
    for args in batches:
        model(*args)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(training)


def freeze_batch_norm(model: nn.Module) -> int:
    """Put every BatchNorm of `model` in eval mode (running statistics, not updated); returns how
    many. Their affine weights still train. Call after `model.train()`, which would undo it."""
    norms = _batch_norms(model)
    for module in norms:
        module.eval()
    return len(norms)
