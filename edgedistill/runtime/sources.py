"""The one way to open a model for running: MODEL_OR_ARTIFACT -> a Source that loads into a Runner,
plus what the report says about it. `profile`, `run` and `compress` all open models here.

An artifact directory or a model file (.onnx/.ort/.xml/.engine) goes through the backend
contract and needs no torch. Anything else is a torch model (teacher name, run directory,
checkpoint) loaded by load_generator; torch is imported only in that branch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.backends.base import Runner
from edgedistill.core.artifact import MANIFEST, MODEL_SUFFIXES, Artifact, load_artifact
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec


@dataclass
class Source:
    label: str  # the name in the report
    given: str  # what the user passed
    kind: str  # "torch" | "artifact"
    backend: str  # "torch" or the artifact's backend
    precision: str
    spec: GeneratorSpec | None
    size_bytes: int | None
    device: str = "CPU"
    artifact: Artifact | None = None
    macs_at: tuple[int, tuple[int, int] | None] | None = None  # (MACs, the input size they were counted at)
    # load time and memory spent before profiling started (a torch model is loaded to read its spec)
    preload: dict[str, float] = field(default_factory=dict)
    _module: Any = field(default=None, repr=False)
    _macs_fn: Callable[[tuple[int, int] | None], int | None] | None = field(default=None, repr=False)

    def unavailable(self) -> str | None:
        """Why this model cannot run here (its runtime is missing), else None."""
        if self.artifact is None:
            return None
        from edgedistill.backends import get_backend

        return get_backend(self.backend).available()

    def load(self, threads: int | None, profile_layers: bool = False) -> Runner:
        if self.artifact is not None:
            from edgedistill.backends import load_runner

            return load_runner(self.artifact, threads=threads, profile_layers=profile_layers)
        from edgedistill.runtime.torch_runner import TorchRunner

        assert self.spec is not None and self._module is not None
        return TorchRunner(
            self._module,
            [t.name for t in self.spec.inputs],
            [t.name for t in self.spec.outputs],
            profile_layers=profile_layers,
        )

    def macs(self, size: tuple[int, int] | None) -> int | None:
        """MACs of one inference at `size` (batch 1): counted for torch, from the manifest otherwise."""
        if self._macs_fn is not None:
            return self._macs_fn(size)
        if self.macs_at is None:
            return None
        macs, counted_at = self.macs_at
        if size is None or counted_at is None or self.spec is None or self.spec.kind != "image":
            return macs
        # Convolutional generators: MACs grow with the pixel count.
        return int(macs * (size[0] * size[1]) / (counted_at[0] * counted_at[1]))


def is_artifact(model: str | Path) -> bool:
    path = Path(model)
    if path.is_dir():
        return (path / MANIFEST).exists()
    return path.suffix in MODEL_SUFFIXES and path.exists()


def resolve(model: str | Path, label: str | None = None, **load_kwargs: Any) -> Source:
    """A Source for what the user named; errors are one EdgeDistillError line."""
    if is_artifact(model):
        return artifact_source(load_artifact(model), str(model), label)
    path = Path(model)
    if path.suffix in MODEL_SUFFIXES or (path.is_dir() and not (path / "model.json").exists()):
        load_artifact(model)  # raises the clear "not found" / "no manifest.json" line
    return torch_source(str(model), label, **load_kwargs)


def artifact_source(art: Artifact, given: str, label: str | None = None) -> Source:
    m = art.manifest
    spec = GeneratorSpec.from_dict(m["spec"]) if m.get("spec") else _onnx_spec(art) or _spec_beside(art)
    macs = m.get("macs")
    counted_at = tuple(spec.default_size) if spec is not None and spec.default_size else None
    target = m.get("target") or {}
    default_label = art.dir.name if Path(given).is_dir() else Path(given).name
    return Source(
        label=label or default_label,
        given=given,
        kind="artifact",
        backend=art.backend,
        precision=art.precision,
        spec=spec,
        size_bytes=artifact_bytes(art),
        device=str(target.get("device") or "CPU"),
        artifact=art,
        macs_at=(int(macs), counted_at) if macs else None,  # type: ignore[arg-type]
    )


def _onnx_spec(art: Artifact) -> GeneratorSpec | None:
    """A bare .onnx without manifest: the spec edgedistill's export stores in its metadata, if any."""
    if art.model_path.suffix != ".onnx":
        return None
    try:
        from edgedistill.onnxtools.checks import read_spec_dict

        d = read_spec_dict(art.model_path)
    except ImportError:  # no `onnx` package (a device): the manifest or --inputs must say
        return None
    return GeneratorSpec.from_dict(d) if d else None


def _spec_beside(art: Artifact) -> GeneratorSpec | None:
    """A bare model file with the model.json it was exported from next to it."""
    for candidate in (art.model_path.with_suffix(".json"), art.dir / "model.json"):
        if candidate.exists():
            return GeneratorSpec.load(candidate)
    return None


def artifact_bytes(art: Artifact) -> int:
    """Bytes of the model files the runtime loads (an OpenVINO .xml brings its .bin)."""
    names = set(art.manifest["files"])
    for f in list(names):
        if f.endswith(".xml"):
            names.add(f[:-4] + ".bin")
    return sum((art.dir / f).stat().st_size for f in names if (art.dir / f).is_file())


