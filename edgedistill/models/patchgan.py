"""The PatchGAN (n-layer) discriminator of pix2pix/CycleGAN, reference key layout (`model.0.weight`).

Each output pixel judges a 70x70 patch (n_layers=3). For conditional GANs (pix2pix) `input_nc`
is input + output channels.
"""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.models.norms import conv_bias, norm_layer
from edgedistill.models.registry import register


@register("patchgan")
class PatchDiscriminator(nn.Module):
    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
