"""The student classifier: the teacher's family at a fraction of its width.

LeNet students inherit the teacher's strongest channels (L1 norm of the producing filters), layer
by layer, so a slimmed student starts from what the teacher learnt; other families start fresh
(as in DAFL/DFAD, whose students train from scratch).
"""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import CLASSIFIER_FAMILIES, GeneratorSpec, spec_for_family
from edgedistill.models.classifiers import LeNet
from edgedistill.models.registry import create

DEFAULT_FRACTION = {"lenet": 0.4, "resnet_classifier": 0.5}  # ≥ 4x fewer MACs than the teacher


def make_student(
    teacher: nn.Module, spec: GeneratorSpec, fraction: float | None = None, inherit: bool = False
) -> tuple[nn.Module, GeneratorSpec]:
    """A slimmed copy of a built-in classifier family, and its spec (kwargs rebuild it)."""
    if spec.family not in CLASSIFIER_FAMILIES:
        raise EdgeDistillError(
            f"the teacher's family is '{spec.family}': a slimmed student needs a built-in classifier family "
            f"({', '.join(CLASSIFIER_FAMILIES)}); give its model.json 'family' and 'kwargs'"
        )
    fraction = fraction if fraction is not None else DEFAULT_FRACTION[spec.family]
    if not 0 < fraction <= 1:
        raise EdgeDistillError(f"--width must be in (0, 1], not {fraction}")
    kwargs = dict(spec.kwargs)
    kwargs["width"] = round(float(kwargs.get("width", 1.0)) * fraction, 4)
    student = create(spec.family, **kwargs)
    if inherit and isinstance(student, LeNet) and isinstance(teacher, LeNet):
        _inherit_lenet(student, teacher)
    s_spec = spec_for_family(spec.family, kwargs)
    s_spec.input_range, s_spec.output_range = spec.input_range, spec.output_range
    return student, s_spec


@torch.no_grad()
def _inherit_lenet(student: LeNet, teacher: LeNet) -> None:
    """Copy the teacher's strongest channels into each layer of the narrower LeNet."""
    t_layers = [teacher.body[0], teacher.body[4], teacher.fc[0], teacher.fc[2], teacher.head]
    s_layers = [student.body[0], student.body[4], student.fc[0], student.fc[2], student.head]
    t_bns, s_bns = [teacher.body[1], teacher.body[5]], [student.body[1], student.body[5]]
    keep_in = torch.arange(t_layers[0].weight.shape[1])
    for i, (t, s) in enumerate(zip(t_layers, s_layers, strict=True)):
        w = t.weight
        if i == 2:  # flattened conv output: each kept channel brings its whole spatial block
            side = w.shape[1] // t_layers[1].weight.shape[0]
            keep_in = (keep_in[:, None] * side + torch.arange(side)[None]).reshape(-1)
        out_n = s.weight.shape[0]
        keep_out = (
            torch.arange(out_n)
            if i == len(t_layers) - 1
            else w.abs().flatten(1).sum(1).argsort(descending=True)[:out_n].sort().values
        )
        s.weight.copy_(w[keep_out][:, keep_in])
        s.bias.copy_(t.bias[keep_out])
        if i < 2:
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(s_bns[i], name).copy_(getattr(t_bns[i], name)[keep_out])
        keep_in = keep_out
