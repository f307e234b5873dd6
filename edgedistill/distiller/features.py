"""Which intermediate layers feature KD matches, and how their outputs are read.

FeatureTap records named submodules' outputs with forward hooks, so any nn.Module (built-in
family or a user's own, pruned or not) can be distilled without editing its forward.
kd_layer_names picks the layer pairs: by role for the built-in families, and for anything else
evenly spaced layers that both models have, found by running each once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from edgedistill.core.errors import EdgeDistillError
from edgedistill.models.resnet import ResnetBlock
from edgedistill.models.unet import UnetLevel

FAMILIES = ("resnet", "unet", "dcgan", "generic")
# layers whose output is a copy of their input: never worth a feature-KD pair
_PASS_THROUGH = (
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.Dropout,
    nn.Identity,
)


def _submodule(module: nn.Module, name: str) -> nn.Module:
    try:
        return module.get_submodule(name)
    except AttributeError:
        some = ", ".join(n for n, _ in list(module.named_modules())[1:6])
        raise EdgeDistillError(
            f"{type(module).__name__} has no submodule '{name}' (names look like: {some})"
        ) from None


class FeatureTap:
    """Context manager: records the outputs of the named submodules of `module` during forwards.

    `features` lists them in the order of `names` and holds the latest forward of `module` only
    (a pre-hook on `module` clears them). Each output is cloned when recorded, so a later in-place
    op (ReLU(inplace=True), the U-Net's skip path) cannot change it; gradients flow through it.
    The last forward's features stay readable after the `with` block; the hooks do not.
    """

    def __init__(self, module: nn.Module, names: list[str]) -> None:
        self.module = module
        self.names = list(names)
        self._targets = [_submodule(module, n) for n in self.names]
        self._outputs: dict[str, Any] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> FeatureTap:
        self._handles.append(self.module.register_forward_pre_hook(lambda *_: self._outputs.clear()))
        for name, target in zip(self.names, self._targets, strict=True):
            self._handles.append(target.register_forward_hook(self._recorder(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _recorder(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self._outputs[name] = output.clone() if isinstance(output, Tensor) else output

        return hook

    @property
    def features(self) -> list[Tensor]:
        out = []
        for name in self.names:
            value = self._outputs.get(name)
            if not isinstance(value, Tensor):
                why = (
                    "did not run in the last forward" if value is None else f"returned {type(value).__name__}"
                )
                raise EdgeDistillError(f"feature layer '{name}' {why}; pick layers that return one tensor")
            out.append(value)
        return out


@contextmanager
def _inference(module: nn.Module) -> Iterator[None]:
    """eval() + no_grad for a probe forward, restoring each submodule's mode (BN stats untouched)."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes.items():
            m.train(training)


def _probe(module: nn.Module, names: list[str], inputs: tuple[Tensor, ...]) -> tuple[dict, torch.Size | None]:
    """One forward; per name the output shape (None when it ran twice, or gave no tensor), in run order.

    Records shapes only, so probing every module of a large model costs no extra memory.
    """
    shapes: dict[str, torch.Size | None] = {}

    def recorder(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: Any, output: Any) -> None:
            ran_before = name in shapes
            shapes.pop(name, None)  # re-insert, so dict order is the order modules finish
            ok = isinstance(output, Tensor) and not ran_before
            shapes[name] = output.shape if ok else None

        return hook

    handles = [_submodule(module, n).register_forward_hook(recorder(n)) for n in names]
    try:
        with _inference(module):
            final = module(*inputs)
    except Exception as exc:
        raise EdgeDistillError(f"{type(module).__name__} failed on the example inputs: {exc}") from None
    finally:
        for h in handles:
            h.remove()
    return shapes, final.shape if isinstance(final, Tensor) else None


def feature_channels(module: nn.Module, names: list[str], example_inputs: tuple[Tensor, ...]) -> list[int]:
    """Channel counts of the named layers' (N, C, H, W) outputs: what FeatureKD is built from."""
    shapes, _ = _probe(module, list(names), example_inputs)
    out = []
    for name in names:
        shape = shapes.get(name)
        if shape is None or len(shape) != 4:
            raise EdgeDistillError(f"feature layer '{name}' gives no single (N, C, H, W) output")
        out.append(int(shape[1]))
    return out


def kd_layer_names(
    teacher: nn.Module,
    student: nn.Module,
    example_inputs: tuple[Tensor, ...],
    family: str | None = None,
    max_layers: int = 4,
) -> list[str]:
    """Names of up to `max_layers` layers to match, present in both models with equal spatial sizes.

    family None reads the teacher's registered family; "generic" forces the search by shape.
    Never the final output layer. Channel counts may differ (FeatureKD adapts them).
    """
    if family is None:
        family = getattr(type(teacher), "family", None)
        family = family if family in _ROLE_PICKERS else "generic"
    if family not in FAMILIES:
        raise EdgeDistillError(f"unknown KD layer family '{family}': choose one of {', '.join(FAMILIES)}")
    if max_layers < 1:
        raise EdgeDistillError(f"max_layers must be at least 1, got {max_layers}")
    if family != "generic":
        picks = _ROLE_PICKERS[family](teacher, max_layers)
        if type(student) is type(teacher):  # e.g. fewer blocks: keep the roles whose names agree
            student_picks = set(_ROLE_PICKERS[family](student, max_layers))
            picks = [n for n in picks if n in student_picks]
        picks = _matching(teacher, student, picks, example_inputs)
        if picks:
            return _spread(picks, max_layers)
    return _generic(teacher, student, example_inputs, max_layers)


def _spread(names: list[str], k: int) -> list[str]:
    """k names evenly spaced over the list, always ending at its last (deepest) one."""
    if len(names) <= k:
        return names
    return [names[round((i + 1) * (len(names) - 1) / k)] for i in range(k)]


def _matching(
    teacher: nn.Module, student: nn.Module, names: list[str], inputs: tuple[Tensor, ...]
) -> list[str]:
    """The names (teacher's run order) in both models with 4-D outputs of equal batch and spatial size."""
    s_names = {n for n, _ in student.named_modules()}
    names = [n for n in names if n in s_names]
    t_shapes, t_final = _probe(teacher, names, inputs)
    s_shapes, _ = _probe(student, names, inputs)
    keep = [name for name, ts in t_shapes.items() if _same_nhw(ts, s_shapes.get(name))]
    return _drop_output_layers(keep, t_shapes, t_final)


def _same_nhw(a: torch.Size | None, b: torch.Size | None) -> bool:
    """Both (N, C, H, W) with equal N, H, W: channels may differ."""
    return a is not None and b is not None and len(a) == len(b) == 4 and a[0] == b[0] and a[2:] == b[2:]


def _drop_output_layers(names: list[str], shapes: dict, final: torch.Size | None) -> list[str]:
    """Drop the trailing run of layers shaped like the model's output (last conv, tanh, wrapper)."""
    end = len(names)
    while end > 0 and final is not None and shapes[names[end - 1]] == final:
        end -= 1
    if end == 0 and names:  # every layer is output-shaped: drop only the last one
        end = len(names) - 1
    return names[:end]


def _generic(teacher: nn.Module, student: nn.Module, inputs: tuple[Tensor, ...], k: int) -> list[str]:
    """Evenly spaced layers of the shallowest cut through the module tree that has k candidates.

    A cut at depth d is the modules d levels deep plus the leaves above them, in run order; the
    shallowest one with enough candidates prefers whole blocks (a residual block) to their parts.
    """
    all_names = [n for n, m in teacher.named_modules() if n and not isinstance(m, _PASS_THROUGH)]
    candidates = _matching(teacher, student, all_names, inputs)
    if not candidates:
        raise EdgeDistillError(
            f"no layer of {type(teacher).__name__} has a (N, C, H, W) output of the same spatial size "
            f"in {type(student).__name__}; pass the feature layer names yourself"
        )
    leaves = {n for n, m in teacher.named_modules() if not any(True for _ in m.children())}
    best: list[str] = []
    for depth in range(1, max(n.count(".") for n in candidates) + 2):
        cut = [
            n for n in candidates if n.count(".") + 1 == depth or (n in leaves and n.count(".") + 1 < depth)
        ]
        if len(cut) >= k:
            return _spread(cut, k)
        best = cut if len(cut) > len(best) else best
    return _spread(best, k)


# ---- the built-in families, by role ------------------------------------------------------------


def _resnet_roles(net: nn.Module, _k: int) -> list[str]:
    """Downsampling output, middle and last residual block, ReLU after the first upsampling."""
    layers = list(net.model)  # type: ignore[arg-type]
    downs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    ups = [i for i, m in enumerate(layers) if isinstance(m, nn.ConvTranspose2d)]
    blocks = [i for i, m in enumerate(layers) if isinstance(m, ResnetBlock)]
    picks: list[int] = []
    if len(downs) >= 2:
        picks.append(_next_relu(layers, downs[1]))
    if blocks:
        picks += [blocks[len(blocks) // 2], blocks[-1]]
    if ups:
        picks.append(_next_relu(layers, ups[0]))
    return [f"model.{i}" for i in sorted({i for i in picks if i >= 0})]


def _next_relu(layers: list[nn.Module], start: int) -> int:
    return next((i for i in range(start, len(layers)) if isinstance(layers[i], nn.ReLU)), -1)


def _unet_roles(net: nn.Module, k: int) -> list[str]:
    """The k outermost levels' outputs (the largest maps); the outermost level is the output itself."""
    levels = [n for n, m in net.named_modules() if isinstance(m, UnetLevel) and not m.outermost]
    return levels[:k]


def _dcgan_roles(net: nn.Module, _k: int) -> list[str]:
    """The ReLUs closing each inner transposed-conv stage (the last stage ends in tanh)."""
    return [n for n, m in net.named_modules() if isinstance(m, nn.ReLU)]


_ROLE_PICKERS: dict[str, Callable[[nn.Module, int], list[str]]] = {
    "resnet": _resnet_roles,
    "unet": _unet_roles,
    "dcgan": _dcgan_roles,
}
