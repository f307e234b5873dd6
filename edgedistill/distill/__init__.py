"""The distill step: teacher -> student run directory.

`edgedistill.distill(teacher=..., width=...)` calls edgedistill.distill.api.distill.
"""

from edgedistill._callable import make_callable

make_callable(__name__, "edgedistill.distill.api", "distill")
