"""A small in-domain feature net for the photo-restore teacher's FID-style scores.

Inception weights cannot be downloaded here, and ImageNet features say little about whether a
restored photo looks like the clean one anyway. This net learns photo statistics from the same
bundled photos the teacher saw: trained (scripts/train_feature_nets.py) to tell which of the 18
training photos a random 64x64 crop comes from, which needs colour, texture and edge features but
no labels beyond the photo's identity. Its global-average-pooled last conv layer is the embedding.

Input: (N, 3, H, W) RGB in [0, 1], any H, W >= 32 (global pooling makes the size free).
"""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.models.registry import register


def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


@register("photo_features")
class PhotoFeatureNet(nn.Module):
    """RGB in [0, 1] -> `n_classes` logits; `features()` gives the `4 * width`-wide embedding."""

    input_channels = 3
    input_size: tuple[int, int] | None = None
    input_range = (0.0, 1.0)
    min_side = 32

    def __init__(self, width: int = 32, n_classes: int = 18) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            *_block(3, w, 2), *_block(w, w, 1),  # 1/2
            *_block(w, 2 * w, 2), *_block(2 * w, 2 * w, 1),  # 1/4
            *_block(2 * w, 4 * w, 2), *_block(4 * w, 4 * w, 1),  # 1/8
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(4 * w, n_classes)
        self.feature_dim = 4 * w

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1)  # centre the [0, 1] input; BatchNorm does the rest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
