"""Save and read state dicts as safetensors (no pickle, so nothing runs on load)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from edgedistill.core.atomic import write_atomic


def save_weights(model: nn.Module, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write `model`'s state dict; floating tensors cast to `dtype` (e.g. fp16 for shipping)."""
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v.contiguous()
    return write_atomic(path, lambda p: save_file(state, str(p)))


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Floating tensors come back as float32 whatever they were stored as."""
    state = load_file(str(path))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
