"""torch -> fp32 ONNX that provably computes what the torch module computes.

Exporter: torch's TorchScript-based ("legacy") exporter. The torch.export-based one needs
onnxscript (not a dependency) and silently stays at opset 18 when asked for 17; the legacy one
honours the opset and handles ReflectionPad2d / ConvTranspose2d / BatchNorm / InstanceNorm, with
onnxslim folding its chains of shape ops back into single Pads. Every export is checked: the ONNX
runs under ONNX Runtime on the spec's example inputs and must match torch within `tolerance`.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.core.atomic import write_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.models.modes import eval_mode
from edgedistill.onnxtools.checks import SPEC_KEY, VERSION_KEY, read_spec_dict, set_metadata

if TYPE_CHECKING:
    import onnx
    import torch

EXPORTERS = ("legacy", "dynamo")


@dataclass
class OnnxExportReport:
    path: Path
    opset: int
    dynamic: bool
    input_shapes: dict[str, list[int | str]]
    max_abs_err: float
    n_nodes: int
    op_types: dict[str, int] = field(default_factory=dict)
    exporter: str = "legacy"
    static_reason: str | None = None  # why H/W came out static where dynamic was asked


def export_onnx(
    module: torch.nn.Module,
    spec: GeneratorSpec,
    path: str | Path,
    *,
    size: tuple[int, int] | None = None,
    dynamic: bool = True,
    opset: int = 17,
    tolerance: float = 1e-3,
    exporter: str = "legacy",
    slim: bool = True,
) -> OnnxExportReport:
    """Export `module` to `path` (atomically), simplified, checked and parity-tested against torch.

    dynamic=True: free batch (and H/W for image generators); False: batch 1 at `size`.
    The spec (with `default_size` = the export size) is stored in metadata_props.
    """
    import onnx
    import torch

    if exporter not in EXPORTERS:
        raise EdgeDistillError(f"exporter must be one of {', '.join(EXPORTERS)}, not '{exporter}'")
    if len(spec.inputs) != (1 if spec.classes is None else 2):
        raise EdgeDistillError(
            f"ONNX export handles one input (z and label for a noise+label generator); this one takes "
            f"{len(spec.inputs)} inputs ({', '.join(t.name for t in spec.inputs)})"
        )
    path = Path(path)
    if spec.kind == "image":
        size = tuple(size or spec.default_size or (256, 256))  # type: ignore[assignment]
        spec = replace(spec, default_size=size)
    module = eval_mode(module)
    in_names = [t.name for t in spec.inputs]
    out_names = [t.name for t in spec.outputs] or ["output"]
    example = spec.example_inputs(size=size, batch=1, seed=0)
    fixed_reason = _check_program_size(module, spec, size)  # refuses a size a fixed program cannot take
    static_reason = fixed_reason if dynamic else None
    dynamic_axes = _dynamic_axes(spec, out_names, keep_hw=static_reason is None) if dynamic else None

    model = _torch_to_onnx(module, example, in_names, out_names, dynamic_axes, opset, exporter)
    got_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if got_opset != opset:
        raise EdgeDistillError(
            f"the {exporter} exporter wrote opset {got_opset} where {opset} was asked: "
            f"use --opset {got_opset} or the legacy exporter"
        )
    if slim:
        model = _slim(model)
    _name_nodes(model)
    set_metadata(model, {SPEC_KEY: json.dumps(spec.to_dict(), default=str), VERSION_KEY: _version()})
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise EdgeDistillError(f"the exported ONNX is invalid ({str(exc).splitlines()[0]})") from None

    # batch 2 catches shapes traced in as constants; a torch.export program is itself fixed at batch 1
    exported_program = isinstance(module, torch.fx.GraphModule)
    err = _parity(module, model, spec, size, batch=2 if dynamic and not exported_program else 1)
    if not err <= tolerance:  # also catches NaN
        raise EdgeDistillError(
            f"ONNX export differs from torch by max |err| {err:.3g} (tolerance {tolerance:g}) on the spec's "
            f"example inputs: an op exported wrongly; try another --opset, or check for ops that "
            "depend on training mode or on random state"
        )
    if model.ByteSize() >= 2**31:
        raise EdgeDistillError("the exported model is over 2 GB, which one ONNX file cannot hold")
    write_atomic(path, lambda tmp: onnx.save_model(model, str(tmp)))
    ops = Counter(n.op_type for n in model.graph.node)
    shapes = {t.name: _shape(t) for t in model.graph.input}
    if dynamic and static_reason is None:
        static_reason = _traced_static(shapes, spec)
    return OnnxExportReport(
        path, got_opset, dynamic and static_reason is None, shapes, float(err), len(model.graph.node),
        dict(ops), exporter, static_reason,
    )  # fmt: skip


def spec_from_onnx(path: str | Path) -> GeneratorSpec | None:
    """The generator spec stored by `export_onnx`, or None when the file carries none."""
    d = read_spec_dict(path)
    return None if d is None else GeneratorSpec.from_dict(d)


# ------------------------------------------------------------------------------------------ steps
def program_input_size(module: Any) -> tuple[int, int] | None:
    """(H, W) a torch.export program's image input is fixed at; None where they are free (SymInts),
    or for a module that is no such program (no traced example shape on its first input)."""
    import torch

    if not isinstance(module, torch.fx.GraphModule):
        return None
    first = next((n for n in module.graph.nodes if n.op == "placeholder"), None)
    val = first.meta.get("val") if first is not None else None
    shape = getattr(val, "shape", None)
    if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
        return None
    return int(shape[2]), int(shape[3])


def _check_program_size(module: Any, spec: GeneratorSpec, size: tuple[int, int] | None) -> str | None:
    """Refuse a size a fixed-size program cannot take (one line, not torch's guard failure); else
    the reason its export is static."""
    fixed = program_input_size(module) if spec.kind == "image" else None
    if fixed is None:
        return None
    h, w = fixed
    if size is not None and tuple(size) != fixed:
        raise EdgeDistillError(
            f"the generator is a torch.export program fixed at {h}x{w} input (torch.export could not keep "
            f"its H/W free when it was saved): export it with --size {h} {w}, or re-save it at the size you deploy"
        )
    return (
        f"exported with static shape {h}x{w} because the generator is a torch.export program (.pt2) "
        f"saved with its input fixed at {h}x{w}: it runs at that size only"
    )


def _traced_static(shapes: dict[str, list[int | str]], spec: GeneratorSpec) -> str | None:
    """The reason, where an image input's H/W came out fixed although they were asked free."""
    free = {t.name for t in spec.inputs if len(t.shape) == 4 and all(isinstance(d, str) for d in t.shape[2:])}
    for name, dims in shapes.items():
        if name in free and len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[2:]):
            return (
                f"exported with static shape {dims[2]}x{dims[3]} because the traced graph of '{name}' "
                "fixes its H/W (a size-dependent op or parameter): it runs at that size only"
            )
    return None


