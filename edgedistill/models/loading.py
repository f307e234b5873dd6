"""`load_generator(source)`: every way a user hands us a generator, none of which runs pickled code.

Sources, tried in this order:
  embedded teacher name          photo-restore, digits-dcgan
  directory with model.json      a student run or an exported spec + weights
  family:path                    resnet:latest_net_G.pth, dcgan:netG.safetensors (kwargs read off the keys)
  package.module:Class           any nn.Module on PYTHONPATH, built with kwargs, weights from `weights=`;
                                 its spec from <weights>.json or model.json beside the weights, else
                                 guessed from its first layer (an inpainter or a label-conditioned
                                 generator cannot be guessed: it needs that JSON)
  path.pt2                       a torch.export program
  path (TorchScript)             torch.jit archive
  path (.pth/.pt/.safetensors)   a state dict whose family is recognised from its keys
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import CLASSIFIER_FAMILIES, GeneratorSpec, TensorSpec, scaled_dim, spec_for_family
from edgedistill.models.checkpoint import file_sha256, is_torchscript, read_state_dict, require_file
from edgedistill.models.embedded import embedded_teachers
from edgedistill.models.modes import eval_mode
from edgedistill.models.ops import PixelShuffleUp, per_phase
from edgedistill.models.registry import create, family_class, list_families
from edgedistill.models.weights import read_safetensors

GENERATOR_FAMILIES = ("resnet", "unet", "dcgan")
_MODULE_CLASS = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass
class LoadedGenerator:
    module: nn.Module
    spec: GeneratorSpec
    source: str


def load_generator(
    source: str | Path,
    *,
    kwargs: dict[str, Any] | None = None,
    weights: str | Path | None = None,
    spec: GeneratorSpec | None = None,
) -> LoadedGenerator:
    """Load a generator in eval mode together with its spec; errors are one EdgeDistillError line."""
    text = str(source)
    kwargs = dict(kwargs or {})
    teachers = embedded_teachers()
    if text in teachers:
        t = teachers[text]
        return LoadedGenerator(t.generator(), spec or t.spec, text)
    path = Path(text)
    if path.is_dir():
        return _from_spec_dir(path)
    family, sep, rest = text.partition(":")
    if sep and family in list_families():
        return _from_family(family, Path(rest), kwargs, spec)
    if _MODULE_CLASS.match(text) and not path.exists():
        return _from_module_class(text, kwargs, weights, spec)
    if not path.exists() and not sep and path.suffix == "":
        names = ", ".join(teachers) or "none installed"
        raise EdgeDistillError(
            f"'{text}' is neither an embedded teacher ({names}) nor an existing file; "
            "give a teacher name, FAMILY:PATH, module:Class or a checkpoint path"
        )
    require_file(path, "generator")
    if path.suffix == ".pt2":
        return _finish(*_load_exported(path, spec or _sidecar_spec(path)), path)
    if is_torchscript(path):
        return _finish(torch.jit.load(str(path), map_location="cpu"), spec or _sidecar_spec(path), path)
    state = read_state_dict(path)
    fam = _recognise_family(state)
    if fam is None:
        raise EdgeDistillError(
            f"cannot tell which generator family {path} holds (first keys: {', '.join(list(state)[:4])}); "
            f"name it as FAMILY:PATH with FAMILY one of {', '.join(GENERATOR_FAMILIES)}, or use module:Class"
        )
    return _from_family(fam, path, kwargs, spec, state)


# ---------------------------------------------------------------------------------------- sources
def _from_family(
    family: str,
    path: Path,
    kwargs: dict[str, Any],
    spec: GeneratorSpec | None,
    state: dict[str, torch.Tensor] | None = None,
) -> LoadedGenerator:
    if family not in GENERATOR_FAMILIES + CLASSIFIER_FAMILIES:
        raise EdgeDistillError(
            f"'{family}' is not a generator family: use one of {', '.join(GENERATOR_FAMILIES)}"
        )
    state = read_state_dict(path) if state is None else state
    cls = family_class(family)
    inferred: dict[str, Any] = {}
    if hasattr(cls, "matches") and cls.matches(state):  # classifiers: kwargs from --arg or model.json
        try:
            inferred = cls.infer_kwargs(state)  # type: ignore[attr-defined]
        except (KeyError, ValueError, IndexError):
            inferred = {}
    sidecar = _sidecar_spec(path)
    if family in CLASSIFIER_FAMILIES and sidecar is not None and sidecar.family == family:
        inferred = dict(sidecar.kwargs)  # a classifier's width is not read off its keys: its model.json says
    full = {**inferred, **kwargs}
    net = create(family, **full)
    load_state_checked(net, state, path, f"{family}({_kw(full)})")
    spec = spec or sidecar or spec_for_family(family, full)
    spec.provenance.setdefault("source", str(path))
    spec.provenance.setdefault("sha256", file_sha256(path))
    return LoadedGenerator(net.eval(), spec, str(path))


def _from_spec_dir(path: Path) -> LoadedGenerator:
    spec_path = path / "model.json"
    if not spec_path.exists():
        raise EdgeDistillError(
            f"{path} is a directory without model.json; give a checkpoint file or a run directory"
        )
    spec = GeneratorSpec.load(spec_path)
    for name in ("student.safetensors", "generator.safetensors"):
        if (path / name).exists() and spec.family:
            net = create(spec.family, **spec.kwargs)
            load_state_checked(net, read_safetensors(path / name), path / name, spec.family)
            return LoadedGenerator(net.eval(), spec, str(path))
    for name in ("student.pt2", "generator.pt2", "model.pt2"):
        if (path / name).exists():
            return _finish(*_load_exported(path / name, spec), path / name)
    raise EdgeDistillError(f"{path} has model.json but no student/generator .safetensors or .pt2 beside it")


def _from_module_class(
    target: str, kwargs: dict[str, Any], weights: str | Path | None, spec: GeneratorSpec | None
) -> LoadedGenerator:
    mod_name, cls_name = target.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise EdgeDistillError(f"cannot import '{mod_name}' ({exc}); put its folder on PYTHONPATH") from None
    cls = getattr(mod, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise EdgeDistillError(f"'{cls_name}' in {mod_name} is not an nn.Module class")
    try:
        net = cls(**kwargs)
    except TypeError as exc:
        raise EdgeDistillError(f"{target}({_kw(kwargs)}) failed: {exc}") from None
    if weights is not None:
        w = require_file(Path(weights), "weights")
        load_state_checked(net, read_state_dict(w), w, target)
        spec = spec or _sidecar_spec(w)
        where = f"{w.with_suffix('.json').name} or model.json beside {w}"
    else:
        where = "a model.json beside its --weights"
    return _finish(net, spec, Path(weights) if weights else None, target, where)


def _load_exported(path: Path, spec: GeneratorSpec | None) -> tuple[nn.Module, GeneratorSpec]:
    """A torch.export program; without a sidecar spec its (static) input shape says what it eats."""
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # torch raises many types for a bad archive
        raise EdgeDistillError(
            f"{path} is not a readable torch.export program ({exc}); re-export it"
        ) from None
    module = program.module()
    if spec is None:
        shape = [int(d) for d in program.example_inputs[0][0].shape]
        kind = "noise" if shape[2:] == [1, 1] else "image"
        name = "z" if kind == "noise" else "image"
        spec = GeneratorSpec(kind=kind, inputs=[TensorSpec(name, shape)], outputs=[])
        if kind == "image":
            spec.default_size = (shape[2], shape[3])
        with torch.no_grad():
            y = module(*spec.example_inputs())
        spec.outputs = [TensorSpec("output", [int(d) for d in y.shape])]
    return module, spec


def _finish(
    net: nn.Module,
    spec: GeneratorSpec | None,
    path: Path | None,
    label: str | None = None,
    where: str = "a model.json beside the file",
) -> LoadedGenerator:
    net = eval_mode(net)
    spec = spec or infer_spec(net, where)
    if path is not None:
        spec.provenance.setdefault("source", str(path))
        spec.provenance.setdefault("sha256", file_sha256(path))
    return LoadedGenerator(net, spec, label or str(path))


# ---------------------------------------------------------------------------------------- helpers
def load_state_checked(net: nn.Module, state: dict[str, torch.Tensor], path: Path, label: str) -> None:
    """load_state_dict(strict) with one readable line for missing/unexpected keys or shapes."""
    state = _norms_before_shuffle(net, _drop_instancenorm_stats(net, state))
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(
                f"missing {len(missing)} keys ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})"
            )
        if unexpected:
            more = ", …" if len(unexpected) > 3 else ""
            parts.append(f"unexpected {len(unexpected)} keys ({', '.join(unexpected[:3])}{more})")
        raise EdgeDistillError(
            f"{path} does not fit {label}: {'; '.join(parts)}. Check the family and its arguments (--arg)"
        )
    for k, v in own.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise EdgeDistillError(
                f"{path}: '{k}' is {list(state[k].shape)} in the checkpoint but {list(v.shape)} in {label}; "
                "set the matching width/arguments (--arg)"
            )
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def _drop_instancenorm_stats(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old CycleGAN checkpoints carry running stats for stat-less InstanceNorm layers; drop them."""
    inorm = {
        n for n, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d) and not m.track_running_stats
    }
    stats = ("running_mean", "running_var", "num_batches_tracked")
    return {
        k: v for k, v in state.items() if not (k.rsplit(".", 1)[0] in inorm and k.rsplit(".", 1)[-1] in stats)
    }


