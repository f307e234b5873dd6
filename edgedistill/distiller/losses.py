"""Distillation and adversarial losses: one small function (or module) per idea.

    pixel_kd          the student's image matches the teacher's (GAN Compression, OMGD)
    colour_kd         ... and so do its local means: the term that sees a colour cast
    FeatureKD         intermediate features match: learnable 1x1 adapters (GAN Compression) or
                      adapter-free kernel alignment (CAT)
    d_loss / g_loss   the adversarial game on the discriminator's raw outputs
    d_feature_match   the D's intermediate features of the student's output match those of the
                      teacher's (pix2pixHD's feature matching, with the teacher's output as "real")

The teacher's tensors are always targets: they are detached here, so a caller that forgets
`torch.no_grad()` around the teacher still never trains it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgedistill.core.errors import EdgeDistillError

LOSS_KINDS = ("hinge", "lsgan", "nonsat")
PIXEL_KINDS = ("l1", "l2")
FEATURE_MODES = ("adapter", "kernel_alignment")


def _check_kind(kind: str, valid: tuple[str, ...], what: str) -> None:
    if kind not in valid:
        raise EdgeDistillError(f"unknown {what} '{kind}': choose one of {', '.join(valid)}")


def pixel_kd(student: Tensor, teacher: Tensor, kind: str = "l1") -> Tensor:
    """Mean L1 (default, as in GAN Compression and OMGD: sharper than L2) or L2 to the teacher."""
    _check_kind(kind, PIXEL_KINDS, "pixel KD kind")
    if student.shape != teacher.shape:
        raise EdgeDistillError(
            f"pixel KD: student output {tuple(student.shape)} and teacher output "
            f"{tuple(teacher.shape)} differ in shape"
        )
    target = teacher.detach()
    return F.l1_loss(student, target) if kind == "l1" else F.mse_loss(student, target)


COLOUR_POOL = 8


def colour_kd(student: Tensor, teacher: Tensor, pool: int = COLOUR_POOL) -> Tensor:
    """L1 between the student's and the teacher's outputs averaged over `pool` x `pool` cells.

    Why a term of its own: a pixel L1's gradient is the sign of each pixel's error, so a shift of a
    channel by 2 % under per-pixel errors of 10 % barely moves it, and students keep the cast
    (measured on the demo: pink skin, a purple sky at 27 dB). Averaging first removes the texture
    error and leaves the shift, which this L1 then sees in full.
    """
    if student.shape != teacher.shape:
        raise EdgeDistillError(
            f"colour KD: student output {tuple(student.shape)} and teacher output {tuple(teacher.shape)} differ"
        )
    k = max(1, min(pool, *student.shape[-2:]))
    return F.l1_loss(F.avg_pool2d(student, k), F.avg_pool2d(teacher.detach(), k))


def kernel_alignment(a: Tensor, b: Tensor) -> Tensor:
    """Similarity of how two feature maps arrange the samples of one batch (CAT, Jin et al. 2021).

    Each sample is flattened to a vector and the batch's Gram matrices K = X X^T (N x N) are
    compared: <K_a, K_b>_F / (||K_a||_F ||K_b||_F). It lies in [0, 1] (<K_a, K_b>_F = ||A^T B||_F^2
    is never negative), is 1 for a feature map with itself or a scaled copy, and needs no adapter
    because channel counts never meet. With batch size 1 it is always 1: it then says nothing.
    Symmetric, so nothing is detached here; FeatureKD detaches the teacher's side.
    """
    if a.shape[0] != b.shape[0]:
        raise EdgeDistillError(f"kernel alignment needs the same batch: got {a.shape[0]} and {b.shape[0]}")
    ka, kb = _unit_gram(a), _unit_gram(b)
    return (ka * kb).sum() / (ka.norm() * kb.norm()).clamp_min(1e-12)


def _unit_gram(x: Tensor) -> Tensor:
    """N x N Gram of the flattened samples, in float32, of a copy scaled to unit norm.

    The alignment does not change under scaling; the scaling keeps large activations (and
    half-precision autocast) from overflowing the squared terms.
    """
    flat = x.reshape(x.shape[0], -1).float()
    flat = flat / flat.norm().clamp_min(1e-12)
    return flat @ flat.T


class FeatureKD(nn.Module):
    """Feature distillation over several layer pairs; the loss is the mean over layers.

    mode "adapter" (GAN Compression, Li et al. 2020): a learnable 1x1 conv per layer lifts the
    student's channels to the teacher's and the loss is the MSE to the teacher's features. The
    adapters live in this module: give its parameters to the student's optimizer.
    mode "kernel_alignment" (CAT, Jin et al. 2021): loss 1 - kernel_alignment(student, teacher);
    no parameters, any channel counts, but it compares samples, so it needs batch size >= 2.
    """

    def __init__(
        self, student_channels: list[int], teacher_channels: list[int], mode: str = "adapter"
    ) -> None:
        super().__init__()
        _check_kind(mode, FEATURE_MODES, "feature KD mode")
        if len(student_channels) != len(teacher_channels):
            raise EdgeDistillError(
                f"feature KD: {len(student_channels)} student layers but {len(teacher_channels)} teacher layers"
            )
        self.mode = mode
        self.student_channels = list(student_channels)
        self.teacher_channels = list(teacher_channels)
        adapters = [nn.Conv2d(s, t, 1) for s, t in zip(student_channels, teacher_channels, strict=True)]
        self.adapters = nn.ModuleList(adapters if mode == "adapter" else [])

    def forward(self, student_feats: list[Tensor], teacher_feats: list[Tensor]) -> Tensor:
        n = len(self.student_channels)
        if len(student_feats) != n or len(teacher_feats) != n:
            raise EdgeDistillError(
                f"feature KD was built for {n} layers, got {len(student_feats)} student and "
                f"{len(teacher_feats)} teacher feature maps"
            )
        if n == 0:
            raise EdgeDistillError("feature KD has no layers to match")
        terms = [
            self._layer_loss(i, s, t.detach())
            for i, (s, t) in enumerate(zip(student_feats, teacher_feats, strict=True))
        ]
        return torch.stack(terms).mean()

    def _layer_loss(self, i: int, s: Tensor, t: Tensor) -> Tensor:
        if self.mode == "kernel_alignment":
            if s.shape[0] < 2:
                raise EdgeDistillError(
                    "kernel-alignment feature KD compares the samples of a batch, so it needs batch "
                    "size >= 2 (got 1); use a larger batch or mode 'adapter'"
                )
            return 1 - kernel_alignment(s, t)
        expected_s, expected_t = self.student_channels[i], self.teacher_channels[i]
        if s.ndim != 4 or t.ndim != 4 or s.shape[1] != expected_s or t.shape[1] != expected_t:
            raise EdgeDistillError(
                f"feature KD layer {i}: expected (N, {expected_s}, H, W) student and (N, {expected_t}, H, W) "
                f"teacher features, got {tuple(s.shape)} and {tuple(t.shape)}"
            )
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise EdgeDistillError(
                f"feature KD layer {i}: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ "
                "in batch or spatial size"
            )
        return F.mse_loss(self.adapters[i](s), t)


def d_loss(real: Tensor, fake: Tensor, kind: str = "lsgan") -> Tensor:
    """Discriminator loss on raw outputs (logits) for real and generated samples: real + fake term.

    hinge (SNGAN/BigGAN): relu(1 - real) + relu(1 + fake); lsgan (Mao et al. 2017, pix2pix and
    CycleGAN): (real - 1)^2 + fake^2; nonsat (Goodfellow et al. 2014): BCE with logits, real=1,
    fake=0. Each term is a mean over all elements, so patch discriminators need no reshaping.
    Pass D(fake.detach()) here; the output itself must keep its graph to train D.
    """
    _check_kind(kind, LOSS_KINDS, "adversarial loss kind")
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "lsgan":
        return F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake))
    return F.binary_cross_entropy_with_logits(
        real, torch.ones_like(real)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def g_loss(fake: Tensor, kind: str = "lsgan") -> Tensor:
    """The generator's side of the same game, on D's raw outputs for generated samples.

    hinge: -fake; lsgan: (fake - 1)^2; nonsat: BCE with logits against 1 (the non-saturating
    form, -log sigmoid(fake)). Means over all elements.
    """
    _check_kind(kind, LOSS_KINDS, "adversarial loss kind")
    if kind == "hinge":
        return -fake.mean()
    if kind == "lsgan":
        return F.mse_loss(fake, torch.ones_like(fake))
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def d_feature_layers(disc: nn.Module) -> list[str]:
    """Names of D's activations (every LeakyReLU/ReLU): the levels its judgement is built from."""
    return [name for name, m in disc.named_modules() if isinstance(m, nn.LeakyReLU | nn.ReLU)]


def d_feature_match(student_feats: list[Tensor], teacher_feats: list[Tensor]) -> Tensor:
    """Mean over D's layers of the L1 between its features on the student's and the teacher's output.

    A perceptual term in the domain's own feature space: D has learnt which textures tell a
    restored photo from a blurred one, where a pixel loss rewards the blur of an average. The
    held-out feature distance uses another net (the embedded feature net), so this term does not
    train on the metric it is judged by.
    """
    if not student_feats or len(student_feats) != len(teacher_feats):
        raise EdgeDistillError(
            f"D feature matching: {len(student_feats)} student and {len(teacher_feats)} teacher feature maps"
        )
    return torch.stack(
        [F.l1_loss(s, t.detach()) for s, t in zip(student_feats, teacher_feats, strict=True)]
    ).mean()