def _dynamic_axes(
    spec: GeneratorSpec, out_names: list[str], keep_hw: bool = True
) -> dict[str, dict[int, str]]:
    """Free dims by the spec's names: "N" always, "H"/"W" for image generators (unless `keep_hw` is off)."""
    axes: dict[str, dict[int, str]] = {}
    tensors = [*spec.inputs, *(spec.outputs or [])]
    for t in tensors:
        axes[t.name] = {
            i: str(d)
            for i, d in enumerate(t.shape)
            if isinstance(d, str) and (keep_hw or d not in ("H", "W"))
        }
    for name in out_names:  # outputs without a spec'd shape: at least a free batch
        axes.setdefault(name, {0: "N"})
    return axes


def _torch_to_onnx(
    module: torch.nn.Module,
    example: tuple,
    in_names: list[str],
    out_names: list[str],
    dynamic_axes: dict[str, dict[int, str]] | None,
    opset: int,
    exporter: str,
) -> onnx.ModelProto:
    import onnx
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and constant-folding chatter
        try:
            if exporter == "legacy":
                torch.onnx.export(
                    _trainless(module),
                    example,
                    buf,
                    dynamo=False,
                    opset_version=opset,
                    input_names=in_names,
                    output_names=out_names,
                    dynamic_axes=dynamic_axes,
                    do_constant_folding=True,
                )
            else:
                dyn = None
                if dynamic_axes:
                    dyn = {n: {i: torch.export.Dim.AUTO for i in dynamic_axes.get(n, {})} for n in in_names}
                program = torch.onnx.export(
                    module,
                    example,
                    dynamo=True,
                    opset_version=opset,
                    input_names=in_names,
                    output_names=out_names,
                    dynamic_shapes=dyn,
                )
                return program.model_proto  # type: ignore[union-attr]
        except ModuleNotFoundError as exc:
            raise EdgeDistillError(
                f"the {exporter} ONNX exporter needs {exc.name}: pip install {exc.name}, or use the legacy exporter"
            ) from None
        except Exception as exc:  # torch raises many types from deep inside its exporters
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EdgeDistillError(f"torch could not export the generator to ONNX: {first}") from None
    return onnx.load_model_from_string(buf.getvalue())


