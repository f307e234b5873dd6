"""FID-style Fréchet distance and KID between two image sets, on a pluggable feature net.

Inception weights cannot be downloaded here and say little about 32x32 digits or restored photo
crops, so the feature net is a choice: an embedded teacher's shipped in-domain net, any
nn.Module, or a TorchScript file (e.g. the user's own Inception). Images are (N, C, H, W) in
[0, 1]; `FeatureNet.embed` matches channels, size and value range to what the net expects.

The statistics are torchmetrics' FrechetInceptionDistance and KernelInceptionDistance. Each
image set is embedded once, in batches (bounded memory), and the float64 features are fed to
both metrics through a pass-through `feature=` module: torchmetrics' own extractor call would
embed every image twice (once per metric) and, for custom modules, ignores `normalize`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from edgedistill.core.errors import EdgeDistillError

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")
PROBE_SIZE = (64, 64)
# Input conventions of built-in families that do not declare them as class attributes.
_KNOWN_INPUTS: dict[str, tuple[int, tuple[int, int] | None, tuple[float, float]]] = {
    "digit_classifier": (1, (32, 32), (-1.0, 1.0)),
}


@dataclass
class FeatureNet:
    """`module` maps (N, channels, *size) images in [0, 1] to (N, dim) features."""

    name: str
    module: nn.Module
    channels: int
    size: tuple[int, int] | None
    dim: int = 0

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Features of (N, C, H, W) images in [0, 1], as float64 (N, dim)."""
        x = images.float().to(_device(self.module))
        if x.shape[1] != self.channels:
            x = x.repeat(1, self.channels, 1, 1) if x.shape[1] == 1 else x.mean(1, keepdim=True)
        if self.size is not None and tuple(x.shape[-2:]) != tuple(self.size):
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return self.module(x).double()


