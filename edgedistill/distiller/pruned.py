"""Students of modules that are not a built-in family: pruned structurally, saved as programs.

torch-pruning removes the least important (L1) channels of any nn.Module whose forward it can
trace; no constructor can rebuild the new shape, so the student is saved as a torch.export program
(`save_pt2`), which `load_generator` reads without the user's code.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgedistill.core.atomic import write_atomic
from edgedistill.core.errors import EdgeDistillError


def prune_module(
    teacher: nn.Module, width: float, init: str, example_inputs: tuple[torch.Tensor, ...] | None
) -> nn.Module:
    if example_inputs is None:
        raise EdgeDistillError("pruning a custom nn.Module needs example_inputs (e.g. spec.example_inputs())")
    example_inputs = tuple(example_inputs)
    student = copy.deepcopy(teacher).eval().requires_grad_(True)  # tracing needs grad_fn nodes
    try:
        with torch.no_grad():
            shape = _first(student(*example_inputs)).shape
    except Exception as exc:  # whatever the user's forward raises on inputs that do not fit
        raise EdgeDistillError(
            f"{type(teacher).__name__} fails on example_inputs of shape "
            f"{[list(x.shape) for x in example_inputs]}: {exc}"
        ) from None
    if width < 1:
        _prune(student, width, example_inputs)
        try:
            with torch.no_grad():
                new_shape = _first(student(*example_inputs)).shape
        except Exception as exc:  # torch-pruning cut one side of a join and not the other
            raise EdgeDistillError(
                f"torch-pruning left {type(teacher).__name__} inconsistent ({str(exc).splitlines()[0]}): it loses "
                "channels through a .view/.reshape into a torch.cat (an embedding made (N, C, 1, 1)); write that "
                "as .unsqueeze(-1).unsqueeze(-1), or keep every channel with width 1"
            ) from None
        if new_shape != shape:
            raise EdgeDistillError(f"pruning changed the output shape {list(shape)} -> {list(new_shape)}")
    if init == "scratch":
        for m in student.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return student


def _prune(model: nn.Module, width: float, example_inputs: tuple[torch.Tensor, ...]) -> None:
    import torch_pruning as tp

    ignored = _output_layers(model, example_inputs)
    try:
        pruner = tp.pruner.BasePruner(
            model,
            example_inputs,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=1 - width,
            ignored_layers=ignored,
        )
        pruner.step()
    except Exception as exc:  # torch-pruning raises whatever its tracer hits
        raise EdgeDistillError(
            f"torch-pruning cannot prune {type(model).__name__} ({type(exc).__name__}: {exc})"
        ) from None


def _output_layers(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> list[nn.Module]:
    """The conv/linear layers whose channels reach the output without passing another such layer.

    They must keep their output channels (or the generator's output changes shape); found by
    walking the autograd graph back from the output, stopping at each layer's own node.
    """
    made_by: dict[Any, nn.Module] = {}

    def hook(mod: nn.Module, _: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            made_by[out.grad_fn] = mod

    layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        out = _first(model(*example_inputs))
    finally:
        for h in handles:
            h.remove()
    found: list[nn.Module] = []
    stack, seen = [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in made_by:
            found.append(made_by[node])
            continue
        stack.extend(nxt for nxt, _ in node.next_functions)
    return found


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


# ------------------------------------------------------------------------------------ saving
def save_pt2(module: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | Path) -> Path:
    """Save `module` as a torch.export program, loadable without its code (`load_generator`).

    Image inputs get dynamic H/W where the model allows it (Dim.AUTO specialises what it must,
    e.g. a U-Net's divisibility); if even that fails, the example's static shape is used.
    """
    example_inputs = tuple(example_inputs)
    was_training = module.training
    module.eval()
    try:
        program = _export(module, example_inputs)
    finally:
        module.train(was_training)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.export.save(program, f)

    return write_atomic(path, write)


def _export(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    auto = torch.export.Dim.AUTO
    dynamic = tuple({2: auto, 3: auto} if x.ndim == 4 and x.shape[2] > 1 else None for x in example_inputs)
    try:
        return torch.export.export(module, example_inputs, dynamic_shapes=dynamic)
    except Exception:  # some models only export at a fixed size
        pass
    try:
        return torch.export.export(module, example_inputs)
    except Exception as exc:
        raise EdgeDistillError(f"torch.export failed for {type(module).__name__}: {exc}") from None
