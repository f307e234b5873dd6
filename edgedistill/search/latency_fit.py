"""The whole-model fit: how a model's measured blocks add up to the model measured whole.

    whole = a + b * kernels + c * other blocks + d * upsampling blocks

A whole model is not quite the sum of its blocks: the session call, the input's quantizer and the
output's copy add, and a block timed in its carrier (blocks.block_model) still costs a little more
or less than inside its model. Timed alone (before the carrier), blocks summed 0.95-1.5x their
model and an upsampling block (ConvTranspose, a Resize feeding a conv, a conv followed by
DepthToSpace) up to twice its share, which the second scale d was for: it took ±10 % from 40 to 65 %
(ORT int8) and 45 to 80 % (OpenVINO int8) of 20 random candidates. In carriers the blocks sum within
a few % of the model and the references no longer ask for d (OpenVINO int8 fitted d = 0.99 c, ORT
int8 kept one scale): 95 % (ORT int8) and 100 % (OpenVINO int8) of 20 photo-restore candidates
within ±10 % (benchmarks/latency_model.py --space photo-restore, Zen4).

Eight references cannot pin many terms, so each extra one has to earn its place: the split needs
MIN_REFS_FOR_SPLIT references, some with and some without much upsampling, and is kept only when
it finds what cutting does (d below c, both in (0.25, 2)); otherwise one scale c for all blocks,
and with fewer than MIN_REFS_FOR_SCALE references c = 1 and only a + b * kernels is fitted.

A line fitted on the references can cross zero (a negative intercept, fitted on a busy machine: CI
once saw -0.13 ms for a digits DCGAN candidate): a model far smaller than the references, or one
the line misses, would be predicted to take negative time. So below the smallest reference's
blocks' sum (`floor_below_ms`), and wherever the line reaches zero, no prediction goes under the
smallest whole/blocks ratio a reference measured (`floor_ratio`) times the model's own blocks' sum;
elsewhere the line alone predicts (the ratio is no lower bound there: a reference with many kernels
per ms has a high one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MIN_REFS_FOR_SCALE = 5  # fewer references fit a and b only (c = 1): three points cannot pin three terms
MIN_REFS_FOR_SPLIT = 6  # a, b, c, d and two degrees of freedom left to tell a split from noise
SCALE_RANGE = (0.25, 2.0)  # a block scale outside this is a fit to noise
# the ops that make a block an upsampling one, as blocks._describe names them ("ConvTranspose 3x3
# 32->16 s2 @64x64+InstanceNormalization+Relu", "Conv 3x3 ... +Resize+...", "... +DepthToSpace+...")
UPSAMPLING_ANCHORS = ("ConvTranspose",)
UPSAMPLING_OPS = ("Resize", "Upsample", "DepthToSpace")


def is_upsampling(desc: str) -> bool:
    """Whether a block (by its table description) upsamples: the fit may scale those apart (see
    the module docstring)."""
    head, *ops = desc.split(" (kept")[0].split("+")
    return head.split(" ")[0] in UPSAMPLING_ANCHORS or any(op in UPSAMPLING_OPS for op in ops)


def overhead_fit(
    kernels: Sequence[int],
    blocks_ms: Sequence[float],
    whole: Sequence[float],
    up_ms: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Least squares whole-model ms over the references: a + b * kernels + c * other + d * up
    (`up_ms`: each reference's upsampling blocks' ms, part of its `blocks_ms`).

    The split (d) is kept only with MIN_REFS_FOR_SPLIT references, upsampling shares that differ,
    and 0.25 < d < c < 2; otherwise one scale (d = c) as before: with fewer than MIN_REFS_FOR_SCALE
    references, or a scale outside (0.25, 2) (a fit to noise), c stays 1 and the residual is fitted
    as a + b * kernels, with a negative per-kernel cost (noise again) falling back to the mean residual."""
    k = np.asarray(kernels, dtype=np.float64)
    s = np.asarray(blocks_ms, dtype=np.float64)
    y = np.asarray(whole, dtype=np.float64)
    pos = s > 0
    floor = (
        {"floor_ratio": float(np.min(y[pos] / s[pos])), "floor_below_ms": float(np.min(s[pos]))}
        if pos.any()
        else {}
    )
    split = _split_fit(k, s, y, np.asarray(up_ms, dtype=np.float64)) if up_ms is not None else None
    if split is not None:
        return {**split, **floor}
    lo, hi = SCALE_RANGE
    if len(y) >= MIN_REFS_FOR_SCALE:
        (a, b, c), *_ = np.linalg.lstsq(np.c_[np.ones_like(k), k, s], y, rcond=None)
        if lo < c < hi:
            return {"a": float(a), "b": float(b), "c": float(c), **floor}
    r = y - s
    a, b = float(np.mean(r)), 0.0
    if len(set(k.tolist())) > 1:
        slope, icept = np.polyfit(k, r, 1)
        if slope >= 0:
            a, b = float(icept), float(slope)
    return {"a": a, "b": b, "c": 1.0, **floor}


def _split_fit(k: np.ndarray, s: np.ndarray, y: np.ndarray, up: np.ndarray) -> dict[str, Any] | None:
    """a + b * k + c * (s - up) + d * up, or None where the references cannot carry d."""
    if len(y) < MIN_REFS_FOR_SPLIT or up.shape != s.shape:
        return None
    design = np.c_[np.ones_like(k), k, s - up, up]
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return None  # every reference upsamples in the same share (or none does): d is not seen
    (a, b, c, d), *_ = np.linalg.lstsq(design, y, rcond=None)
    lo, hi = SCALE_RANGE
    if not lo < d < c < hi:
        return None  # d above c is the opposite of what cutting does: noise, one scale is safer
    return {"a": float(a), "b": float(b), "c": float(c), "d": float(d)}


def whole_ms(fit: dict[str, Any], blocks_ms: float, kernels: int, up_ms: float = 0.0) -> float:
    """A whole model's predicted ms from its blocks' sum (`up_ms` of it upsampling blocks) and its
    kernel count (see overhead_fit); a fit without d scales every block by c. Smaller than every
    reference, or where the line reaches zero, never below their smallest whole/blocks ratio times
    the blocks' sum: a time is positive."""
    c = fit.get("c", 1.0)
    d = fit.get("d", c)
    line = fit["a"] + fit["b"] * kernels + c * (blocks_ms - up_ms) + d * up_ms
    if line > 0 and blocks_ms >= fit.get("floor_below_ms", 0.0):
        return line
    return max(line, fit.get("floor_ratio", 0.0) * blocks_ms)