def _slim(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim: constant folding + dead-code removal (the legacy exporter's Pad chains become Pads)."""
    import onnxslim

    with contextlib.redirect_stdout(io.StringIO()):
        slimmed = onnxslim.slim(model)
    return slimmed if slimmed is not None else model


def _name_nodes(model: onnx.ModelProto) -> None:
    """Every node gets a unique name: the quality gate keeps layers at fp32 by node name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def _parity(
    module: torch.nn.Module,
    model: onnx.ModelProto,
    spec: GeneratorSpec,
    size: tuple[int, int] | None,
    batch: int,
) -> float:
    """max |torch - ONNX Runtime| over all outputs on the spec's example inputs."""
    import onnxruntime as ort
    import torch

    inputs = spec.example_inputs(size=size, batch=batch, seed=1)
    with torch.no_grad():
        ref = module(*inputs)
    refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        given = {t.name: x.numpy().astype(np.float32) for t, x in zip(spec.inputs, inputs, strict=True)}
        feeds = {i.name: given[i.name] for i in sess.get_inputs()}  # by name: an unused input is dropped
        outs = sess.run(None, feeds)
    except Exception as exc:  # onnxruntime's errors have no common base class
        first = str(exc).strip().splitlines()[0]
        raise EdgeDistillError(f"the exported ONNX does not run in ONNX Runtime: {first}") from None
    if len(outs) != len(refs):
        raise EdgeDistillError(f"the ONNX has {len(outs)} outputs where torch returns {len(refs)}")
    errs = []
    for o, r in zip(outs, refs, strict=True):
        r = r.detach().float().numpy()
        if o.shape != r.shape:
            raise EdgeDistillError(f"the ONNX output has shape {o.shape} where torch gives {r.shape}")
        errs.append(float(np.max(np.abs(o.astype(np.float32) - r))) if r.size else 0.0)
    return max(errs)


def _shape(value_info: Any) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _version() -> str:
    from edgedistill import __version__

    return __version__


def _trainless(module: Any) -> Any:
    """A torch.export program's module refuses .train(), which the legacy exporter calls to set eval
    mode; such a module is already in eval form, so wrap it in one whose train() does nothing."""
    import torch

    if not isinstance(module, torch.fx.GraphModule) or (
        hasattr(module, "training") and _accepts_train(module)
    ):
        return module

    class _Frozen(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def train(self, mode: bool = True) -> _Frozen:
            return self

        def forward(self, *args: Any) -> Any:
            return self.inner(*args)

    return _Frozen(module)


def _accepts_train(module: Any) -> bool:
    try:
        module.train(False)
        return True
    except (NotImplementedError, RuntimeError):
        return False
