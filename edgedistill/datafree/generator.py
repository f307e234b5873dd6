"""The DAFL-style generator that synthesises a classifier's inputs: FC → (upsample + conv) blocks → tanh.

Shaped like the DCGAN seed but cheap on a CPU: a linear layer makes a coarse (ngf·2, S/4, S/4)
map, two nearest-upsample + 3x3 conv blocks (halving channels) with BatchNorm and LeakyReLU reach the input size, and
tanh bounds it to [-1, 1], then mapped onto the teacher's input range.
With `classes` > 0 it is class-conditional (a one-hot label joins z, as in CMI / Fast-DFKD): the
generator is asked for a given class instead of whatever the teacher happens to call its output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SampleGenerator(nn.Module):
    def __init__(
        self,
        nz: int = 100,
        ngf: int = 32,
        channels: int = 1,
        image_size: int = 32,
        input_range: tuple[float, float] = (-1.0, 1.0),
        classes: int = 0,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError("image_size must be a multiple of 4")
        self.nz, self.classes, self.init = nz, classes, image_size // 4
        self.lo, self.hi = input_range
        self.fc = nn.Linear(nz + classes, 2 * ngf * self.init * self.init)
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * ngf),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, 1, 1, bias=False), nn.BatchNorm2d(ngf), nn.LeakyReLU(0.2, True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ngf, ngf // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(ngf // 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ngf // 2, channels, 3, 1, 1), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.classes:
            if labels is None:
                raise ValueError("a class-conditional generator needs labels")
            z = torch.cat([z, F.one_hot(labels, self.classes).to(z.dtype)], 1)
        x = self.fc(z).view(len(z), -1, self.init, self.init)
        y = self.body(x)  # [-1, 1]
        return (y + 1) * 0.5 * (self.hi - self.lo) + self.lo

    def sample(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.nz, generator=gen)
        labels = balanced_labels(n, self.classes, gen) if self.classes else None
        return self(z, labels)


def balanced_labels(n: int, classes: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """`n` labels as even over the classes as `n` allows, shuffled: every batch covers every class."""
    return (torch.arange(n) % classes)[torch.randperm(n, generator=gen)]
