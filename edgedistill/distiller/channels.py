"""Which teacher channels a slimmed built-in generator inherits, consistently across its layers.

A generator is described as channel *groups*: each conv's output channels form one, residual sums
merge the two they add, and a U-Net up-conv reads the concatenation of two. The student keeps each
group's strongest channels (L1 norm of the filters that produce them), chosen once per group, so
every tensor that reads or writes the group is cut along the same index set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from edgedistill.core.errors import EdgeDistillError
from edgedistill.models.ops import PixelShuffleUp
from edgedistill.models.resnet import ResnetBlock
from edgedistill.models.unet import UnetLevel

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)
_NORM_PARAMS = ("weight", "bias", "running_mean", "running_var")
_NORMS = nn.modules.batchnorm._NormBase  # BatchNorm and InstanceNorm: per-channel params/stats
_PASS_THROUGH = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Dropout, nn.Identity, nn.ReflectionPad2d)
_PASS_THROUGH += (nn.ReplicationPad2d,)

Slice = tuple[str, int]  # (state-dict key, dimension)


@dataclass
class Group:
    """Channels sharing one index set: every (key, dim) in a plan's layout that names this group."""

    size: int
    producers: list[Slice] = field(default_factory=list)  # weights whose filters make the channels


@dataclass
class ChannelPlan:
    """Channel groups of a built-in generator and, per (key, dim), the groups laid out along it.

    A layout lists several groups where a tensor concatenates them (a U-Net up-conv's input is
    cat([skip, inner]), so its channel index set is the union of two groups with offsets).
    """

    groups: list[Group] = field(default_factory=list)
    layout: dict[Slice, list[int]] = field(default_factory=dict)
    phases: dict[Slice, int] = field(default_factory=dict)  # entries per channel (PixelShuffle: 4)

    def new(self, size: int, producer: Slice | None = None) -> int:
        self.groups.append(Group(size, [producer] if producer else []))
        return len(self.groups) - 1

    def use(self, key: str, dim: int, groups: list[int], phases: int = 1) -> None:
        """`phases` > 1: channel c of the groups spans entries c*phases .. c*phases + phases - 1."""
        self.layout[(key, dim)] = list(groups)
        if phases > 1:
            self.phases[(key, dim)] = phases

    def merge(self, keep: int, drop: int) -> None:
        """Residual sums force two groups to share channels: fold `drop` into `keep`."""
        if keep == drop:
            return
        self.groups[keep].producers += self.groups[drop].producers
        self.groups[drop] = Group(0)
        for groups in self.layout.values():
            groups[:] = [keep if g == drop else g for g in groups]


def channel_plan(model: nn.Module) -> ChannelPlan:
    """Describe a resnet/unet/dcgan generator as channel groups by walking its layers in order."""
    plan = ChannelPlan()
    _walk(model, "", None, plan)
    return plan


