"""torch eager (fp32) as a Runner: the teacher baseline every artifact is compared against.

It eats and returns numpy like the runtime backends, so the timed call includes the same
numpy <-> tensor hand-over a user's app pays (torch.from_numpy shares memory; .numpy() too).
Only imported for torch sources: the runtime part on a device never loads this module's torch.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgedistill.backends.base import LayerTime


class TorchRunner:
    """An nn.Module in eval mode behind the Runner protocol (run, layer_times)."""

    def __init__(
        self, module: Any, input_names: list[str], output_names: list[str], profile_layers: bool = False
    ) -> None:
        import torch

        from edgedistill.models.modes import eval_mode

        self._torch = torch
        self.module = eval_mode(module)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self._layer_ns: dict[str, int] = {}
        self._layer_type: dict[str, str] = {}
        self._calls = 0
        self._hooks: list[Any] = []
        if profile_layers:
            self._hook_leaves()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(inputs[name]) for name in self.input_names]
            out = self.module(*args)
        outs = out if isinstance(out, tuple | list) else (out,)
        self._calls += 1
        return {name: t.numpy() for name, t in zip(self.output_names, outs, strict=False)}

    # ------------------------------------------------------------------------------ per layer
    def _hook_leaves(self) -> None:
        """Time every leaf module with forward hooks: eager mode runs layers one by one."""
        starts: dict[str, int] = {}
        for name, m in self.module.named_modules():
            if not name or list(m.children()):
                continue
            self._layer_type[name] = type(m).__name__

            def pre(_m: Any, _in: Any, name: str = name) -> None:
                starts[name] = time.perf_counter_ns()

            def post(_m: Any, _in: Any, _out: Any, name: str = name) -> None:
                self._layer_ns[name] = self._layer_ns.get(name, 0) + time.perf_counter_ns() - starts[name]

            self._hooks.append(m.register_forward_pre_hook(pre))
            self._hooks.append(m.register_forward_hook(post))

    def layer_times(self) -> list[LayerTime]:
        if not self._calls:
            return []
        return [
            LayerTime(name, self._layer_type[name], ns / 1e6 / self._calls, "fp32")
            for name, ns in self._layer_ns.items()
        ]

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
