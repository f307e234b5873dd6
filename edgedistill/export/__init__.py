"""The export step: torch -> ONNX -> calibrated, compiled, quality-gated artifact.

`edgedistill.export(model, target, out, ...)` calls edgedistill.export.api.export.
"""

from edgedistill._callable import make_callable

make_callable(__name__, "edgedistill.export.api", "export")
