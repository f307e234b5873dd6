"""A small digit classifier: the in-domain feature net for FID-style scores on digits.

Inception features mean little on 32x32 grayscale digits (and Inception weights cannot be
downloaded here); the penultimate layer of a net trained on the same digits does.
"""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.models.registry import register


@register("digit_classifier")
class DigitClassifier(nn.Module):
    """32x32x1 in [-1, 1] -> 10 logits; `features()` gives the `feature_dim`-wide embedding."""

    def __init__(self, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * width, feature_dim), nn.ReLU(True),
        )  # fmt: skip
        self.head = nn.Linear(feature_dim, 10)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
