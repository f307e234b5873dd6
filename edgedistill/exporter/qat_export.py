"""INT8 export of a QAT student: the trained scales go into the model instead of fresh calibration.

A run directory with `qat.json` (written by `distiller/qat.py`) holds a student trained with
fake-quantization. Its INT8 export must run what it was trained to run, so:
- ONNX Runtime and TensorRT (backends that take ranges): the QDQ quantizer is handed ranges from
  which it recomputes exactly the trained scale and zero point of each tensor
  (`onnxtools/qdq_trained.trained_ranges`); TensorRT's symmetric activations take the larger side;
- OpenVINO: the same QDQ ONNX is converted with `ov.convert_model`, which turns each Q/DQ pair into a
  FakeQuantize with those scales; OpenVINO's CPU plugin runs the convs between them in int8. NNCF's
  own calibration, which would replace the trained ranges, is not run.
- nothing is kept at higher precision by the target's policy (first/last conv): QAT trained them
  quantized.
A `qat.json` whose `weights_sha256` does not match the student file is stale and ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.backends.base import CompileResult
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.hashing import file_sha256

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgedistill.core.targets import Target
    from edgedistill.onnxtools.qdq import TensorRanges

QAT_FILE = "qat.json"
WEIGHTS = "student.safetensors"


def find_qat(model: str | Path) -> dict[str, Any] | None:
    """The QAT record of `model` (a run directory, or a file in one) when it matches the weights."""
    path = Path(model)
    run_dir = path if path.is_dir() else path.parent
    qat_file = run_dir / QAT_FILE
    if not qat_file.is_file():
        return None
    try:
        info = json.loads(qat_file.read_text())
        scales = {p: (float(v["scale"]), int(v["zero_point"])) for p, v in info["scales"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EdgeDistillError(f"{qat_file} is not a QAT record ({exc}): delete it or re-run QAT") from None
    weights = run_dir / str(info.get("weights_file") or WEIGHTS)
    if path.is_file() and path.name not in (weights.name, "model.json"):
        return None  # another file in the directory (e.g. the pre-QAT weights)
    if not weights.is_file() or info.get("weights_sha256") != file_sha256(weights):
        return None
    return {**info, "scales": scales, "path": str(qat_file)}


def qat_ranges(fp32_onnx: Path, qat: dict[str, Any], work_dir: Path, symmetric: bool = False) -> TensorRanges:
    """Ranges that give the trained scales; `symmetric` (TensorRT): the span each quantizer used."""
    from edgedistill.onnxtools.qdq_trained import trained_ranges

    levels = {p: int(n) for p, n in (qat.get("levels") or {}).items()}
    ranges, _ = trained_ranges(fp32_onnx, qat["scales"], work_dir, levels=levels, symmetric=symmetric)
    ranges.meta["qat_file"] = qat.get("path")
    return ranges


def compile_openvino_qdq(
    fp32_onnx: Path,
    target: Target,
    ranges: TensorRanges,
    out_dir: Path,
    keep_higher: Sequence[str] = (),
) -> CompileResult:
    """OpenVINO INT8 from the trained-scale QDQ ONNX: Q/DQ pairs become FakeQuantize ops."""
    from edgedistill.backends.openvino import _ov, check_device, runtime_precision
    from edgedistill.backends.openvino_convert import convert_onnx, save_ir, static_shapes
    from edgedistill.onnxtools.qdq import quantize_qdq

    ov = _ov()
    core = ov.Core()
    device = check_device(core, target.device)
    hint, notes = runtime_precision(core, device, "int8", target.options)
    out_dir.mkdir(parents=True, exist_ok=True)
    qdq = out_dir / "model.qdq.onnx"
    quantize_qdq(fp32_onnx, qdq, ranges, exclude=list(keep_higher), per_channel=True)
    model = convert_onnx(qdq)
    extra: dict[str, Any] = {"inference_precision": hint, "device": device, "openvino": ov.__version__}
    if not target.dynamic_shape:
        shapes = static_shapes(model, target)
        model.reshape(shapes)
        extra["static_shapes"] = shapes
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
    extra.update(ir_weights="f32", qat={"fake_quantize_ops": fake_quantize, "source": "trained QDQ ONNX"})
    save_ir(model, out_dir, False)
    qdq.unlink()
    notes.append(
        f"INT8 from quantization-aware training: the trained scales as {fake_quantize} FakeQuantize ops "
        "(QDQ ONNX converted by OpenVINO), no NNCF recalibration"
    )
    return CompileResult(["model.xml", "model.bin"], "int8", list(keep_higher), notes=notes, extra=extra)
