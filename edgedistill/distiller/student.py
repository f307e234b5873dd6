"""Student construction: a slimmed copy of the teacher that inherits its strongest channels.

Built-in families shrink `ngf` (or take a searched architecture) and copy the teacher's most
important channels, chosen per channel group (`channels.py`) so residual sums and U-Net
concatenations stay consistent. Any other nn.Module is pruned structurally (`pruned.py`).
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec, spec_for_family
from edgedistill.distiller.channels import channel_plan, inherit_state
from edgedistill.distiller.pruned import prune_module
from edgedistill.models.norms import NORMS
from edgedistill.models.ops import PixelShuffleUp
from edgedistill.models.registry import create, family_class
from edgedistill.models.resnet import FIRST_BLOCK, ResnetBlock

BUILT_IN = ("resnet", "unet", "dcgan")
INITS = ("inherit", "scratch")
# what a searched architecture may set, per family (constructor kwargs; see models/ops.py)
ARCH_KEYS = {
    "resnet": ("widths", "n_blocks", "upsample", "kernel", "block", "norm"),
    "unet": ("widths", "upsample", "block", "norm"),
    "dcgan": ("widths", "upsample"),
}


def make_student(
    teacher: nn.Module,
    spec: GeneratorSpec,
    width: float,
    init: str = "inherit",
    norm: str | None = None,
    example_inputs: tuple[torch.Tensor, ...] | None = None,
) -> tuple[nn.Module, GeneratorSpec]:
    """A student keeping ~`width` of the teacher's channels, and its spec.

    `init="inherit"` starts it from the teacher's strongest channels (distillation then starts
    near the teacher); `"scratch"` gives fresh default weights. The teacher is never modified.
    """
    _check_args(width, init, norm)
    if spec.family in BUILT_IN:
        student, new_spec = _slim_family(teacher, spec, width, init, norm)
        method = "slimmed copy"
    else:
        if norm is not None:
            raise EdgeDistillError("--norm applies to resnet/unet students only; leave it unset here")
        student = prune_module(teacher, width, init, example_inputs)
        new_spec = replace(copy.deepcopy(spec), family=None, kwargs={})
        method = "torch-pruning"
    teacher_id = spec.provenance.get("sha256") or spec.provenance.get("source")
    new_spec.provenance = {"teacher": teacher_id, "width": width, "init": init, "method": method}
    first = next((p for p in teacher.parameters() if p.is_floating_point()), None)
    if first is not None:
        student = student.to(device=first.device, dtype=first.dtype)
    return student.train(teacher.training), new_spec


def _check_args(width: float, init: str, norm: str | None) -> None:
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not 0 < width <= 1:
        raise EdgeDistillError(f"width must be a number in (0, 1], got {width!r}")
    if init not in INITS:
        raise EdgeDistillError(f"init must be one of {', '.join(INITS)}, got '{init}'")
    if norm is not None and norm not in NORMS:
        raise EdgeDistillError(f"norm must be one of {', '.join(NORMS)}, got '{norm}'")


def make_student_from_arch(
    teacher: nn.Module,
    spec: GeneratorSpec,
    arch: dict[str, Any],
    init: str = "inherit",
) -> tuple[nn.Module, GeneratorSpec]:
    """A student of the teacher's family built from `arch` (per-stage widths, ops; `ARCH_KEYS`).

    Inherits the teacher's strongest channels wherever a layer keeps its op (kernels are center
    cropped, dropped residual blocks are skipped evenly); a layer whose op changed starts fresh,
    and a residual block that starts fresh adds nothing at first (its last norm's scale, or its last
    conv, is zeroed)."""
    family = spec.family
    if family not in ARCH_KEYS:
        raise EdgeDistillError(
            f"a searched architecture needs a built-in family {list(ARCH_KEYS)}, got {family}"
        )
    if init not in INITS:
        raise EdgeDistillError(f"init must be one of {', '.join(INITS)}, got '{init}'")
    unknown = sorted(set(arch) - set(ARCH_KEYS[family]))
    if unknown:
        raise EdgeDistillError(
            f"{family} architectures set {', '.join(ARCH_KEYS[family])}; not {', '.join(unknown)}"
        )
    kwargs = dict(spec.kwargs)
    new_kwargs = {**kwargs, **copy.deepcopy(arch)}
    if arch.get("widths"):
        new_kwargs["ngf"] = int(arch["widths"][0])
    try:
        student = create(family, **new_kwargs)
    except (TypeError, ValueError) as exc:
        raise EdgeDistillError(f"bad {family} architecture {arch}: {exc}") from None
    if init == "inherit":
        skeleton = teacher if isinstance(teacher, family_class(family)) else create(family, **kwargs)
        state = teacher.state_dict()
        _check_fits(state, skeleton.state_dict(), f"{family}({_kw(kwargs)})")
        key_map = _key_map(family, kwargs, new_kwargs)
        s_state = student.state_dict()
        plan = channel_plan(skeleton)
        student.load_state_dict(inherit_state(state, s_state, plan, key_map))
        fresh = {k for k, v in s_state.items() if v.ndim == 4 and _teacher_key(key_map(k), state) is None}
        teacher_up = kwargs.get("upsample", _default_arg(family, "upsample"))
        fresh -= _inherit_transposed(
            student, family, {**new_kwargs, "upsample": teacher_up}, state, plan, key_map
        )
        _quiet_fresh_residuals(student, fresh)  # fresh convs only: a norm change alone keeps its convs
    extra: dict[str, Any] = {"input_range": spec.input_range, "output_range": spec.output_range}
    if family != "dcgan" and spec.default_size is not None:
        extra["default_size"] = spec.default_size
    new_spec = spec_for_family(family, new_kwargs, **extra)
    teacher_id = spec.provenance.get("sha256") or spec.provenance.get("source")
    new_spec.provenance = {
        "teacher": teacher_id,
        "arch": copy.deepcopy(arch),
        "init": init,
        "method": "architecture",
    }
    first = next((p for p in teacher.parameters() if p.is_floating_point()), None)
    if first is not None:
        student = student.to(device=first.device, dtype=first.dtype)
    return student.train(teacher.training), new_spec


def _inherit_transposed(
    student: nn.Module,
    family: str,
    twin_kwargs: dict[str, Any],
    state: dict[str, torch.Tensor],
    plan: Any,
    key_map: Callable[[str], str | None],
) -> set[str]:
    """PixelShuffle upsamplers that replace the teacher's ConvTransposes take their weights exactly
    (`PixelShuffleUp.load_transposed`, and `load_norm` for the BatchNorm after it): the twin of the
    student with the teacher's upsampling op inherits its slice as usual, and each upsampler
    converts its twin's. Returns the keys filled."""
    ups = {n: m for n, m in student.named_modules() if isinstance(m, PixelShuffleUp)}
    if not ups:
        return set()
    twin = create(family, **twin_kwargs)
    twin.load_state_dict(inherit_state(state, twin.state_dict(), plan, key_map))
    filled: set[str] = set()
    for name, up in ups.items():
        ct = twin.get_submodule(name)
        if isinstance(ct, nn.ConvTranspose2d) and up.load_transposed(ct):
            filled |= {f"{name}.conv.{p}" for p, _ in up.conv.named_parameters()}
            up.load_norm(_next_sibling(twin, name))
    return filled


