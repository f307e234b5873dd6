"""Generator families, discriminators, the embedded teachers and safe loading."""

from edgedistill.models import classifier, dcgan, feature_nets, patchgan, resnet, unet  # noqa: F401  (registers)
from edgedistill.models.registry import create, family_class, list_families, register
from edgedistill.models.spec import GeneratorSpec, TensorSpec, spec_for_family

__all__ = [
    "GeneratorSpec",
    "TensorSpec",
    "create",
    "family_class",
    "list_families",
    "register",
    "spec_for_family",
]
