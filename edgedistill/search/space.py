"""The search space of the built-in families: per-stage widths and operator choices, sampled and mutated.

An architecture is a plain dict of the family's constructor kwargs (`distiller.student.ARCH_KEYS`),
the same dict the student's spec records, so a found student loads without code. Widths are
fractions of the teacher's stage widths rounded to multiples of 8 (int8 kernels pack channels by
8 or 16; odd widths waste lanes), never above the teacher's.
"""

from __future__ import annotations

import copy
import inspect
import json
import random
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.models.ops import UPSAMPLES
from edgedistill.models.registry import create, family_class

FRACTIONS = (0.125, 0.1875, 0.25, 0.3125, 0.375, 0.5)  # of each teacher stage's width
ROUND = 8


@dataclass
class SearchSpace:
    """The choices per arch key, for one teacher."""

    family: str
    teacher_kwargs: dict[str, Any]
    teacher_widths: list[int]
    choices: dict[str, list[Any]] = field(default_factory=dict)
    fractions: tuple[float, ...] = FRACTIONS
    reference: dict[str, Any] = field(default_factory=dict)  # the teacher's value of each choice key

    def width_choices(self, stage: int) -> list[int]:
        full = self.teacher_widths[stage]
        return sorted({min(full, max(ROUND, round(full * f / ROUND) * ROUND)) for f in self.fractions})


