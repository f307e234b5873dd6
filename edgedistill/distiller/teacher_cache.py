"""Teacher outputs computed ahead: training then costs mostly the student and D.

Measured: a full KD step with the big photo teacher took ~1.3 s at batch 4, 128 px; with cached
teacher outputs and a small D ~0.3 s. A fixed pool trades input variety for that speed, and a
student that sees the same few hundred crops for thousands of steps fits them rather than the
task; so the pool is refreshed as it is used: each step replaces `refresh` of its entries with
new inputs and the teacher's outputs on them (a fraction of a full teacher step's cost).
"""

from __future__ import annotations

import torch
from rich.progress import Progress
from torch import nn

from edgedistill.data.sources import Batch, DataSource, step_generator
from edgedistill.distiller.features import FeatureTap

REFRESH_OFFSET = 1 << 40  # refresh draws use steps far from training's and the initial pool's


class TeacherCache:
    """A pool of inputs with the teacher's outputs and tapped features, kept on the CPU (features
    in fp16 where they fit it, else fp32), refreshed `refresh` entries per step."""

    def __init__(
        self,
        teacher: nn.Module,
        source: DataSource,
        size: int,
        layers: list[str],
        seed: int,
        refresh: int = 0,
    ) -> None:
        self.teacher, self.source, self.layers, self.seed, self.refresh_count = (
            teacher,
            source,
            layers,
            seed,
            refresh,
        )
        self.device = next((p.device for p in teacher.parameters()), torch.device("cpu"))
        inputs, labels, outputs, reals, feats = [], [], [], [], []
        chunk = 16
        with Progress(transient=True) as progress:
            task = progress.add_task("caching teacher outputs", total=size)
            for i in range(0, size, chunk):
                # negative steps: never used in training
                b, y, f = self._run(source.batch(-1 - i // chunk, min(chunk, size - i)))
                inputs.append(b.inputs)
                if b.labels is not None:
                    labels.append(b.labels)
                outputs.append(y)
                if b.real is not None:
                    reals.append(b.real)
                feats.append(f)
                progress.advance(task, b.inputs.shape[0])
        self.inputs, self.outputs = torch.cat(inputs), torch.cat(outputs)
        self.labels = torch.cat(labels) if labels else None  # a label-conditioned teacher's classes
        self.real = torch.cat(reals) if reals else None
        self.features = [torch.cat([f[j] for f in feats]) for j in range(len(layers))]

    @torch.no_grad()
    def _run(self, b: Batch) -> tuple[Batch, torch.Tensor, list[torch.Tensor]]:
        with FeatureTap(self.teacher, self.layers) as tap:
            y = self.teacher(*b.to(self.device).args).cpu()
            return b, y, [_compact(f.cpu()) for f in tap.features]

    def batch(self, step: int, size: int) -> tuple[Batch, torch.Tensor, list[torch.Tensor]]:
        if self.refresh_count:
            self.refresh(step)
        idx = torch.randint(len(self.inputs), (size,), generator=step_generator(self.seed, step, 7))
        real = self.real[idx] if self.real is not None else None
        labels = self.labels[idx] if self.labels is not None else None
        return (
            Batch(self.inputs[idx], real, labels),
            self.outputs[idx],
            [f[idx].float() for f in self.features],
        )

    def refresh(self, step: int) -> None:
        """Replace `refresh_count` entries, chosen by the step's seed, with fresh inputs and outputs.

        A function of the step alone, so a resumed run's pool matches the pool an uninterrupted run
        would hold only if it was rebuilt to that step: it is not (resume keeps going with a fresh
        pool); that changes which crops are seen, never the recipe.
        """
        n = min(self.refresh_count, len(self.inputs))
        gen = step_generator(self.seed, step, 11)
        slots = torch.randperm(len(self.inputs), generator=gen)[:n]
        b, y, feats = self._run(self.source.batch(-REFRESH_OFFSET - step, n))
        self.inputs[slots] = b.inputs
        self.outputs[slots] = y
        if self.labels is not None and b.labels is not None:
            self.labels[slots] = b.labels
        if self.real is not None and b.real is not None and b.real.shape[1:] == self.real.shape[1:]:
            self.real[slots] = b.real
        for j, f in enumerate(feats):
            if f.dtype != self.features[j].dtype:  # fresh values beyond fp16's range: the layer goes fp32
                self.features[j] = self.features[j].float()
            self.features[j][slots] = f.to(self.features[j].dtype)


def _compact(feature: torch.Tensor) -> torch.Tensor:
    """fp16 halves the cache, but turns values beyond its range (a teacher without norms) into inf:
    such a chunk stays fp32, and torch.cat then keeps its whole layer in fp32."""
    return feature.half() if feature.abs().max() <= torch.finfo(torch.float16).max else feature
