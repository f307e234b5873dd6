"""Compile-time model work for the OpenVINO backend: ONNX -> OpenVINO model -> (NNCF INT8) -> IR files.

Kept apart from openvino.py (the backend and its runner) because only compiling needs onnx and nncf;
a device that just runs an IR imports openvino alone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.backends.openvino import _first_line, _fits, _ov
from edgedistill.core.errors import EdgeDistillError

if TYPE_CHECKING:
    from edgedistill.core.calibset import CalibrationSet
    from edgedistill.core.targets import Target

METHODS = ("minmax", "percentile", "entropy")  # calib.method values mapped to NNCF range estimators


def convert_onnx(onnx_path: Path) -> Any:
    """ov.convert_model, with an op OpenVINO cannot convert named (and its node) in one line."""
    ov = _ov()
    root = logging.getLogger()
    level = root.level  # convert_model sets the root logger to ERROR and leaves it so when it fails
    try:
        return ov.convert_model(str(onnx_path))
    except Exception as exc:  # OpConversionFailure, GeneralFailure: not exported as one base class
        text = str(exc)
        ops = re.findall(r"(?:No conversion rule found|Failed conversion) for operations?: ([^\n]+)", text)
        if ops:
            op = ops[0].split(",")[0].strip()
            node = _node_of_op(onnx_path, op)
            where = f" (node '{node}')" if node else ""
            raise EdgeDistillError(
                f"OpenVINO cannot convert op {op}{where} in {onnx_path.name}: "
                "replace it in the model, or export for ONNX Runtime"
            ) from None
        raise EdgeDistillError(f"OpenVINO cannot read {onnx_path}: {_first_line(exc)}") from None
    finally:
        root.setLevel(level)


def _node_of_op(onnx_path: Path, op: str) -> str | None:
    """The first ONNX node running `op` (OpenVINO names it as domain.OpType, e.g. com.example.Foo)."""
    from edgedistill.onnxtools.checks import node_for_op

    try:
        names = node_for_op(onnx_path, op.rsplit(".", 1)[-1])
    except EdgeDistillError:
        return None
    return names[0] if names else None


def static_shapes(model: Any, target: Target) -> dict[str, list[int]]:
    """Batch 1 everywhere; free H, W of 4-D inputs from target.input_size; fixed dims (noise) kept."""
    shapes = {}
    for port in model.inputs:
        name = port.get_any_name()
        dims = list(port.get_partial_shape())
        fixed: list[int] = []
        for i, d in enumerate(dims):
            if d.is_static:
                fixed.append(d.get_length())
            elif i == 0:
                fixed.append(1)
            elif len(dims) == 4 and i in (2, 3) and target.input_size:
                fixed.append(int(target.input_size[i - 2]))
            else:
                raise EdgeDistillError(
                    f"target {target.name} needs static shapes but input '{name}' dim {i} is free and "
                    "the target gives no input_size: add input_size to the target profile"
                )
        shapes[name] = fixed
    return shapes


def openvino_names(model: Any, onnx_path: Path, onnx_nodes: Sequence[str]) -> dict[str, list[str]]:
    """OpenVINO op names that make up each named ONNX node.

    Measured on OpenVINO 2026.4: an ONNX Conv 'X' becomes Convolution 'X/WithoutBiases' + Add 'X';
    other nodes keep their name or get a generic one (ConvTranspose -> 'ConvolutionBackpropData_N',
    InstanceNormalization -> 'MVN_N'), but the op making a node's output always carries the ONNX output
    tensor name. So: start at that op and walk back through unnamed intermediate outputs (the rest of
    the node's decomposition), skipping constants.
    """
    if not onnx_nodes:
        return {}
    from edgedistill.onnxtools.checks import load_onnx_checked

    proto = load_onnx_checked(onnx_path, check=False)
    outputs_of = {n.name: list(n.output) for n in proto.graph.node}
    unknown = [n for n in onnx_nodes if n not in outputs_of]
    if unknown:
        raise EdgeDistillError(f"no node named {', '.join(map(repr, unknown))} in {onnx_path.name}")
    producer: dict[str, Any] = {}
    by_name: dict[str, Any] = {}
    for op in model.get_ordered_ops():
        by_name[op.get_friendly_name()] = op
        for out in op.outputs():
            for tensor in out.get_names():
                producer[tensor] = op
    skip = {"Constant", "Parameter", "Result"}
    result: dict[str, list[str]] = {}
    for node in onnx_nodes:
        found = {n for n in by_name if n == node or n.startswith(node + "/")}
        stack = [producer[t] for t in outputs_of[node] if t in producer]
        seen: set[str] = set()
        while stack:
            op = stack.pop()
            name = op.get_friendly_name()
            if name in seen or op.get_type_name() in skip:
                continue
            seen.add(name)
            for inp in op.inputs():
                src = inp.get_source_output()
                if not src.get_names():  # an intermediate of this node's decomposition
                    stack.append(src.get_node())
        result[node] = sorted(
            n for n in found | seen if by_name.get(n) is not None and by_name[n].get_type_name() not in skip
        )
    return result


def quantize(
    model: Any, calib: CalibrationSet, device: str, ignored: list[str], options: dict
) -> tuple[Any, dict[str, Any]]:
    """nncf.quantize over every calibration sample, with calib.method mapped to an NNCF range estimator.

    minmax     -> RangeEstimatorParametersSet.MINMAX (min/max over all samples, as ORT's MinMax)
    percentile -> per-sample quantile at calib.percentile, averaged over samples (NNCF has no global
                  histogram percentile; its MEAN_QUANTILE shape with our outlier probability)
    entropy    -> RangeEstimatorParametersSet.HISTOGRAM (NNCF's error-minimizing histogram search,
                  the nearest it has to KL/entropy calibration; per-tensor activations only)
    Preset PERFORMANCE (symmetric weights and activations) by default: on the photo-restore teacher
    at 128x128 (2 threads, AMX CPU) MIXED (asymmetric activations) ran 1.5x slower for no PSNR gain
    with percentile ranges (46.8 vs 47.2 dB); target option nncf_preset = "mixed" selects it.
    """
    import logging

    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import (
        AggregatorType,
        RangeEstimatorParameters,
        RangeEstimatorParametersSet,
        StatisticsCollectorParameters,
        StatisticsType,
    )

    method = calib.method if calib.method in METHODS else "minmax"
    if method == "percentile":
        prob = max(0.0, min(0.5, 1.0 - calib.percentile / 100.0))
        estimator = RangeEstimatorParameters(
            min=StatisticsCollectorParameters(
                StatisticsType.QUANTILE, AggregatorType.MEAN, quantile_outlier_prob=prob
            ),
            max=StatisticsCollectorParameters(
                StatisticsType.QUANTILE, AggregatorType.MEAN, quantile_outlier_prob=prob
            ),
        )
        desc = f"percentile {calib.percentile} per sample, mean over samples"
    elif method == "entropy":
        estimator, desc = RangeEstimatorParametersSet.HISTOGRAM, "histogram error minimization"
    else:
        estimator, desc = RangeEstimatorParametersSet.MINMAX, "min/max over all samples"
    preset_name = str(options.get("nncf_preset", "performance")).lower()
    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    if preset_name not in presets:
        raise EdgeDistillError(
            f"target option nncf_preset must be one of {', '.join(presets)}, not '{preset_name}'"
        )
    kind = device.split(".")[0].split(":")[-1]
    devices = {"CPU": nncf.TargetDevice.CPU, "GPU": nncf.TargetDevice.GPU, "NPU": nncf.TargetDevice.NPU}
    _check_calib_shapes(model, calib)
    samples = list(calib.samples(1))
    previous = nncf.nncf_logger.level
    nncf.set_log_level(logging.WARNING)
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(samples),
            preset=presets[preset_name],
            target_device=devices.get(kind, nncf.TargetDevice.ANY),
            subset_size=len(samples),
            ignored_scope=nncf.IgnoredScope(names=list(ignored)) if ignored else None,
            advanced_parameters=AdvancedQuantizationParameters(activations_range_estimator_params=estimator),
        )
    finally:
        nncf.set_log_level(previous)
    info = {
        "preset": preset_name,
        "estimator": desc,
        "method": method,
        "samples": len(samples),
        "ignored": ignored,
    }
    return quantized, info


def layer_noise(
    fp32_onnx: Path, quantized_xml: Path, nodes: Sequence[str], holdout: CalibrationSet, threads: int = 1
) -> dict[str, float]:
    """The error NNCF's INT8 adds at each ONNX node, measured under OpenVINO in one pass.

    Both models run on the held-out samples with every node's input and output tensor as an extra
    output; a node's figure is the relative error (MSE / mean square of fp32) at its output minus
    that at its input: what its own weight and input quantizers add. The quality gate pre-ranks
    with it (cheap) before compiling the top layers one at a time with NNCF itself.
    Nodes whose tensors OpenVINO renamed away are left out.
    """
    from edgedistill.onnxtools.checks import load_onnx_checked

    ov = _ov()
    graph = load_onnx_checked(fp32_onnx, check=False).graph
    io = {n.name: (n.input[0], n.output[0]) for n in graph.node if n.name in nodes and n.input and n.output}
    given = {i.name for i in graph.input}
    core = ov.Core()
    fp32, quantized = convert_onnx(fp32_onnx), core.read_model(str(quantized_xml))
    tensors = {t for pair in io.values() for t in pair if t not in given}
    tensors &= _tensor_names(fp32) & _tensor_names(quantized)
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": max(1, int(threads))}
    runs = [_with_outputs(core, m, sorted(tensors), config) for m in (fp32, quantized)]
    err = dict.fromkeys(tensors, 0.0)
    power = dict.fromkeys(tensors, 0.0)
    for sample in holdout.samples(1):
        ref, got = (_named_outputs(compiled, sample, tensors) for compiled in runs)
        for t in tensors:
            err[t] += float(np.sum((got[t].astype(np.float64) - ref[t]) ** 2))
            power[t] += float(np.sum(ref[t].astype(np.float64) ** 2))
    rel = {t: err[t] / power[t] if power[t] > 0 else 0.0 for t in tensors}
    rel.update(dict.fromkeys(given, 0.0))  # the model's own inputs carry no error
    return {n: rel[o] - rel[i] for n, (i, o) in io.items() if i in rel and o in rel}


def _tensor_names(model: Any) -> set[str]:
    return {name for op in model.get_ordered_ops() for out in op.outputs() for name in out.get_names()}


def _with_outputs(core: Any, model: Any, tensors: list[str], config: dict[str, Any]) -> Any:
    have = {name for out in model.outputs for name in out.get_names()}
    extra = [t for t in tensors if t not in have]
    if extra:
        model.add_outputs(extra)
    return core.compile_model(model, "CPU", config)


def _named_outputs(compiled: Any, sample: dict[str, np.ndarray], tensors: set[str]) -> dict[str, np.ndarray]:
    results = compiled(sample)
    out = {}
    for port in compiled.outputs:
        for name in port.get_names() & tensors:
            out[name] = results[port]
    return out


def _check_calib_shapes(model: Any, calib: CalibrationSet) -> None:
    for port in model.inputs:
        name = port.get_any_name()
        if name not in calib.arrays:
            raise EdgeDistillError(f"calibration set has no input '{name}' (has {', '.join(calib.arrays)})")
        shape = (1, *calib.arrays[name].shape[1:])
        if not _fits(port.get_partial_shape(), shape):
            raise EdgeDistillError(
                f"calibration samples of '{name}' are {shape}, the model takes {port.get_partial_shape()}: "
                "build the calibration set at the target's input size"
            )


def save_ir(model: Any, out_dir: Path, compress_to_fp16: bool) -> None:
    """model.xml + model.bin, written beside and renamed in (bin first: the xml is what loaders look for)."""
    ov = _ov()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ov-ir-", dir=out_dir))
    try:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=compress_to_fp16)
        for name in ("model.bin", "model.xml"):
            os.chmod(tmp / name, 0o644)
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
