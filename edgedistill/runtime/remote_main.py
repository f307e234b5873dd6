"""What runs on the device: `python -m edgedistill.runtime.remote_main request.json`.

It reads the request (options + artifact directories copied beside it), profiles with the same
session code as a local run, and prints one line `@@edgedistill-result {"report": ...}` (or
`{"error": "..."}`) on stdout; progress goes to stderr as JSON lines. Imports numpy and the
artifacts' runtimes only: no torch. Kept parseable by old Pythons so it can say they are too old.
"""

from __future__ import annotations

import json
import sys

RESULT_MARK = "@@edgedistill-result "


def _answer(payload: dict) -> None:
    sys.stdout.write(RESULT_MARK + json.dumps(payload) + "\n")
    sys.stdout.flush()


def main(argv: list | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if sys.version_info < (3, 10):  # noqa: UP036  (the device's Python, not ours)
        version = ".".join(map(str, sys.version_info[:3]))
        _answer(
            {"error": f"Python {version} on the device; edgedistill's runtime needs 3.10+ (--remote-python)"}
        )
        return 3
    try:
        import numpy  # noqa: F401
    except ImportError:
        _answer(
            {"error": f"numpy is not installed for {sys.executable} on the device: pip install numpy there"}
        )
        return 3
    if len(args) != 1:
        _answer({"error": "usage: python -m edgedistill.runtime.remote_main request.json"})
        return 2
    from edgedistill.core.errors import EdgeDistillError

    try:
        report = _run(args[0])
    except EdgeDistillError as exc:
        _answer({"error": str(exc)})
        return 3
    except KeyboardInterrupt:
        _answer({"error": "interrupted on the device"})
        return 130
    except Exception as exc:  # anything else: one line back, the traceback on stderr for --verbose
        import traceback

        traceback.print_exc()
        _answer({"error": f"{type(exc).__name__}: {exc}"})
        return 4
    _answer({"report": report})
    return 0


def _run(request_path: str) -> dict:
    import numpy as np

    from edgedistill.core.artifact import load_artifact
    from edgedistill.core.errors import EdgeDistillError
    from edgedistill.runtime.progress import StderrReporter
    from edgedistill.runtime.session import ProfileOptions, run_profile
    from edgedistill.runtime.sources import artifact_source

    with open(request_path) as f:
        request = json.load(f)
    opts = ProfileOptions.from_dict(request["options"])
    sources = []
    for m in request["models"]:
        src = artifact_source(load_artifact(m["dir"]), m["given"], m["label"])
        why = src.unavailable()
        if why is not None:
            raise EdgeDistillError(f"{m['label']}: {src.backend} cannot run on the device: {why}")
        sources.append(src)
    inputs = None
    if request.get("inputs"):
        with np.load(request["inputs"]) as z:
            inputs = {k: z[k] for k in z.files}
    report = run_profile(sources, opts, StderrReporter(), inputs)
    return report.to_dict()


if __name__ == "__main__":
    sys.exit(main())
