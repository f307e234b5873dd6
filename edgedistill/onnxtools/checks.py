"""Reading an ONNX file someone handed us, safely: one clear line for a bad file, no surprises.

A model's external data names files by a `location` relative to the model; a crafted model can
point it at `../../etc/...` or an absolute path, and onnx would read that file into a tensor.
We refuse such locations before anything is read. No torch here: backends use it on devices.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.core.errors import EdgeDistillError

if TYPE_CHECKING:
    import onnx

SPEC_KEY = "edgedistill.spec"
VERSION_KEY = "edgedistill.version"


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def _tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that may hold external data: initializers and tensor-valued attributes."""
    import onnx

    for graph in _graphs(model.graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors


def check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Refuse external data whose location is absolute or leaves the model's folder."""
    import onnx

    folder = path.parent.resolve()
    for tensor in _tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        outside = os.path.isabs(location) or ".." in Path(location).parts or not target.is_relative_to(folder)
        if not location or outside:
            raise EdgeDistillError(
                f"{path}: tensor '{tensor.name}' keeps its data at '{location}', outside the model's folder; "
                "refusing to read it (put the data file beside the model and set its location to the bare file name)"
            )
        if not target.is_file():
            raise EdgeDistillError(
                f"{path}: tensor '{tensor.name}' keeps its data in '{location}', which is missing beside the model"
            )


def load_onnx_checked(path: str | Path, *, check: bool = True) -> onnx.ModelProto:
    """The model at `path`, with its (checked) external data, or one EdgeDistillError line."""
    import onnx

    path = Path(path)
    model = _read_proto(path)
    if model.ir_version == 0 or not model.graph.node:
        raise EdgeDistillError(f"{path} is not an ONNX model (empty or not a ModelProto): re-export it")
    check_external_data(model, path)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as exc:
        raise EdgeDistillError(f"{path}: cannot read its external data ({_first_line(exc)})") from None
    if check:
        try:
            # The checker wants a path for models over 2 GB (protobuf's limit); smaller ones go in memory.
            onnx.checker.check_model(str(path) if model.ByteSize() > 2**31 - 1 else model)
        except (onnx.checker.ValidationError, ValueError) as exc:
            raise EdgeDistillError(f"{path} is not a valid ONNX model: {_first_line(exc)}") from None
    return model


def node_for_op(model: onnx.ModelProto | str | Path, op_type: str) -> list[str]:
    """Names of the nodes of `op_type` (in every subgraph), so an error can say which layer it is."""
    if not hasattr(model, "graph"):
        model = load_onnx_checked(model, check=False)
    names = []
    for graph in _graphs(model.graph):  # type: ignore[union-attr]
        for i, node in enumerate(graph.node):
            if node.op_type == op_type:
                names.append(node.name or f"{op_type}#{i} -> {', '.join(node.output)}")
    return names


def read_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file as a dict (weights are not read)."""
    return {p.key: p.value for p in _read_proto(Path(path)).metadata_props}


def _read_proto(path: Path) -> onnx.ModelProto:
    """The graph and metadata of `path` without its external data, or one EdgeDistillError line."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise EdgeDistillError(f"ONNX model not found: {path}")
    try:
        return onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise EdgeDistillError(
            f"{path} is not a readable ONNX model ({_first_line(exc)}): re-export it"
        ) from None


def read_spec_dict(path: str | Path) -> dict[str, Any] | None:
    """The generator spec stored in an ONNX file's metadata (as a dict), or None when it has none."""
    raw = read_metadata(path).get(SPEC_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EdgeDistillError(
            f"{path}: its '{SPEC_KEY}' metadata is not JSON ({exc}): re-export it"
        ) from None


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Set (replace) metadata_props keys in place."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for key, value in [*kept, *values.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def copy_metadata(
    src: onnx.ModelProto | dict[str, str], dst: onnx.ModelProto, prefix: str = "edgedistill."
) -> None:
    """Carry our metadata (the spec) onto a derived model: tools like quant_pre_process drop it."""
    items = src if isinstance(src, dict) else {p.key: p.value for p in src.metadata_props}
    set_metadata(dst, {k: v for k, v in items.items() if k.startswith(prefix)})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
