"""Classifier families for data-free distillation: a LeNet-5 and a small ResNet, each with a `width` knob.

A slimmed student is the same class at a smaller `width`, so it inherits the teacher's strongest
channels the way generator students do. BatchNorm after every conv is deliberate: its running
statistics are what DeepInversion-style matching pulls synthetic batches towards.
`features(x)` returns the pre-FC embedding (DAFL's activation term reads it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.models.registry import register


def _ch(base: int, width: float) -> int:
    return max(1, round(base * width))


@register("lenet")
class LeNet(nn.Module):
    """LeNet-5 (conv5-pool-conv5-pool-fc-fc-fc) on `image_size`² inputs, channels scaled by `width`."""

    def __init__(
        self, in_channels: int = 1, classes: int = 10, width: float = 1.0, image_size: int = 32
    ) -> None:
        super().__init__()
        c1, c2, f1, f2 = _ch(6, width), _ch(16, width), _ch(120, width), _ch(84, width)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), nn.BatchNorm2d(c1), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.BatchNorm2d(c2), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Flatten(),
        )  # fmt: skip
        side = ((image_size - 4) // 2 - 4) // 2
        self.fc = nn.Sequential(
            nn.Linear(c2 * side * side, f1), nn.ReLU(True), nn.Linear(f1, f2), nn.ReLU(True)
        )
        self.head = nn.Linear(f2, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


@register("resnet_classifier")
class ResNetClassifier(nn.Module):
    """A CIFAR-style ResNet: stem + `blocks` basic blocks per stage at 16/32/64 x `width` channels;
    `stem_stride` 2 halves every feature map (4x fewer MACs) for CPU-sized budgets."""

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 10,
        width: float = 1.0,
        blocks: int = 1,
        image_size: int = 32,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        c = [_ch(16, width), _ch(32, width), _ch(64, width)]
        stem = nn.Conv2d(in_channels, c[0], 3, stem_stride, 1, bias=False)
        self.stem = nn.Sequential(stem, nn.BatchNorm2d(c[0]), nn.ReLU(True))
        layers: list[nn.Module] = []
        cin = c[0]
        for i, cout in enumerate(c):
            for j in range(blocks):
                layers.append(_Block(cin, cout, 2 if i > 0 and j == 0 else 1))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c[-1], classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