def torch_source(model: str, label: str | None = None, **load_kwargs: Any) -> Source:
    import time

    from edgedistill.models.loading import load_generator
    from edgedistill.models.modes import eval_mode
    from edgedistill.runtime.timing import peak_rss_bytes, rss_bytes

    rss0, peak0, t0 = rss_bytes(), peak_rss_bytes(), time.perf_counter()
    loaded = load_generator(model, **load_kwargs)
    preload = {"s": time.perf_counter() - t0}
    rss1, peak1 = rss_bytes(), peak_rss_bytes()
    if rss0 is not None and rss1 is not None:
        preload["rss"] = rss1 - rss0
    if peak0 is not None and peak1 is not None:
        preload["peak_rss"] = peak1 - peak0
    module = eval_mode(loaded.module)
    nbytes = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    spec = loaded.spec

    def count(size: tuple[int, int] | None) -> int | None:
        from edgedistill.metrics.complexity import measure_complexity

        try:
            return measure_complexity(module, spec.example_inputs(size=size)).macs
        except Exception:  # a model FlopCounterMode cannot trace still gets timed
            return None

    return Source(
        label=label or (Path(model).name if Path(model).exists() else model),
        given=model,
        kind="torch",
        backend="torch",
        precision="fp32",
        spec=spec,
        size_bytes=int(nbytes),
        preload=preload,
        _module=module,
        _macs_fn=count,
    )


OWN_INPUT = "::"  # "LABEL::name": an input array for one source only (make_inputs)


def make_inputs(
    source: Source,
    runner: Runner,
    size: tuple[int, int] | None,
    batch: int,
    seed: int,
    given: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Inputs by the runner's input names: given arrays, else random ones from the spec (same seed
    for every model, so outputs can be compared). Given arrays named "LABEL::name" belong to the
    source labelled LABEL alone: one inputs file can feed models whose inputs share a name at
    different shapes (the search's blocks of several candidates, timed in one remote session)."""
    prefix = f"{source.label}{OWN_INPUT}"
    if given is not None:
        own = {k[len(prefix) :]: v for k, v in given.items() if k.startswith(prefix)}
        arrays = own or {k: v for k, v in given.items() if OWN_INPUT not in k}
    elif source.spec is not None:
        arrays = source.spec.example_arrays(size=size, batch=batch, seed=seed)
    else:
        raise EdgeDistillError(
            f"{source.given} carries no generator spec (no manifest.json beside it): give the artifact "
            "directory written by `edgedistill export`, or inputs with --inputs FILE.npz"
        )
    names = list(runner.input_names)
    if all(n in arrays for n in names):
        picked = [arrays[n] for n in names]
    elif len(arrays) == len(names):  # same order, other names (torch spec vs ONNX graph)
        picked = list(arrays.values())
    else:
        raise EdgeDistillError(
            f"{source.given} takes inputs {names} but {sorted(arrays)} were given: give --inputs FILE.npz "
            "with one array per input name"
        )
    return {n: np.ascontiguousarray(a) for n, a in zip(names, picked, strict=True)}


def choose_size(
    sources: list[Source], size: tuple[int, int] | None, target_size: tuple[int, int] | None
) -> tuple[int, int] | None:
    """One input size for every model, so latencies and outputs compare.

    --size wins; then the size the artifacts were exported at (static ones run only at it), then
    the target's, then the first model's default.
    """
    if size is not None:
        return (int(size[0]), int(size[1]))
    specs = [s.spec for s in sources if s.spec is not None]
    if not specs or all(sp.kind != "image" for sp in specs):
        return None
    exported = [
        tuple(s.spec.default_size) for s in sources if s.kind == "artifact" and s.spec and s.spec.default_size
    ]
    if exported:
        return exported[0]  # type: ignore[return-value]
    if target_size is not None:
        return (int(target_size[0]), int(target_size[1]))
    for sp in specs:
        if sp.default_size:
            return tuple(sp.default_size)  # type: ignore[return-value]
    raise EdgeDistillError("give --size H W: no model says which input size it takes")


def unique_labels(sources: list[Source]) -> None:
    """Models with one name (each run's `exports/x86-openvino-int8`) are named by the part of their
    paths that differs (`run-a/searched`, `run-b/uniform`), so each row says which one it is; where
    the paths do not tell them apart, the second gets #2, the third #3 …"""
    groups: dict[str, list[Source]] = {}
    for s in sources:
        groups.setdefault(s.label, []).append(s)
    for same in groups.values():
        named = _differing_parts([Path(s.given).resolve().parts for s in same]) if len(same) > 1 else None
        for s, name in zip(same, named or [], strict=False):
            s.label = name
    seen: dict[str, int] = {}  # what paths left equal (or a path-made name meeting another's): #2, #3 …
    for s in sources:
        seen[s.label] = n = seen.get(s.label, 0) + 1
        s.label = s.label if n == 1 else f"{s.label} #{n}"


def _differing_parts(paths: list[tuple[str, ...]]) -> list[str] | None:
    """Each path without the leading and trailing parts all of them share; None when that leaves
    two equal or one empty (one file given twice)."""
    shortest = min(len(p) for p in paths)
    lead = next((i for i in range(shortest) if len({p[i] for p in paths}) > 1), shortest)
    tail = next((i for i in range(shortest - lead) if len({p[-1 - i] for p in paths}) > 1), shortest - lead)
    names = ["/".join(p[lead : len(p) - tail]) for p in paths]
    return names if all(names) and len(set(names)) == len(names) else None