def _norms_before_shuffle(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Students saved before a PixelShuffle upsampler held its BatchNorm before the shuffle (it was
    the layer after): the same function with each channel's stats repeated for its four phases."""
    state = dict(state)
    for name, m in net.named_modules():
        parent, _, index = name.rpartition(".")
        if not (isinstance(m, PixelShuffleUp) and isinstance(m.norm, nn.BatchNorm2d) and index.isdigit()):
            continue
        after = f"{parent}.{int(index) + 1}." if parent else f"{int(index) + 1}."
        if f"{name}.norm.running_mean" in state or f"{after}running_mean" not in state:
            continue
        old = {key[len(after) :]: state.pop(key) for key in [k for k in state if k.startswith(after)]}
        state.update({f"{name}.norm.{k}": v for k, v in per_phase(old).items()})
    return state


def _recognise_family(state: dict[str, torch.Tensor]) -> str | None:
    for fam in GENERATOR_FAMILIES:
        if family_class(fam).matches(state):  # type: ignore[attr-defined]
            return fam
    return None


def _sidecar_spec(path: Path) -> GeneratorSpec | None:
    for candidate in (path.with_suffix(".json"), path.parent / "model.json"):
        if candidate.exists():
            return GeneratorSpec.load(candidate)
    return None


def infer_spec(net: nn.Module, where: str = "a model.json beside the file") -> GeneratorSpec:
    """Guess the spec of an arbitrary module from its first layer: a ConvTranspose2d eats noise
    (N, C, 1, 1), a Conv2d eats images. Pass `spec=` when the guess is wrong; `where` says where
    a spec would be found (the error's fix)."""
    first = next((m for m in net.modules() if _layer_kind(m) is not None), None)
    if first is None:
        raise EdgeDistillError(f"cannot infer what this generator eats: put its spec in {where}")
    kind, channels = _layer_kind(first)  # type: ignore[misc]
    if kind == "noise":
        inputs = [TensorSpec("z", ["N", channels, 1, 1])]
        spec = GeneratorSpec(kind="noise", inputs=inputs, outputs=[])
    else:
        inputs = [TensorSpec("image", ["N", channels, "H", "W"])]
        spec = GeneratorSpec(kind="image", inputs=inputs, outputs=[], default_size=(256, 256))
    try:
        with torch.no_grad():
            y = net(*spec.example_inputs(size=(64, 64) if kind == "image" else None))
    except Exception as exc:  # whatever the user's forward raises on the guessed input
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EdgeDistillError(
            f"cannot infer what {type(net).__name__} eats: its first layer suggests one {kind} input "
            f"{inputs[0].shape}, on which its forward fails ({why}); put its spec in {where} "
            "(docs/architecture.md, contract 1: an inpainter or a label-conditioned generator always needs one)"
        ) from None
    if kind == "image":  # a super-resolver's output follows its input at a scale: "H*2"
        out = [
            "N",
            int(y.shape[1]),
            scaled_dim("H", 64, int(y.shape[2])),
            scaled_dim("W", 64, int(y.shape[3])),
        ]
    else:
        out = ["N", *map(int, y.shape[1:])]
    spec.outputs = [
        TensorSpec(
            "output" if kind == "image" else "image", [d if isinstance(d, str) else int(d) for d in out]
        )
    ]
    if kind == "noise":
        spec.default_size = (int(y.shape[2]), int(y.shape[3]))
    return spec


def _layer_kind(m: nn.Module) -> tuple[str, int] | None:
    name = getattr(m, "original_name", type(m).__name__)  # TorchScript keeps the class name here
    weight = getattr(m, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        return None
    if name == "ConvTranspose2d":
        return "noise", int(weight.shape[0])
    if name == "Conv2d":
        return "image", int(weight.shape[1])
    return None


def _kw(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())
