"""Parameters and MACs, counted by torch's own FlopCounterMode (no hand-written per-op rules).

FlopCounterMode counts a multiply-add as 2 FLOPs; MACs = FLOPs / 2. Elementwise ops (norms,
activations) are not counted, as in the GAN-compression literature's MAC figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class LayerCost:
    name: str
    type: str
    output_shape: list[int]
    params: int
    macs: int


@dataclass
class Complexity:
    params: int
    macs: int
    input_shapes: list[list[int]]
    layers: list[LayerCost]

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def measure_complexity(net: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Complexity:
    """Total and per-leaf-layer MACs and params for one forward pass on `inputs`."""
    shapes: dict[str, list[int]] = {}
    hooks = []
    leaves = {name: m for name, m in net.named_modules() if name and not list(m.children())}
    if isinstance(net, torch.jit.ScriptModule):  # no hooks on TorchScript: totals only
        leaves = {}
    for name, m in leaves.items():

        def hook(_m: nn.Module, _in: object, out: object, name: str = name) -> None:
            if isinstance(out, torch.Tensor):
                shapes[name] = list(out.shape)

        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(*inputs)
    finally:
        for h in hooks:
            h.remove()
    root = type(net).__name__
    flops_by_module = {
        key[len(root) + 1 :]: sum(ops.values())
        for key, ops in counter.get_flop_counts().items()
        if key.startswith(root + ".")
    }
    layers = [
        LayerCost(
            name=name,
            type=type(m).__name__,
            output_shape=shapes.get(name, []),
            params=sum(p.numel() for p in m.parameters(recurse=False)),
            macs=int(flops_by_module.get(name, 0) // 2),
        )
        for name, m in leaves.items()
        if name in shapes
    ]
    return Complexity(
        params=count_params(net),
        macs=int(counter.get_total_flops() // 2),
        input_shapes=[list(x.shape) for x in inputs],
        layers=layers,
    )
