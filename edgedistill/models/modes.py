"""Eval mode for any model a user brings, `torch.export` programs included.

A module unflattened from a `.pt2` program refuses `.eval()`/`.train()` (torch 2.13:
"Calling eval() is not supported yet"). Its graph was captured in eval mode (students are saved
that way, see distiller/student.py), so there is nothing to switch: it is returned as it is.
"""

from __future__ import annotations

from torch import nn


def eval_mode(module: nn.Module) -> nn.Module:
    """`module.eval()`, or `module` itself when it is a torch.export program (already eval)."""
    try:
        return module.eval()
    except NotImplementedError:
        return module