def _next_sibling(model: nn.Module, name: str) -> nn.Module | None:
    """The module after `name` in its parent (the norm a family stacks after an upsampler)."""
    parent_name, _, child = name.rpartition(".")
    children = list(model.get_submodule(parent_name).named_children())
    i = [n for n, _ in children].index(child) + 1
    return children[i][1] if i < len(children) else None


def _teacher_key(key: str | None, state: dict[str, torch.Tensor]) -> str | None:
    return key if key is not None and key in state else None


def _key_map(family: str, t_kwargs: dict[str, Any], s_kwargs: dict[str, Any]) -> Callable[[str], str | None]:
    """Student key -> the teacher key holding its weights (None: no counterpart).

    Only a resnet with fewer residual blocks moves keys: its blocks take evenly spaced teacher
    blocks and the layers after the trunk shift by the blocks dropped."""
    if family != "resnet":
        return lambda k: k
    t_n = int(t_kwargs.get("n_blocks", _default_arg(family, "n_blocks")))
    s_n = int(s_kwargs.get("n_blocks", t_n))
    if s_n == t_n:
        return lambda k: k
    if s_n <= t_n:
        chosen = [round(j * (t_n - 1) / max(s_n - 1, 1)) for j in range(s_n)] if s_n > 1 else [0]
    else:
        chosen = list(range(t_n))

    def mapped(key: str) -> str | None:
        m = re.match(r"model\.(\d+)\.(.*)$", key)
        if not m or int(m.group(1)) < FIRST_BLOCK:
            return key
        i, rest = int(m.group(1)), m.group(2)
        if i < FIRST_BLOCK + s_n:
            j = i - FIRST_BLOCK
            return f"model.{FIRST_BLOCK + chosen[j]}.{rest}" if j < len(chosen) else None
        return f"model.{i + t_n - s_n}.{rest}"

    return mapped


