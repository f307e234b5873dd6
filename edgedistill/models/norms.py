"""Normalization layers as pix2pix/CycleGAN build them, so checkpoints keep their keys.

InstanceNorm there has no affine weights and no running stats; convolutions carry a bias only when
the norm is InstanceNorm (BatchNorm has its own shift, and the reference also drops the bias for
'none').
"""

from __future__ import annotations

from torch import nn

NORMS = ("instance", "batch", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got '{kind}'")


def conv_bias(kind: str) -> bool:
    """Whether convs before this norm carry a bias in the reference implementation."""
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got '{kind}'")
    return kind == "instance"


def infer_norm(state: dict, norm_key: str, conv_key: str) -> str:
    """Tell the norm a checkpoint was trained with from the keys it holds."""
    if f"{norm_key}.running_mean" in state and f"{norm_key}.weight" in state:
        return "batch"
    return "instance" if f"{conv_key}.bias" in state else "none"
