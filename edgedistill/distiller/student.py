"""Student construction: a slimmed copy of the teacher that inherits its strongest channels.

Built-in families shrink `ngf` and copy the teacher's most important channels (L1 norm of the
producing filters), chosen once per *channel group* so residual sums and U-Net concatenations stay
consistent. Any other nn.Module is pruned structurally with torch-pruning, and saved as a
torch.export program (`save_pt2`) because no constructor can rebuild its new shape.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgedistill.core.atomic import write_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec, spec_for_family
from edgedistill.models.norms import NORMS
from edgedistill.models.ops import PixelShuffleUp
from edgedistill.models.registry import create, family_class
from edgedistill.models.resnet import FIRST_BLOCK, ResnetBlock
from edgedistill.models.unet import UnetLevel

BUILT_IN = ("resnet", "unet", "dcgan")
INITS = ("inherit", "scratch")
_CONVS = (nn.Conv2d, nn.ConvTranspose2d)
_NORM_PARAMS = ("weight", "bias", "running_mean", "running_var")
_NORMS = nn.modules.batchnorm._NormBase  # BatchNorm and InstanceNorm: per-channel params/stats
_PASS_THROUGH = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Dropout, nn.Identity, nn.ReflectionPad2d)
_PASS_THROUGH += (nn.ReplicationPad2d,)
# what a searched architecture may set, per family (constructor kwargs; see models/ops.py)
ARCH_KEYS = {
    "resnet": ("widths", "n_blocks", "upsample", "kernel", "block", "norm"),
    "unet": ("widths", "upsample", "block", "norm"),
    "dcgan": ("widths", "upsample"),
}

Slice = tuple[str, int]  # (state-dict key, dimension)


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
        student = _prune_module(teacher, width, init, example_inputs)
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
    and a residual block that starts fresh adds nothing at first (its last conv is zeroed)."""
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
        new_state = inherit_state(state, s_state, channel_plan(skeleton), key_map)
        student.load_state_dict(new_state)
        fresh = {k for k, v in s_state.items() if v.ndim == 4 and _teacher_key(key_map(k), state) is None}
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
    """Zero the last conv of each residual block holding fresh weights: it starts as the identity
    instead of adding noise to the inherited trunk (the zero-init-residual trick)."""
    for name, m in student.named_modules():
        if not isinstance(m, ResnetBlock):
            continue
        prefix = f"{name}." if name else ""
        if not any(k.startswith(prefix) for k in fresh):
            continue
        convs = [c for c in m.conv_block.modules() if isinstance(c, nn.Conv2d)]
        with torch.no_grad():
            convs[-1].weight.zero_()


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

    def new(self, size: int, producer: Slice | None = None) -> int:
        self.groups.append(Group(size, [producer] if producer else []))
        return len(self.groups) - 1

    def use(self, key: str, dim: int, groups: list[int]) -> None:
        self.layout[(key, dim)] = list(groups)

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
    if isinstance(
        m, PixelShuffleUp
    ):  # out channel c is conv channels 4c..4c+3: a fresh group, sliced by size
        _walk(m.conv, f"{prefix}conv.", layout, plan)
        plan.layout.pop((f"{prefix}conv.weight", 0), None)
        plan.layout.pop((f"{prefix}conv.bias", 0), None)
        return [plan.new(m.conv.out_channels // 4)]
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
                src = src.index_select(dim, _index(groups, keep, plan).to(src.device))
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
        l1 = w.sum(dim=[d for d in range(w.ndim) if d != dim])
        score += l1 / l1.mean().clamp_min(1e-12)  # each producer weighs the same in a shared group
    return score.topk(n).indices.sort().values


def _student_size(
    index: int, group: Group, student: dict[str, torch.Tensor], plan: ChannelPlan
) -> int | None:
    for key, dim in group.producers:
        if key in student and student[key].ndim > dim:
            return int(student[key].shape[dim])
    for (key, dim), groups in plan.layout.items():
        if groups == [index] and key in student and student[key].ndim > dim:
            return int(student[key].shape[dim])
    return None


def _index(groups: list[int], keep: list[torch.Tensor], plan: ChannelPlan) -> torch.Tensor:
    parts, offset = [], 0
    for g in groups:
        parts.append(keep[g] + offset)
        offset += plan.groups[g].size
    return torch.cat(parts)


# ------------------------------------------------------------------------------ arbitrary modules
def _prune_module(
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
