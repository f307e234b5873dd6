"""The ResNet image-to-image generator of pix2pix/CycleGAN.

Layer order (and so `state_dict` keys: `model.1.weight`, `model.10.conv_block.1.weight`, ...)
follows the widely used pytorch-CycleGAN-and-pix2pix checkpoints, so a `latest_net_G.pth` loads
unchanged: c7s1-ngf, two stride-2 downsamplings, n residual blocks at 4*ngf, two transposed-conv
upsamplings, c7s1-out, tanh.

A searched student sets per-stage `widths` (stem, each downsampling, the trunk, each upsampling), the
upsampling op, the stem/head kernel and the residual conv type; each replaced op sits at the index of
the one it replaces (`models/ops.py`), so the defaults keep the reference layout and keys exactly.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from edgedistill.models.norms import conv_bias, infer_norm, norm_layer
from edgedistill.models.ops import KERNELS, check_widths, conv, upsample_2x, upsample_stage
from edgedistill.models.registry import register

N_DOWN = 2
FIRST_BLOCK = 4 + 3 * N_DOWN  # index of the first residual block in `model`


class ResnetBlock(nn.Module):
    """pad-conv-norm-relu-(dropout)-pad-conv-norm with an identity skip."""

    def __init__(
        self, dim: int, norm: str, dropout: bool, padding: str = "reflect", block: str = "plain"
    ) -> None:
        super().__init__()
        bias = conv_bias(norm)
        pad = 0 if padding != "zero" else 1
        layers: list[nn.Module] = [
            *_pad(padding),
            conv(block, dim, dim, 3, padding=pad, bias=bias),
            norm_layer(norm, dim),
            nn.ReLU(True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [
            *_pad(padding),
            conv(block, dim, dim, 3, padding=pad, bias=bias),
            norm_layer(norm, dim),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _pad(padding: str) -> list[nn.Module]:
    if padding == "reflect":
        return [nn.ReflectionPad2d(1)]
    if padding == "replicate":
        return [nn.ReplicationPad2d(1)]
    if padding == "zero":
        return []
    raise ValueError(f"padding must be reflect|replicate|zero, got '{padding}'")


@register("resnet")
class ResnetGenerator(nn.Module):
    """Image-to-image generator; `ngf` is the width a slim student shrinks."""

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        dropout: bool = False,
        padding: str = "reflect",
        widths: list[int] | None = None,
        upsample: str = "convtranspose",
        kernel: int = 7,
        block: str = "plain",
    ) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel}")
        w = check_widths(widths, 2 * N_DOWN + 1, "stem, downsamplings, trunk, upsamplings")
        w = w or [ngf * 2**i for i in range(N_DOWN + 1)] + [
            ngf * 2 ** (N_DOWN - 1 - i) for i in range(N_DOWN)
        ]
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(kernel // 2),
            nn.Conv2d(input_nc, w[0], kernel, bias=bias),
            norm_layer(norm, w[0]),
            nn.ReLU(True),
        ]
        for i in range(N_DOWN):
            layers += [
                nn.Conv2d(w[i], w[i + 1], 3, stride=2, padding=1, bias=bias),
                norm_layer(norm, w[i + 1]),
                nn.ReLU(True),
            ]
        dim = w[N_DOWN]
        layers += [ResnetBlock(dim, norm, dropout, padding, block) for _ in range(n_blocks)]
        for i in range(N_DOWN):
            c_in, c_out = w[N_DOWN + i], w[N_DOWN + i + 1]
            up = upsample_2x(upsample, c_in, c_out, bias)
            layers += upsample_stage(up, norm_layer(norm, c_out), nn.ReLU(True))
        layers += [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(w[-1], output_nc, kernel), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.widths = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @staticmethod
    def infer_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Read the constructor arguments off a checkpoint's keys and shapes."""
        first = state["model.1.weight"]
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
        # with dropout the second conv moves from index 5 to 6 (index 6 is otherwise a norm)
        dropout = any(k.endswith(".conv_block.6.weight") and v.ndim == 4 for k, v in state.items())
        last = max(int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.weight$", k)))
        return {
            "input_nc": int(first.shape[1]),
            "output_nc": int(state[f"model.{last}.weight"].shape[0]),
            "ngf": int(first.shape[0]),
            "n_blocks": len(blocks),
            "norm": infer_norm(state, "model.2", "model.1"),
            "dropout": dropout,
        }

    @staticmethod
    def matches(state: dict[str, torch.Tensor]) -> bool:
        return "model.1.weight" in state and any(".conv_block." in k for k in state)
