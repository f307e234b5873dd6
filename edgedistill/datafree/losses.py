"""The losses of data-free distillation, each reading like its equation.

DAFL (Chen et al. 2019): the generator makes inputs the teacher classifies confidently (one-hot CE
on its own argmax), that excite its features (activation term), and whose batch covers the classes
evenly (information entropy of the batch-mean softmax).
DFAD (Fang et al. 2019): the student minimises the L1 distance between logits, the generator
maximises it — it seeks the inputs where student and teacher still disagree.
DeepInversion-style BN matching: a synthetic batch's per-channel statistics at every teacher
BatchNorm should equal the running statistics the teacher saw on real data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kd_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton's KD: KL(softmax(t/T) || softmax(s/T)) · T², so gradients keep their scale across T."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="batchmean") * t * t


def one_hot_ce(teacher_logits: torch.Tensor) -> torch.Tensor:
    """DAFL L_oh: the teacher should be sure of each synthetic sample (CE against its own argmax)."""
    return F.cross_entropy(teacher_logits, teacher_logits.argmax(1))


def activation(features: torch.Tensor) -> torch.Tensor:
    """DAFL L_a: −mean |pre-FC features|; real inputs excite the teacher's features strongly."""
    return -features.abs().mean()


def information_entropy(teacher_logits: torch.Tensor) -> torch.Tensor:
    """DAFL L_ie: Σ p̄ log p̄ of the batch-mean softmax (its negated entropy): minimal when classes are even."""
    p = F.softmax(teacher_logits, 1).mean(0)
    return (p * torch.log(p + 1e-8)).sum()


def logit_l1(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """DFAD's discrepancy: mean absolute difference of logits (the student minimises, the generator maximises)."""
    return (student_logits - teacher_logits).abs().mean()


def agreeing_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Fast-DFKD / CMI's adversarial term: KL(teacher || student) on the samples where both still
    agree on the class; the generator maximises it to find hard, but not mislabelled, inputs."""
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1), reduction="none"
    ).sum(1)
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    return (kl * agree).mean()


class BNStatistics:
    """Forward hooks on every BatchNorm2d of a (frozen, eval-mode) net: `loss()` after a forward is
    Σ_layers ‖μ_batch − μ_running‖₂ + ‖σ²_batch − σ²_running‖₂ over that forward's batch."""

    def __init__(self, net: nn.Module, first: float = 1.0) -> None:
        self.terms: list[torch.Tensor] = []
        self.first = first  # DeepInversion's first-layer multiplier: pixel statistics matter most
        self.enabled = True  # off while the teacher only labels (the student's steps)
        self.handles = [
            m.register_forward_hook(self._hook) for m in net.modules() if isinstance(m, nn.BatchNorm2d)
        ]

    def _hook(self, m: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        if not self.enabled:
            return
        x = inputs[0]
        mean = x.mean((0, 2, 3))
        var = x.var((0, 2, 3), unbiased=False)
        self.terms.append(
            torch.norm(mean - m.running_mean, 2) + torch.norm(var - m.running_var, 2)  # type: ignore[operator]
        )

    def clear(self) -> None:
        self.terms = []

    def loss(self) -> torch.Tensor:
        if not self.terms:
            return torch.zeros(())
        total = self.first * self.terms[0] + sum(self.terms[1:], torch.zeros(()))
        self.clear()
        return total

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class PreHeadFeatures:
    """Captures the input of a net's last Linear layer: the pre-FC features DAFL's activation term
    reads, for any classifier (built-in or user-given) without it exposing them."""

    def __init__(self, net: nn.Module) -> None:
        last = [m for m in net.modules() if isinstance(m, nn.Linear)]
        self.value: torch.Tensor | None = None
        self.handle = last[-1].register_forward_pre_hook(self._hook) if last else None

    def _hook(self, _m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self.value = inputs[0]

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
