"""The U-Net image-to-image generator of pix2pix.

Built from the innermost level outwards, each level a `model` Sequential holding the next, which
gives exactly the reference checkpoints' nested keys (`model.model.1.model.1.weight`, ...).
`num_downs` halvings: 8 for 256x256 inputs (`unet_256`), 7 for 128x128; inputs must be divisible
by 2**num_downs.

A searched student sets per-level `widths` (each down-conv's output, outermost first), the
upsampling op and the down-conv type; each replaced op sits at the index of the one it replaces
(`models/ops.py`), so the defaults keep the reference keys exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgedistill.models.norms import conv_bias, infer_norm, norm_layer
from edgedistill.models.ops import check_widths, conv, upsample_2x, upsample_stage
from edgedistill.models.registry import register


class UnetLevel(nn.Module):
    """down-conv, the inner levels, up-conv; concatenates its input to its output (but outermost)."""

    def __init__(
        self,
        outer: int,
        inner: int,
        norm: str,
        inner_level: nn.Module | None = None,
        in_channels: int | None = None,
        outermost: bool = False,
        dropout: bool = False,
        upsample: str = "convtranspose",
        block: str = "plain",
    ) -> None:
        super().__init__()
        self.outermost = outermost
        bias = conv_bias(norm)
        down = conv(block, in_channels or outer, inner, 4, stride=2, padding=1, bias=bias)
        cat = inner * 2  # the up-conv reads the inner level's cat([its input, its output])
        if outermost:
            up = upsample_2x(upsample, cat, outer, True, kernel=4)
            layers = [down, inner_level, nn.ReLU(True), up, nn.Tanh()]
        elif inner_level is None:  # innermost: no skip inside, no norm after the bottleneck conv
            up = upsample_2x(upsample, inner, outer, bias, kernel=4)
            layers = [
                nn.LeakyReLU(0.2, True),
                down,
                nn.ReLU(True),
                *upsample_stage(up, norm_layer(norm, outer)),
            ]
        else:
            up = upsample_2x(upsample, cat, outer, bias, kernel=4)
            layers = [nn.LeakyReLU(0.2, True), down, norm_layer(norm, inner), inner_level]
            layers += [nn.ReLU(True), *upsample_stage(up, norm_layer(norm, outer))]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], 1)


@register("unet")
class UnetGenerator(nn.Module):
    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        dropout: bool = False,
        widths: list[int] | None = None,
        upsample: str = "convtranspose",
        block: str = "plain",
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError("num_downs must be at least 5")
        w = check_widths(widths, num_downs, "each down-conv's output, outermost first")
        w = w or [ngf, ngf * 2, ngf * 4] + [ngf * 8] * (num_downs - 3)
        ops = {"upsample": upsample, "block": block}
        level = UnetLevel(w[-2], w[-1], norm, **ops)
        for i in range(num_downs - 2, 0, -1):  # the levels between innermost and outermost
            level = UnetLevel(w[i - 1], w[i], norm, level, dropout=dropout and i >= 4, **ops)
        self.model = UnetLevel(output_nc, w[0], norm, level, in_channels=input_nc, outermost=True, **ops)
        self.num_downs = num_downs
        self.widths = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @staticmethod
    def infer_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
        first = state["model.model.0.weight"]
        depth = max(k.split(".").count("model") for k in state)  # level k's keys hold k+1 "model"s
        second_down = "model.model.1.model.1"
        return {
            "input_nc": int(first.shape[1]),
            "output_nc": int(state["model.model.3.weight"].shape[1]),
            "num_downs": depth - 1,
            "ngf": int(first.shape[0]),
            "norm": infer_norm(state, "model.model.1.model.2", second_down),
        }

    @staticmethod
    def matches(state: dict[str, torch.Tensor]) -> bool:
        return "model.model.0.weight" in state
