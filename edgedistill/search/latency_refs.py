"""The reference models the whole-model fit (search/latency_fit.py) is made on, per teacher.

The fit turns a candidate's measured blocks into its whole-model time; it is made on references
measured whole and by blocks, never on the candidates, so they must look like the candidates: the
same kind, size and norm, widths that span the search space's, its block types and upsampling ops.
"""

from __future__ import annotations

from typing import Any

from edgedistill.core.spec import GeneratorSpec

# the image kind's references (family, kwargs of each), in the teacher's norm (reference_norm)
_R = "resnet"
REFERENCES = {
    "image": (
        _R,
        (
            {"ngf": 8, "n_blocks": 2},
            {"ngf": 16, "n_blocks": 4},
            {"ngf": 24, "n_blocks": 6},
            {
                "widths": [8, 16, 32, 16, 8],
                "n_blocks": 3,
                "upsample": "nearest",
                "kernel": 3,
                "block": "dwsep",
            },
            {"widths": [12, 24, 48, 24, 12], "n_blocks": 2, "upsample": "bilinear", "kernel": 7},
            {
                "widths": [16, 32, 32, 32, 16],
                "n_blocks": 5,
                "upsample": "pixelshuffle",
                "kernel": 3,
                "block": "dwsep",
            },
            {"widths": [8, 12, 24, 12, 8], "n_blocks": 6, "upsample": "convtranspose", "block": "dwsep"},
            {"widths": [24, 48, 48, 24, 24], "n_blocks": 1, "upsample": "pixelshuffle", "kernel": 7},
        ),
    ),
}
# the noise kind's references: DCGANs of the teacher's shape (latent, channels, image side) at these
# fractions of its ngf, plus two with the other upsampling ops. Fitted once on DCGANs of a fixed shape
# (nz 100, 3 channels, 64 px, ngf 16-48), three references and so no block scale, the table priced
# the digits teacher's 32 px students (0.08-0.4 ms) at 1.5-3x what they measured (their own blocks
# summed to 2x the whole model): the fit must be made at the size of what it predicts
NOISE_NGF_FRACTIONS = (0.06, 0.1, 0.16, 0.25, 0.4, 0.6)
NOISE_OTHER_UPSAMPLES = ("nearest", "pixelshuffle")
NOISE_OTHER_FRACTION = 0.25  # of the ngf, for those two: a mid-width candidate's


def references(spec: GeneratorSpec) -> tuple[str, list[dict[str, Any]], str | None]:
    """The reference models a teacher's candidates are fitted on: their family, each one's kwargs,
    and the tag the fit is kept under. Image kind: REFERENCES["image"] in the teacher's norm
    (reference_norm), tagged by it. Noise kind: DCGANs of the teacher's latent size, channels and
    image side, from a few channels to past its widest candidates (NOISE_NGF_FRACTIONS), tagged by
    that shape: a fit carries only to models of its own scale."""
    if spec.kind != "noise":
        family, variants = REFERENCES["image"]
        norm = reference_norm(spec)
        return family, [{**kw, "norm": norm} if norm else dict(kw) for kw in variants], norm
    nz, nc = int(spec.inputs[0].shape[1]), int(spec.outputs[0].shape[1])
    side = int(spec.outputs[0].shape[-1])
    side = side if side in (32, 64) else 64  # the DCGAN sides; another side's fit is the nearest one's
    ngf = int(spec.kwargs.get("ngf", 64)) if spec.family == "dcgan" else 64
    base = {"nz": nz, "nc": nc, "image_size": side}
    ngfs = sorted({max(2, round(ngf * f)) for f in NOISE_NGF_FRACTIONS})
    mid = max(2, round(ngf * NOISE_OTHER_FRACTION))
    variants = [{**base, "ngf": n} for n in ngfs]
    variants += [{**base, "ngf": mid, "upsample": up} for up in NOISE_OTHER_UPSAMPLES]
    return "dcgan", variants, f"z{nz}-c{nc}-{side}px"


def reference_norm(spec: GeneratorSpec) -> str | None:
    """The norm the references take: the teacher's. A BatchNorm folds into its conv, an InstanceNorm
    runs as kernels of its own, and the two cost differently inside a whole model and cut into
    blocks: fitted on InstanceNorm references, the model over-predicted a BatchNorm teacher's
    candidates by 6-8 % on OpenVINO int8, on BatchNorm references by 0-2 % (benchmarks/latency_model.py
    --space photo-restore). None for the noise kind (its references: `references`)."""
    import inspect

    from edgedistill.models.registry import family_class

    if spec.kind != "image" or spec.family not in ("resnet", "unet"):
        return None
    default = inspect.signature(family_class(spec.family).__init__).parameters["norm"].default
    return str(spec.kwargs.get("norm") or default)