def _walk(m: nn.Module, prefix: str, layout: list[int] | None, plan: ChannelPlan) -> list[int] | None:
    """Record where `m` reads and writes channels; return the layout of its output."""
    if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels:
        layout = layout or [plan.new(m.in_channels)]  # depthwise: channel c in, channel c out
        plan.use(f"{prefix}weight", 0, layout)
        plan.use(f"{prefix}bias", 0, layout)
        return layout
    if isinstance(m, PixelShuffleUp):  # out channel c is conv (and norm) channels 4c..4c+3
        layout = layout or [plan.new(m.conv.in_channels)]
        plan.use(f"{prefix}conv.weight", 1, layout)
        out = plan.new(m.conv.out_channels // 4, (f"{prefix}conv.weight", 0))
        for key in ("conv.weight", "conv.bias", *(f"norm.{p}" for p in _NORM_PARAMS)):
            plan.use(f"{prefix}{key}", 0, [out], phases=4)
        return [out]
    if isinstance(m, _CONVS):
        cin, cout = (1, 0) if isinstance(m, nn.Conv2d) else (0, 1)  # ConvTranspose2d: (in, out, k, k)
        layout = layout or [plan.new(m.weight.shape[cin])]  # the image / noise input
        plan.use(f"{prefix}weight", cin, layout)
        out = plan.new(m.weight.shape[cout], (f"{prefix}weight", cout))
        plan.use(f"{prefix}weight", cout, [out])
        plan.use(f"{prefix}bias", 0, [out])
        return [out]
    if isinstance(m, _NORMS) and layout is not None:
        for name in _NORM_PARAMS:
            plan.use(f"{prefix}{name}", 0, layout)
        return layout
    if isinstance(m, ResnetBlock):
        inner = _walk(m.conv_block, f"{prefix}conv_block.", layout, plan)
        if layout is None or inner is None or len(layout) != 1 or len(inner) != 1:
            raise EdgeDistillError("a residual block must read and write one channel group")
        plan.merge(layout[0], inner[0])
        return layout
    if isinstance(m, UnetLevel):
        inner = _walk(m.model, f"{prefix}model.", layout, plan)
        return inner if m.outermost or layout is None or inner is None else layout + inner
    children = list(m.named_children())
    if not children:
        if isinstance(m, _PASS_THROUGH) or not any(True for _ in m.parameters(recurse=False)):
            return layout
        raise EdgeDistillError(f"cannot slim layer {prefix.rstrip('.')} ({type(m).__name__})")
    for name, child in children:  # the built-in families register children in forward order
        layout = _walk(child, f"{prefix}{name}.", layout, plan)
    return layout


def inherit_state(
    teacher_state: dict[str, torch.Tensor],
    student_state: dict[str, torch.Tensor],
    plan: ChannelPlan,
    key_map: Callable[[str], str | None] | None = None,
) -> dict[str, torch.Tensor]:
    """The student's state dict cut from the teacher's along the plan's chosen channels.

    `key_map` names the teacher key for a student key (default: the same). Keys the teacher lacks
    keep the student's defaults, biases start at zero (a norm change or a new op added them);
    teacher keys the student lacks are dropped. A smaller odd kernel takes the teacher kernel's
    center; a tensor whose unplanned dims still differ (a new op's shape) keeps its defaults.
    """
    key_map = key_map or (lambda k: k)
    as_teacher = {tk: v for k, v in student_state.items() if (tk := key_map(k)) is not None}
    keep = [_select(i, g, teacher_state, as_teacher, plan) for i, g in enumerate(plan.groups)]
    out: dict[str, torch.Tensor] = {}
    for key, target in student_state.items():
        tk = key_map(key)
        src = teacher_state.get(tk) if tk is not None else None
        if src is None or src.ndim != target.ndim:
            out[key] = torch.zeros_like(target) if key.endswith("bias") else target
            continue
        src = src.detach()
        planned = set()
        for dim in range(src.ndim):
            groups = plan.layout.get((tk, dim))
            if groups:
                index = _index(groups, keep, plan, plan.phases.get((tk, dim), 1))
                src = src.index_select(dim, index.to(src.device))
                planned.add(dim)
        src = _center_crop(src, target.shape)
        if src.shape != target.shape:
            if any(src.shape[d] != target.shape[d] for d in planned):
                raise EdgeDistillError(
                    f"cannot inherit '{key}': teacher slice {list(src.shape)} vs student {list(target.shape)}"
                )
            out[key] = target
            continue
        out[key] = src.clone()
    return out


def _center_crop(src: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A conv kernel's center taps when the student's (odd) kernel is smaller."""
    if src.ndim != 4 or src.shape[2:] == shape[2:]:
        return src
    (kh, kw), (sh, sw) = src.shape[2:], shape[2:]
    if sh > kh or sw > kw or (kh - sh) % 2 or (kw - sw) % 2:
        return src
    top, left = (kh - sh) // 2, (kw - sw) // 2
    return src[:, :, top : top + sh, left : left + sw]


def _select(
    index: int,
    group: Group,
    teacher: dict[str, torch.Tensor],
    student: dict[str, torch.Tensor],
    plan: ChannelPlan,
) -> torch.Tensor:
    """Indices of the group's strongest channels, in their original order.

    `student` holds the student's tensors under the teacher's keys; the kept count is read off the
    first single-group (key, dim) of this group the student has (its op may differ from the producer's)."""
    n = _student_size(index, group, student, plan)
    if not group.producers or n is None or n >= group.size:
        return torch.arange(group.size)
    score = torch.zeros(group.size)
    for key, dim in group.producers:
        w = teacher[key].detach().float().cpu().abs()
        l1 = w.sum(dim=[d for d in range(w.ndim) if d != dim]).view(group.size, -1).sum(1)  # per phase
        score += l1 / l1.mean().clamp_min(1e-12)  # each producer weighs the same in a shared group
    return score.topk(n).indices.sort().values


def _student_size(
    index: int, group: Group, student: dict[str, torch.Tensor], plan: ChannelPlan
) -> int | None:
    for key, dim in group.producers:
        if key in student and student[key].ndim > dim:
            return int(student[key].shape[dim]) // plan.phases.get((key, dim), 1)
    for (key, dim), groups in plan.layout.items():
        if groups == [index] and key in student and student[key].ndim > dim:
            return int(student[key].shape[dim]) // plan.phases.get((key, dim), 1)
    return None


def _index(groups: list[int], keep: list[torch.Tensor], plan: ChannelPlan, phases: int = 1) -> torch.Tensor:
    parts, offset = [], 0
    for g in groups:
        parts.append(keep[g] + offset)
        offset += plan.groups[g].size
    channels = torch.cat(parts)
    return (channels[:, None] * phases + torch.arange(phases)).flatten()
