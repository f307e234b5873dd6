"""The profile step: teacher, students and artifacts timed side by side, here or over SSH.

`edgedistill.profile(models, ...)` calls edgedistill.profile.api.profile. This package is the
runtime part too (timing, stats, remote_main): it imports no torch unless a torch model is given.
"""

from edgedistill._callable import make_callable

make_callable(__name__, "edgedistill.profile.api", "profile")
