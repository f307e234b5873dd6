"""Channel-aligned INT8 convs in a compiled ONNX Runtime artifact (the rewrite: onnxtools/qdq_align.py),
kept only where ORT runs the result and it computes what the model did.

Target option align_int8_channels: "edges" (default; the first and last conv), "widen" (every conv
it can: faster, but the search's carrier-timed blocks do not price it), false (off).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.core.errors import EdgeDistillError

if TYPE_CHECKING:
    from edgedistill.core.targets import Target

ALIGN_MODES = ("edges", "widen", True, False)  # True: "edges"


def align_int8_file(path: Path, target: Target) -> list[str]:
    """Align the int8 QDQ model at `path` for `target` (atomically, in place); the convs changed."""
    if (
        target.arch != "x86_64"
        or target.options.get("qdq_form")
        or target.options.get("symmetric_activations")
    ):
        return []  # u8 activations on x86: the kernel's rules; other forms run other kernels
    mode = target.options.get("align_int8_channels", "edges")
    if mode not in ALIGN_MODES:
        raise EdgeDistillError(
            f"target {target.name}: align_int8_channels must be one of "
            f"{', '.join(map(str, ALIGN_MODES))}, not {mode!r}"
        )
    if mode is False:
        return []
    import onnx

    from edgedistill.core.atomic import write_atomic
    from edgedistill.onnxtools import qdq_align

    model = onnx.load_model(str(path))
    done = qdq_align.align_int8_convs(model, widen=mode == "widen")
    if not done:
        return []
    try:
        onnx.checker.check_model(model, full_check=True)
        if not _same_outputs(path, model):
            return []
    except Exception:  # keep the unaligned model: slower convs, but it runs
        return []
    write_atomic(path, lambda p: onnx.save_model(model, str(p)))
    return [a.text() for a in done]


def _same_outputs(path: Path, aligned: Any) -> bool:
    """Do the model at `path` and `aligned` compute the same on one random input? Their mean
    difference must stay under 0.1 % of the output's range and none over 5 %: the aligned conv runs
    another kernel, which may round a value the other way."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    before = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(aligned.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    for i in before.get_inputs():
        shape = [d if isinstance(d, int) else (1 if k == 0 else 64) for k, d in enumerate(i.shape)]
        feed[i.name] = rng.uniform(-1, 1, shape).astype(np.float16 if "float16" in i.type else np.float32)
    for ref, got in zip(before.run(None, feed), after.run(None, feed), strict=True):
        span = float(np.ptp(ref)) or 1.0
        diff = np.abs(np.asarray(ref, np.float64) - got)
        if ref.shape != got.shape or diff.mean() > 1e-3 * span or diff.max() > 5e-2 * span:
            return False
    return True
