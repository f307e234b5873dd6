"""The DAFL-style generator that synthesises a classifier's inputs: FC → (upsample + conv) blocks → tanh.

Shaped like the DCGAN seed but cheap on a CPU: a linear layer makes a coarse (ngf·2, S/4, S/4)
map, two nearest-upsample + 3x3 conv blocks (halving channels) with BatchNorm and LeakyReLU reach the input size, and
tanh bounds it to [-1, 1], then mapped onto the teacher's input range.
"""

from __future__ import annotations

import torch
from torch import nn


class SampleGenerator(nn.Module):
    def __init__(
        self,
        nz: int = 100,
        ngf: int = 32,
        channels: int = 1,
        image_size: int = 32,
        input_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError("image_size must be a multiple of 4")
        self.nz, self.init = nz, image_size // 4
        self.lo, self.hi = input_range
        self.fc = nn.Linear(nz, 2 * ngf * self.init * self.init)
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * ngf),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, 1, 1, bias=False), nn.BatchNorm2d(ngf), nn.LeakyReLU(0.2, True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ngf, ngf // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(ngf // 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ngf // 2, channels, 3, 1, 1), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(len(z), -1, self.init, self.init)
        y = self.body(x)  # [-1, 1]
        return (y + 1) * 0.5 * (self.hi - self.lo) + self.lo

    def sample(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.nz, generator=gen)
        return self(z)
