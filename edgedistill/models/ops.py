"""Operator choices the searched students swap in, each one module at the index of the op it replaces.

Keeping the replaced op's index keeps every other key of a family's `state_dict` where it was, so a
student inherits the teacher's weights by key wherever the op did not change. Why these ops: int8
runtimes run a resize + conv and a conv + PixelShuffle (DepthToSpace) quantized, while a
ConvTranspose often runs fp32 between Q/DQ (see docs/search.md).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

UPSAMPLES = ("convtranspose", "nearest", "bilinear", "pixelshuffle")
BLOCKS = ("plain", "dwsep")
KERNELS = (3, 7)


class ResizeConv(nn.Module):
    """2x resize (nearest or bilinear) then a 3x3 conv: upsampling without a ConvTranspose."""

    def __init__(self, cin: int, cout: int, mode: str, bias: bool) -> None:
        super().__init__()
        # a module of its own (no parameters, so no state-dict key): the resized tensor, which the
        # INT8 export quantizes, is then a module output that quantization-aware training can see
        corners = None if mode == "nearest" else False
        self.resize = nn.Upsample(scale_factor=2.0, mode=mode, align_corners=corners)
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.resize(x))


class PixelShuffleUp(nn.Module):
    """A 3x3 conv to 4x the channels, then PixelShuffle(2) (ONNX DepthToSpace); a BatchNorm and
    activation that follow it in the family sit before the shuffle (`upsample_stage`)."""

    def __init__(self, cin: int, cout: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout * 4, 3, padding=1, bias=bias)
        self.norm: nn.Module = nn.Identity()
        self.act: nn.Module = nn.Identity()
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.act(self.norm(self.conv(x))))

    @torch.no_grad()
    def load_norm(self, bn: nn.Module | None) -> bool:
        """Take a BatchNorm over the shuffled output's channels, each repeated for its four phases:
        the same function in eval mode (False where this layer has no BatchNorm of that size)."""
        own = self.norm
        if not (isinstance(own, nn.BatchNorm2d) and isinstance(bn, nn.BatchNorm2d)):
            return False
        if own.num_features != 4 * bn.num_features or own.affine != bn.affine:
            return False
        own.load_state_dict(per_phase(bn.state_dict()))
        return True

    @torch.no_grad()
    def load_transposed(self, ct: nn.ConvTranspose2d) -> bool:
        """Take `ct`'s weights, computing exactly its function (False where it cannot: not a stride-2,
        ungrouped ConvTranspose of these channels, or taps out of the 3x3 conv's reach).

        A stride-2 ConvTranspose is four convs, one per output phase, interleaved: output pixel
        (2i + a, 2j + b) sums input pixels (i + u, j + v) through kernel tap k = a + padding - 2u
        (and likewise in j). Stacked phase-major per output channel, as PixelShuffle reads them, these
        convs are this layer's conv, zeros where a phase has no tap; so a student inheriting a
        teacher's ConvTranspose starts where the teacher is, and runs it in int8 where the runtime has
        no int8 ConvTranspose (ONNX Runtime's CPU provider)."""
        k, (cin, cout) = ct.kernel_size[0], (ct.in_channels, ct.out_channels)
        exact_size = k + ct.output_padding[0] - 2 * ct.padding[0] == 2  # output exactly 2x the input
        if (
            ct.stride != (2, 2)
            or ct.groups != 1
            or ct.dilation != (1, 1)
            or ct.kernel_size != (k, k)
            or len(set(ct.padding)) != 1
            or len(set(ct.output_padding)) != 1
            or not exact_size
            or (cin, cout * 4) != (self.conv.in_channels, self.conv.out_channels)
        ):
            return False
        taps = _phase_taps(k, ct.padding[0])
        if taps is None:
            return False
        w = torch.zeros_like(self.conv.weight).view(cout, 2, 2, cin, 3, 3)
        src = ct.weight.permute(1, 0, 2, 3)  # (cout, cin, k, k)
        for (a, rows), (b, cols) in itertools.product(taps, taps):
            for (u, kh), (v, kw) in itertools.product(rows, cols):
                w[:, a, b, :, 1 + u, 1 + v] = src[:, :, kh, kw]
        self.conv.weight.copy_(w.view_as(self.conv.weight))
        if self.conv.bias is not None:
            bias = ct.bias if ct.bias is not None else torch.zeros(cout, dtype=w.dtype, device=w.device)
            self.conv.bias.copy_(bias.repeat_interleave(4))
        return True


def per_phase(stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A BatchNorm's state for the channels after a PixelShuffle(2), as the one before it: each
    channel's entry repeated for its four phases (the step count as it is)."""
    return {k: v.repeat_interleave(4) if v.ndim == 1 else v for k, v in stats.items()}


def upsample_stage(up: nn.Module, norm: nn.Module, act: nn.Module | None = None) -> list[nn.Module]:
    """The layers `up`, `norm`, `act` as a family stacks them, but a PixelShuffle upsampler takes a
    BatchNorm (per phase: 4x its channels) and the activation before its shuffle, leaving Identity
    in their places so every later key keeps its index.

    Why: a BatchNorm straight after the conv folds into it and the activation fuses with it, so the
    int8 export runs Conv+Relu -> DepthToSpace in uint8; after the shuffle, ONNX Runtime ran the
    BatchNorm in fp32 between DQ and Q (~11 % of the searched student's kernel time)."""
    tail = [act] if act is not None else []
    if not (isinstance(up, PixelShuffleUp) and isinstance(norm, nn.BatchNorm2d)):
        return [up, norm, *tail]
    up.norm = nn.BatchNorm2d(
        4 * norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats
    )
    if act is not None:
        up.act = act
    return [up, nn.Identity(), *(nn.Identity() for _ in tail)]


def _phase_taps(k: int, padding: int) -> list[tuple[int, list[tuple[int, int]]]] | None:
    """Per output phase a in {0, 1}: the (input offset u, kernel tap) pairs of a stride-2 transposed
    conv with kernel `k`, tap = a + padding - 2u; None where an offset leaves the 3x3 conv's [-1, 1]."""
    out = []
    for a in (0, 1):
        pairs = [((a + padding - tap) // 2, tap) for tap in range(k) if (a + padding - tap) % 2 == 0]
        if any(abs(u) > 1 for u, _ in pairs):
            return None
        out.append((a, pairs))
    return out


class SepConv(nn.Module):
    """Depthwise k x k conv then a pointwise 1x1 conv: ~k*k fewer MACs than a plain conv."""

    def __init__(
        self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, bias: bool = True
    ) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, k, stride=stride, padding=padding, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


def upsample_2x(kind: str, cin: int, cout: int, bias: bool, kernel: int = 3, padding: int = 1) -> nn.Module:
    """A 2x upsampling from `cin` to `cout` channels; "convtranspose" is the reference layer
    (`kernel`/`padding` as the family has it, output_padding for odd kernels)."""
    if kind == "convtranspose":
        out_pad = 1 if kernel % 2 else 0
        return nn.ConvTranspose2d(
            cin, cout, kernel, stride=2, padding=padding, output_padding=out_pad, bias=bias
        )
    if kind in ("nearest", "bilinear"):
        return ResizeConv(cin, cout, kind, bias)
    if kind == "pixelshuffle":
        return PixelShuffleUp(cin, cout, bias)
    raise ValueError(f"upsample must be one of {', '.join(UPSAMPLES)}, got '{kind}'")


def conv(
    block: str, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, bias: bool = True
) -> nn.Module:
    """A plain conv, or its depthwise-separable form."""
    if block == "plain":
        return nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=bias)
    if block == "dwsep":
        return SepConv(cin, cout, k, stride, padding, bias)
    raise ValueError(f"block must be one of {', '.join(BLOCKS)}, got '{block}'")


def check_widths(widths: list[int] | tuple[int, ...] | None, n: int, what: str) -> list[int] | None:
    """Per-stage widths: `n` positive ints, or None for the family's own ngf multiples."""
    if widths is None:
        return None
    out = [int(w) for w in widths]
    if len(out) != n or min(out) < 1:
        raise ValueError(f"widths must be {n} positive ints ({what}), got {list(widths)}")
    return out