class _Features(nn.Module):
    """Adapts a net to [0, 1] input and (N, d) output: rescales to its range, uses `.features()`
    when it has one (a classifier's penultimate layer), global-average-pools feature maps."""

    def __init__(self, net: nn.Module, value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.net = net
        self.lo, self.hi = float(value_range[0]), float(value_range[1])

    def forward(self, x: Tensor) -> Tensor:
        x = x * (self.hi - self.lo) + self.lo
        out = self.net.features(x) if hasattr(self.net, "features") else self.net(x)
        if isinstance(out, tuple | list):
            out = out[0]
        return out.mean((2, 3)) if out.dim() == 4 else out.flatten(1)


class _PassThrough(nn.Module):
    """The `feature=` module torchmetrics sees: features were already computed by FeatureNet."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features  # spares torchmetrics its random-uint8-image probe

    def forward(self, features: Tensor) -> Tensor:
        return features


def _device(module: nn.Module) -> torch.device:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _first_conv_channels(module: nn.Module) -> int | None:
    """Input channels read off the first 4-D weight (a conv's (out, in, kh, kw)); works on TorchScript."""
    return next((int(p.shape[1]) for p in module.parameters() if p.dim() == 4), None)


def _wrap(
    net: nn.Module, name: str, channels: int | None, size: tuple[int, int] | None, family: str | None = None
) -> FeatureNet:
    """Wrap `net` with its input convention (declared, known or inferred), then probe it once."""
    family = family or getattr(net, "family", None)
    if family in _KNOWN_INPUTS:
        known_ch, known_size, value_range = _KNOWN_INPUTS[family]
    else:
        known_ch = getattr(net, "input_channels", None) or _first_conv_channels(net) or 3
        known_size = getattr(net, "input_size", None)
        value_range = getattr(net, "input_range", (0.0, 1.0))
    fnet = FeatureNet(
        name, _Features(net.eval(), value_range).eval(), channels or known_ch, size or known_size
    )
    probe = torch.rand(2, fnet.channels, *(fnet.size or PROBE_SIZE))
    try:
        out = fnet.embed(probe)
    except Exception as exc:  # a user's net can fail in any way; report it in one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgeDistillError(
            f"feature net '{name}' fails on a {tuple(probe.shape)} probe ({msg}): pass channels= / size= "
            "to load_feature_net"
        ) from None
    if out.dim() != 2 or out.shape[0] != 2:
        raise EdgeDistillError(f"feature net '{name}' returned shape {tuple(out.shape)}, not (N, features)")
    fnet.dim = int(out.shape[1])
    return fnet


def _from_torchscript(path: Path, channels: int | None, size: tuple[int, int] | None) -> FeatureNet:
    if not path.is_file():
        raise EdgeDistillError(f"{path}: no such TorchScript file")
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise EdgeDistillError(f"{path}: not a TorchScript file ({type(exc).__name__})") from None
    return _wrap(net, path.name, channels, size)


def _from_teacher(name: str, channels: int | None, size: tuple[int, int] | None) -> FeatureNet:
    from edgedistill.models.embedded import EMBEDDED_DIR, EmbeddedTeacher

    path = EMBEDDED_DIR / name
    net = EmbeddedTeacher(name, path).feature_net() if path.is_dir() else None
    if net is None:
        shipped = sorted(
            p.name
            for p in EMBEDDED_DIR.glob("*")
            if (p / "features.json").exists() or (p / "classifier.json").exists()
        )
        raise EdgeDistillError(
            f"no feature net for '{name}': give an embedded teacher that ships one "
            f"({', '.join(shipped) or 'none trained yet'}), an nn.Module or a TorchScript file"
        )
    return _wrap(net, f"{name}:{net.family}", channels, size)  # type: ignore[attr-defined]


def load_feature_net(
    source: str | Path | nn.Module | FeatureNet,
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
) -> FeatureNet:
    """A FeatureNet from an embedded teacher's name, an nn.Module or a TorchScript file path.

    `channels` and `size` override what the net's input is taken to be (declared by the family,
    else read off its first conv, else 3 channels at any size); TorchScript nets get [0, 1] input.
    """
    if isinstance(source, FeatureNet):
        return source
    if isinstance(source, nn.Module):
        return _wrap(source, getattr(source, "family", type(source).__name__), channels, size)
    if isinstance(source, str | Path):
        path = Path(source)
        if path.suffix in TORCHSCRIPT_SUFFIXES or path.is_file():
            return _from_torchscript(path, channels, size)
        return _from_teacher(str(source), channels, size)
    raise EdgeDistillError(f"feature net: expected a name, path or nn.Module, got {type(source).__name__}")


def _check_images(x: Tensor, what: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise EdgeDistillError(f"{what}: expected an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if x.shape[0] < 2:
        raise EdgeDistillError(
            f"{what}: a distance between image sets needs at least 2 images, got {x.shape[0]}"
        )
    if x.shape[1] not in (1, 3):
        raise EdgeDistillError(f"{what}: expected 1 or 3 channels, got {x.shape[1]}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise EdgeDistillError(
            f"{what}: images must be in [0, 1], got [{lo:.2f}, {hi:.2f}] (map [-1, 1] with (x + 1) / 2)"
        )


def feature_distance(
    net: FeatureNet, real: Tensor, fake: Tensor, kid_subset: int = 100, batch_size: int = 64
) -> dict:
    """Fréchet distance and KID (mean, std over 100 subsets) between `real` and `fake` on `net`'s features.

    KID's subset size is capped at the smaller set; its subsets are drawn with a fixed seed so a
    re-run gives the same number (the caller's RNG state is left alone).
    """
    _check_images(real, "real images")
    _check_images(fake, "fake images")
    return distance_from_features(
        net.name, embed_all(net, real, batch_size), embed_all(net, fake, batch_size), kid_subset
    )


def embed_all(net: FeatureNet, images: Tensor, batch_size: int = 64) -> Tensor:
    """(N, dim) float64 features of `images`, embedded `batch_size` at a time (bounded memory)."""
    return torch.cat([net.embed(batch).cpu() for batch in images.split(batch_size)])


def distance_from_features(name: str, real: Tensor, fake: Tensor, kid_subset: int = 100) -> dict:
    """FID and KID from features embedded once (a caller scoring several sets against one
    reference, or bootstrapping, embeds each set only once)."""
    subset = min(kid_subset, len(real), len(fake))
    feature = _PassThrough(real.shape[1])
    # rank 0 scores alone under DDP: never wait for the other ranks
    fid = FrechetInceptionDistance(feature=feature, normalize=True, sync_on_compute=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "KID will save all extracted features in buffer"
        kid = KernelInceptionDistance(
            feature=feature, subset_size=subset, normalize=True, sync_on_compute=False
        )
    for feats, is_real in ((real, True), (fake, False)):
        fid.update(feats, real=is_real)
        kid.update(feats, real=is_real)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid": float(kid_mean),
        "kid_std": float(kid_std),
        "net": name,
        "n_real": len(real),
        "n_fake": len(fake),
        "kid_subset": subset,
    }
