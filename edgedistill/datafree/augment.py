"""Light augmentation for training classifiers on real images: random shifts (and flips)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shift_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 2, flip: bool = False) -> torch.Tensor:
    """Each image moved by up to `pad` pixels (edge-replicated), optionally mirrored left-right."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    if flip:
        mirror = torch.rand(n, generator=gen) < 0.5
        out = torch.where(mirror[:, None, None, None], out.flip(3), out)
    return out
