"""`edgedistill inspect`: a generator's spec, size and cost at a given input size."""

from __future__ import annotations

from typing import Any

from edgedistill.core.errors import EdgeDistillError
from edgedistill.metrics.complexity import measure_complexity
from edgedistill.models.loading import load_generator


def inspect_model(
    source: str,
    size: tuple[int, int] | None = None,
    kwargs: dict[str, Any] | None = None,
    weights: str | None = None,
) -> dict[str, Any]:
    """Load `source` and count its params and MACs for one sample at `size` (image generators)."""
    loaded = load_generator(source, kwargs=kwargs, weights=weights)
    spec = loaded.spec
    if size is not None and spec.kind != "image":
        raise EdgeDistillError(f"--size applies to image generators; {source} eats {spec.kind}")
    inputs = spec.example_inputs(size=size)
    try:
        cost = measure_complexity(loaded.module, inputs)
    except RuntimeError as exc:
        shape = list(inputs[0].shape)
        raise EdgeDistillError(
            f"{source} cannot run on input {shape} ({str(exc).splitlines()[0]}); try another --size"
        ) from None
    return {
        "source": loaded.source,
        "params": cost.params,
        "macs": cost.macs,
        "input_shapes": cost.input_shapes,
        "spec": spec.to_dict(),
        "layers": [layer.__dict__ for layer in cost.layers],
    }
