"""The teachers that ship inside the package (trained by scripts/train_teachers.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.models import feature_nets as _feature_nets  # noqa: F401  (registers photo_features)
from edgedistill.models.registry import create
from edgedistill.models.weights import read_safetensors

EMBEDDED_DIR = Path(__file__).parent / "embedded"
# (description, weights) of a teacher's feature net, in order of preference.
FEATURE_NET_FILES = (("features.json", "features.safetensors"), ("classifier.json", "classifier.safetensors"))
# The teacher's own weights: a generator's, or (model.safetensors) a classifier's for data-free distillation.
WEIGHT_FILES = ("generator.safetensors", "model.safetensors")


@dataclass(frozen=True)
class EmbeddedTeacher:
    name: str
    path: Path

    @property
    def spec(self) -> GeneratorSpec:
        return GeneratorSpec.load(self.path / "model.json")

    def generator(self) -> nn.Module:
        spec = self.spec
        net = create(spec.family, **spec.kwargs)
        net.load_state_dict(
            read_safetensors(next(self.path / w for w in WEIGHT_FILES if (self.path / w).exists()))
        )
        return net.eval()

    def discriminator(self) -> nn.Module | None:
        d = self.spec.provenance.get("discriminator")
        if not d:
            return None
        net = create(d["family"], **d["kwargs"])
        net.load_state_dict(read_safetensors(self.path / d["file"]))
        return net

    def feature_net(self) -> nn.Module | None:
        """The in-domain feature net shipped for FID-style scores, when the teacher has one.

        Photos ship `features.json` (a self-supervised photo net), digits `classifier.json` (the
        digit classifier); either names a registered family, its kwargs and a weights file.
        """
        for meta_name, weights_name in FEATURE_NET_FILES:
            meta_path = self.path / meta_name
            if not meta_path.exists():
                continue
            try:
                meta = json.loads(meta_path.read_text())
                family, kwargs = meta["family"], meta.get("kwargs", {})
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise EdgeDistillError(f"{meta_path}: not a feature-net description ({exc})") from None
            weights = self.path / weights_name
            if not weights.exists():
                raise EdgeDistillError(f"{weights}: missing (named by {meta_path.name})")
            net = create(family, **kwargs)
            net.load_state_dict(read_safetensors(weights))
            return net.eval()
        return None


def embedded_teachers() -> dict[str, EmbeddedTeacher]:
    if not EMBEDDED_DIR.is_dir():
        return {}
    return {
        p.name: EmbeddedTeacher(p.name, p)
        for p in sorted(EMBEDDED_DIR.iterdir())
        if (p / "model.json").exists() and any((p / w).exists() for w in WEIGHT_FILES)
    }