def space_for(spec: GeneratorSpec, fractions: tuple[float, ...] = FRACTIONS) -> SearchSpace:
    """The space around a built-in teacher: its stage widths scaled, its ops or their int8-friendly swaps."""
    family = spec.family
    if family not in ("resnet", "unet", "dcgan"):
        raise EdgeDistillError(
            f"search needs a built-in family teacher (resnet, unet, dcgan), got {family or 'a custom module'}; "
            "use distill --width for other modules"
        )
    kwargs = dict(spec.kwargs)
    teacher = create(family, **kwargs)  # cheap: no forward, only to read its stage widths
    choices: dict[str, list[Any]] = {"upsample": list(UPSAMPLES)}
    if family in ("resnet", "unet"):
        norm = kwargs.get("norm", "instance" if family == "resnet" else "batch")
        choices["norm"] = sorted({norm, "batch"})
        choices["block"] = ["plain", "dwsep"]
    if family == "resnet":
        n = int(kwargs.get("n_blocks", 9))
        choices["n_blocks"] = list(range(max(1, n // 3), n + 1))
        choices["kernel"] = [7, 3]
    defaults = {k: p.default for k, p in inspect.signature(family_class(family).__init__).parameters.items()}
    reference = {k: kwargs.get(k, defaults.get(k)) for k in choices}
    return SearchSpace(family, kwargs, list(teacher.widths), choices, fractions, reference)


def restrict(space: SearchSpace, allow: dict[str, list[Any]] | None) -> SearchSpace:
    """The space with some choices limited to the options the user allows (`--allow block=plain`): a
    texture or an operator the user has seen fail on their device stays out of every candidate, the
    uniform baseline's included (it takes the first option listed where the teacher's is left out).
    Options match by their printed form, so CLI strings select ints."""
    if not allow:
        return space
    choices = dict(space.choices)
    for key, wanted in allow.items():
        if key not in choices:
            raise EdgeDistillError(
                f"--allow {key}: the {space.family} search space has no such choice; "
                f"its choices: {', '.join(choices)}"
            )
        by_text = {str(o): o for o in choices[key]}
        unknown = [str(w) for w in wanted if str(w) not in by_text]
        if unknown or not wanted:
            raise EdgeDistillError(
                f"--allow {key}={','.join(map(str, wanted))}: {', '.join(unknown) or 'no option'} is not one of "
                f"{key}'s options on {space.family} ({', '.join(by_text)})"
            )
        # in the user's order: the first is the one preferred
        choices[key] = [by_text[w] for w in dict.fromkeys(map(str, wanted))]
    return replace(space, choices=choices)


def parse_allow(items: list[str] | None) -> dict[str, list[str]]:
    """`["block=plain", "upsample=pixelshuffle,nearest"]` as {key: [options]} (repeats merge)."""
    allow: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise EdgeDistillError(f"--allow {item!r}: expected KEY=OPTION[,OPTION...], e.g. block=plain")
        allow.setdefault(key.strip(), []).extend(v.strip() for v in values.split(",") if v.strip())
    return allow


def allow_text(allow: dict[str, list[Any]]) -> str:
    """{"block": ["plain"], "n_blocks": [2, 3]} as `block=plain n_blocks=2,3`: as --allow takes it."""
    return " ".join(f"{k}={','.join(map(str, v))}" for k, v in allow.items())


def canonical(space: SearchSpace, arch: dict[str, Any]) -> dict[str, Any]:
    """The architecture without the choices that equal the teacher's: one model, one key (a mutated
    uniform student that redraws `kernel=7` is still the uniform student)."""
    return {k: v for k, v in arch.items() if k == "widths" or space.reference.get(k, object()) != v}


def sample(space: SearchSpace, rng: random.Random) -> dict[str, Any]:
    arch: dict[str, Any] = {
        "widths": [rng.choice(space.width_choices(i)) for i in range(len(space.teacher_widths))]
    }
    for key, options in space.choices.items():
        arch[key] = rng.choice(options)
    return canonical(space, arch)


def mutate(space: SearchSpace, arch: dict[str, Any], rng: random.Random, p: float = 0.3) -> dict[str, Any]:
    """Each choice redrawn with probability `p` (a width moves to a neighbouring choice)."""
    out = copy.deepcopy(arch)
    for i, w in enumerate(out["widths"]):
        if rng.random() < p:
            out["widths"][i] = _step(space.width_choices(i), w, rng.choice((-1, 1)))
    for key, options in space.choices.items():
        if rng.random() < p:
            out[key] = rng.choice(options)
    return canonical(space, out)


def rescale(space: SearchSpace, arch: dict[str, Any], notches: int) -> dict[str, Any]:
    """Every stage `notches` width choices wider (or narrower), the ops kept: a student whose ops score
    well but that sits far under the budget reaches it in one move, where `mutate`'s single-stage
    steps would need several (rounds the search does not have)."""
    out = copy.deepcopy(arch)
    out["widths"] = [_step(space.width_choices(i), w, notches) for i, w in enumerate(out["widths"])]
    return canonical(space, out)


def _step(options: list[int], width: int, notches: int) -> int:
    """The choice `notches` places from the one nearest `width`, kept within the choices."""
    j = min(range(len(options)), key=lambda k: abs(options[k] - width))
    return options[max(0, min(len(options) - 1, j + notches))]


def uniform_arch(space: SearchSpace, width: float) -> dict[str, Any]:
    """The `--width` student written as an architecture (the teacher's ops, ngf scaled); where the
    space no longer allows a teacher's op (`restrict`), the first option it allows instead."""
    ngf = max(1, round(int(space.teacher_kwargs.get("ngf", 64)) * width))
    widths = create(space.family, **{**space.teacher_kwargs, "ngf": ngf}).widths
    swapped = {k: opts[0] for k, opts in space.choices.items() if space.reference.get(k) not in opts}
    return {"widths": list(widths), **swapped}


def arch_key(arch: dict[str, Any]) -> str:
    return json.dumps(arch, sort_keys=True)


def describe(arch: dict[str, Any]) -> str:
    """One short line: widths and the ops that differ from the reference."""
    parts = ["w=" + "-".join(map(str, arch.get("widths", [])))]
    parts += [f"{k}={v}" for k, v in sorted(arch.items()) if k != "widths"]
    return " ".join(parts)


def build(spec: GeneratorSpec, arch: dict[str, Any], device: str = "cpu") -> torch.nn.Module:
    """The candidate with fresh weights (on "meta" it allocates nothing: for counting MACs)."""
    with torch.device(device):
        return create(str(spec.family), **{**spec.kwargs, **arch})


def macs_of(spec: GeneratorSpec, arch: dict[str, Any], size: tuple[int, int] | None = None) -> int:
    """MACs of one forward at `size` (default the spec's), counted on the meta device: no memory, ~ms."""
    from edgedistill.metrics.complexity import measure_complexity

    net = build(spec, arch, "meta").eval()
    hw = size or tuple(spec.default_size or (256, 256))
    with torch.device("meta"):
        inputs = spec.example_inputs(size=hw if spec.kind == "image" else None)
        inputs = tuple(x.to("meta") for x in inputs)
    return measure_complexity(net, inputs).macs