def _quiet_fresh_residuals(student: nn.Module, fresh: set[str]) -> None:
    """Start each residual block holding fresh weights as the identity instead of adding noise to the
    inherited trunk (the zero-init-residual trick): zero the scale and shift of its closing BatchNorm,
    or, without one (InstanceNorm, no affine), its last conv.

    Why not always the conv: a zeroed conv feeds its BatchNorm zeros, so the statistics the student is
    calibrated with give that BN a variance of 0, and frozen (distiller/batchnorm.py) it divides the
    conv's first updates by sqrt(eps): the proxy of a depthwise-separable candidate fell from 21 to
    8.8 dB vs the teacher (search/proxy.py, 120 steps), and with the BN's scale zeroed it scored 24.4."""
    for name, m in student.named_modules():
        if not isinstance(m, ResnetBlock):
            continue
        prefix = f"{name}." if name else ""
        if not any(k.startswith(prefix) for k in fresh):
            continue
        last = [
            c for c in m.conv_block.modules() if isinstance(c, (nn.Conv2d, nn.modules.batchnorm._BatchNorm))
        ]
        with torch.no_grad():
            if isinstance(last[-1], nn.modules.batchnorm._BatchNorm) and last[-1].affine:
                last[-1].weight.zero_()
                last[-1].bias.zero_()
            else:
                [c for c in last if isinstance(c, nn.Conv2d)][-1].weight.zero_()


# ------------------------------------------------------------------------------ built-in families
def _slim_family(
    teacher: nn.Module, spec: GeneratorSpec, width: float, init: str, norm: str | None
) -> tuple[nn.Module, GeneratorSpec]:
    family = str(spec.family)
    if norm is not None and family == "dcgan":
        raise EdgeDistillError("dcgan students always use BatchNorm: leave --norm unset")
    kwargs = dict(spec.kwargs)
    ngf = int(kwargs.get("ngf", _default_arg(family, "ngf")))
    new_kwargs = {**kwargs, "ngf": max(1, round(ngf * width))}
    if norm is not None:
        new_kwargs["norm"] = norm
    student = create(family, **new_kwargs)
    if init == "inherit":
        skeleton = teacher if isinstance(teacher, family_class(family)) else create(family, **kwargs)
        state = teacher.state_dict()
        _check_fits(state, skeleton.state_dict(), f"{family}({_kw(kwargs)})")
        student.load_state_dict(inherit_state(state, student.state_dict(), channel_plan(skeleton)))
    extra: dict[str, Any] = {"input_range": spec.input_range, "output_range": spec.output_range}
    if family != "dcgan" and spec.default_size is not None:
        extra["default_size"] = spec.default_size
    return student, spec_for_family(family, new_kwargs, **extra)


def _check_fits(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], label: str) -> None:
    """The teacher's weights must be laid out as its spec's family says, or slicing goes astray."""
    wrong = [k for k, v in expected.items() if k not in state or state[k].shape != v.shape]
    wrong += [k for k in state if k not in expected]
    if wrong:
        raise EdgeDistillError(
            f"the teacher's weights do not fit its spec {label} (first mismatch: '{wrong[0]}'); fix model.json"
        )


def _kw(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())


def _default_arg(family: str, name: str) -> Any:
    return inspect.signature(family_class(family)).parameters[name].default
