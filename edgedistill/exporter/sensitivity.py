"""Which layers does INT8 hurt? Measured, not guessed: quantize one layer at a time.

For each quantizable layer the model is quantized with ONLY that layer in int8 (reusing the
calibration ranges computed once), run on held-out samples and compared with the fp32 ONNX.
The layers whose lone quantization costs the most PSNR come first: the quality gate keeps them
at higher precision. numpy + onnxruntime only.

ONNX Runtime's QDQ is what ONNX Runtime and TensorRT run, so `rank_layers` measures their harm
faithfully; OpenVINO's NNCF quantizes differently, so its layers are ranked by compiling with NNCF
itself (`rank_by_probes`, the compiling done by the caller).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.quality import max_abs_err, psnr, to_unit
from edgedistill.onnxtools.qdq import TensorRanges, progress_bar, quantize_qdq, quantized_nodes

FOLDED_ACTIVATIONS = ("Relu", "Clip")
# Most layers rank_by_probes compiles: each is a full quantize + compile (NNCF on the tests' tiny
# ResNet: ~6 s on 2 busy cores; longer for real students), on top of the gate's own attempts.
MAX_PROBES = 4


@dataclass
class LayerSensitivity:
    name: str
    op_type: str
    psnr_alone: float  # dB vs fp32 when only this layer is int8 (lower = more harmful)
    max_abs_err: float


def rank_layers(
    fp32_onnx: str | Path,
    ranges: TensorRanges,
    holdout: CalibrationSet,
    *,
    candidates: list[str] | None = None,
    threads: int = 1,
    progress: bool = True,
    output_range: tuple[float, float] | None = None,
    symmetric_activations: bool = False,
) -> list[LayerSensitivity]:
    """Every quantized node (or `candidates`): weighted layers and activation ops alike, most harmful
    first, by PSNR with only that node in int8.

    Outputs are mapped to [0, 1] by `output_range`, else the spec's in the ONNX metadata, else the
    fp32 output's own data range.
    """
    fp32_onnx = Path(fp32_onnx)
    op_types, fused = _graph_info(fp32_onnx)
    folded = {a for acts in fused.values() for a in acts}  # a Relu/Clip goes with its layer
    names = (
        candidates if candidates is not None else [n for n in quantized_nodes(fp32_onnx) if n not in folded]
    )
    unknown = [n for n in names if n not in op_types]
    if unknown:
        raise EdgeDistillError(f"{fp32_onnx.name} has no node(s) {', '.join(unknown[:4])}")
    feeds = list(holdout.samples(1))
    fp32_session = _session(fp32_onnx, threads)
    reference = [fp32_session.run(None, f)[0] for f in feeds]
    if reference[0].ndim == 2:  # a classifier's logits: no fixed range, scored over their own span
        lo, hi = _data_range(reference)
    else:
        lo, hi = output_range or _output_range(fp32_onnx) or _data_range(reference)
    ref01 = [_as_image(to_unit(r, (lo, hi))) for r in reference]
    results = []
    what = "ranking layers (one in int8 at a time)"
    with (
        tempfile.TemporaryDirectory(prefix="edgedistill-sens-") as tmp,
        progress_bar(progress, what, len(names)) as advance,
    ):
        for i, name in enumerate(names):
            path = quantize_qdq(
                fp32_onnx,
                Path(tmp) / f"only{i}.onnx",
                ranges,
                only=[name, *fused.get(name, [])],
                symmetric_activations=symmetric_activations,
            )
            sess = _session(path, threads)
            outs = [sess.run(None, f)[0] for f in feeds]
            alone = float(
                np.mean(
                    [psnr(_as_image(to_unit(o, (lo, hi))), r, 1.0) for o, r in zip(outs, ref01, strict=True)]
                )
            )
            err = max(max_abs_err(o, r) for o, r in zip(outs, reference, strict=True))
            results.append(LayerSensitivity(name, op_types[name], round(alone, 4), err))
            advance(1)
    return sorted(results, key=lambda r: r.psnr_alone)


def rank_by_probes(
    fp32_onnx: str | Path,
    candidates: list[str],
    noise: dict[str, float],
    probe: Callable[[str], float],
    base_psnr: float,
    *,
    probes: int = MAX_PROBES,
    stop_at: float | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Candidates, most harmful first, as measured with the quantizer that will run.

    For a backend whose quantizer this module cannot reproduce (OpenVINO's NNCF: symmetric, its own
    ranges and bias correction), `probe(name)` compiles the real artifact with only `name` kept at
    higher precision and returns its PSNR vs fp32. Compiles are dear, so `noise` (the error each
    layer adds in the plain artifact, one cheap pass) picks which `probes` layers to compile, most
    noisy first; probing stops at the first that alone reaches `stop_at`. Probed layers that lift
    PSNR come first (largest lift first), then the unprobed by noise, then probed ones that did not.
    """
    op_types, _ = _graph_info(Path(fp32_onnx))
    order = sorted(candidates, key=lambda n: -noise[n] if n in noise else float("inf"))
    measured: list[dict[str, Any]] = []
    what = "ranking layers (compiling with one kept at higher precision)"
    with progress_bar(progress, what, min(probes, len(order))) as advance:
        for name in order[:probes]:
            kept = float(probe(name))
            measured.append(
                {
                    **_entry(name, op_types, noise),
                    "psnr_kept": round(kept, 4),
                    "lift_db": round(kept - base_psnr, 4),
                }
            )
            advance(1)
            if stop_at is not None and kept >= stop_at:
                break
    probed = {m["name"] for m in measured}
    lifting = sorted((m for m in measured if m["lift_db"] > 0), key=lambda m: -m["lift_db"])
    rest = [_entry(n, op_types, noise) for n in order if n not in probed]
    return lifting + rest + [m for m in measured if m["lift_db"] <= 0]


def _entry(name: str, op_types: dict[str, str], noise: dict[str, float]) -> dict[str, Any]:
    added = noise.get(name)
    return {
        "name": name,
        "op_type": op_types.get(name, "?"),
        "noise": None if added is None else round(added, 6),
    }


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _graph_info(path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Op type by node name, and the activation each node's output feeds alone (if any).

    Quantized with its layer, a Relu/Clip is folded into the output's quantization range (the
    full model does this); quantizing the layer without it would put the output's Q/DQ before the
    activation, on a range twice as wide, and rank the layer by an artefact of the measurement.
    """
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    fused = {}
    for node in model.graph.node:
        after = consumers.get(node.output[0], []) if node.output else []
        if len(after) == 1 and after[0].op_type in FOLDED_ACTIVATIONS:
            fused[node.name] = [after[0].name]
    return {n.name: n.op_type for n in model.graph.node}, fused


def _output_range(path: Path) -> tuple[float, float] | None:
    from edgedistill.onnxtools.checks import read_spec_dict

    spec = read_spec_dict(path)
    if not spec or not spec.get("output_range"):
        return None
    lo, hi = spec["output_range"]
    return float(lo), float(hi)


def _as_image(a: np.ndarray) -> np.ndarray:
    """Logits (N, classes) as (N, classes, 1, 1), so PSNR measures a classifier's output error too."""
    return a[:, :, None, None] if a.ndim == 2 else a


def _data_range(outputs: list[np.ndarray]) -> tuple[float, float]:
    lo = float(min(o.min() for o in outputs))
    hi = float(max(o.max() for o in outputs))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)
