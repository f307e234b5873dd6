"""DCGAN generator and discriminator as in the PyTorch examples (`main.0.weight`, ...).

64 px is the example's net; 32 px drops the first (widest) stage, the usual CIFAR/MNIST variant.
The generator eats z of shape (N, nz, 1, 1). A searched student sets per-stage `widths` and the
upsampling op of the stride-2 stages (`models/ops.py`, at the index of the op it replaces, so the
defaults keep the reference keys).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from edgedistill.models.ops import check_widths, upsample_2x, upsample_stage
from edgedistill.models.registry import register

# channel multipliers of ngf per transposed-conv stage, outermost first
_G_STAGES = {64: (8, 4, 2, 1), 32: (4, 2, 1)}


@register("dcgan")
class DCGANGenerator(nn.Module):
    def __init__(
        self,
        nz: int = 100,
        ngf: int = 64,
        nc: int = 3,
        image_size: int = 64,
        widths: list[int] | None = None,
        upsample: str = "convtranspose",
    ) -> None:
        super().__init__()
        if image_size not in _G_STAGES:
            raise ValueError(f"image_size must be one of {sorted(_G_STAGES)}, got {image_size}")
        mults = _G_STAGES[image_size]
        w = check_widths(widths, len(mults), "each stage's output, the 4x4 one first") or [
            ngf * m for m in mults
        ]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, w[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in itertools.pairwise(w):
            up = upsample_2x(upsample, c_in, c_out, False, kernel=4)
            layers += upsample_stage(up, nn.BatchNorm2d(c_out), nn.ReLU(True))
        layers += [upsample_2x(upsample, w[-1], nc, False, kernel=4), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.nz = nz
        self.widths = w

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)

    @staticmethod
    def infer_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
        convs = [k for k in state if k.endswith(".weight") and state[k].ndim == 4]
        stages = len(convs) - 1
        size = {4: 64, 3: 32}.get(stages)
        if size is None:
            raise ValueError(f"a DCGAN generator has 4 (32 px) or 5 (64 px) convs, this one has {len(convs)}")
        first, last = state[convs[0]], state[convs[-1]]
        return {
            "nz": int(first.shape[0]),
            "ngf": int(last.shape[0]),
            "nc": int(last.shape[1]),
            "image_size": size,
        }

    @staticmethod
    def matches(state: dict[str, torch.Tensor]) -> bool:
        w = state.get("main.0.weight")
        return w is not None and w.ndim == 4 and w.shape[-1] == 4 and "main.1.running_mean" in state


@register("dcgan_d")
class DCGANDiscriminator(nn.Module):
    """Strided-conv classifier; `sigmoid=False` returns logits (for BCE-with-logits or hinge)."""

    def __init__(self, nc: int = 3, ndf: int = 64, image_size: int = 64, sigmoid: bool = True) -> None:
        super().__init__()
        if image_size not in _G_STAGES:
            raise ValueError(f"image_size must be one of {sorted(_G_STAGES)}, got {image_size}")
        mults = tuple(reversed(_G_STAGES[image_size]))  # 1, 2, 4(, 8)
        layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for prev, m in itertools.pairwise(mults):
            layers += [
                nn.Conv2d(ndf * prev, ndf * m, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * m),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mults[-1], 1, 4, 1, 0, bias=False))
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)
