"""Shared fixtures: two tiny generators, and the artifacts a real `edgedistill.export` makes of them.

Tests that need an artifact directory take it from `exported(...)` instead of writing manifest.json
by hand, so what they read is the artifact contract as export writes it (docs/architecture.md,
contract 3) and cannot drift from it. Each export runs once per session; the directories are shared,
so a test that must change one copies it first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

# Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP spinning makes them
# hundreds of times slower; tests that time nothing run single-threaded.
torch.set_num_threads(1)
# Distillation runs score 512 photo crops / 10k digits by default (issue #12's stable feature
# distance); the suite's runs check behaviour, not recipes, on a few hundred (subprocesses inherit it).
os.environ.setdefault("EDGEDISTILL_EVAL_SAMPLES", "256")

SIZE = 32  # input H and W of the tiny image generator and of every artifact made of it
INT8_MIN_PSNR = 20.0  # the quality gate of the exports below (see `exported`)

# name: (family, kwargs, seed, gain on the conv weights)
TINY = {
    "resnet": ("resnet", {"ngf": 8, "n_blocks": 2, "norm": "batch"}, 1, 2.0),
    "dcgan": ("dcgan", {"nz": 16, "ngf": 8, "nc": 1, "image_size": SIZE}, 2, 3.0),
}


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def _tiny_generator(family: str, kwargs: dict, seed: int, gain: float) -> torch.nn.Module:
    """A generator whose output depends visibly on its input, as a trained one's does.

    Default init fades the signal through eval-mode BatchNorm to a flat gray picture, which any wrong
    pixel mapping or quantizer would reproduce; a gain on the convs and non-default BatchNorm
    statistics keep the output sensitive to the input and the weights.
    """
    from edgedistill.models import create

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = create(family, **kwargs)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                    m.weight.mul_(gain)
                elif isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="session")
def tiny_generators(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run directories (model.json + generator.safetensors) of the tiny generators, by name."""
    from edgedistill.core.spec import spec_for_family
    from edgedistill.models.weights import save_weights

    root = tmp_path_factory.mktemp("tiny-generators")
    runs = {}
    for name, (family, kwargs, seed, gain) in TINY.items():
        run = root / name
        run.mkdir()
        size = {"default_size": (SIZE, SIZE)} if family != "dcgan" else {}  # dcgan's comes from image_size
        spec_for_family(family, kwargs, **size).save(run / "model.json")
        save_weights(_tiny_generator(family, kwargs, seed, gain), run / "generator.safetensors")
        runs[name] = run
    return runs


def _calibration_images(folder: Path, count: int = 40) -> Path:
    """Small natural-looking images (smooth gradients + noise): activation ranges as photos give."""
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    for i in range(count):
        base = np.stack([np.sin(3 * xx + i), np.cos(2 * yy + i / 3), xx * yy], -1) * 0.4 + 0.5
        img = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture(scope="session")
def exported(
    tmp_path_factory: pytest.TempPathFactory, tiny_generators: dict[str, Path]
) -> Callable[..., Path]:
    """`exported(model, target, precision)` -> the artifact directory `edgedistill.export` wrote.

    `model` names a tiny generator ("resnet" or "dcgan"); `target` is a target name or the path of a
    .toml profile. Image artifacts are 32x32, on one thread; int8 calibrates on 32 small images (or
    noise), 4 more held out for the gate. Each (model, target, precision) is exported once per session.

    The gate stands at INT8_MIN_PSNR: an untrained generator with this much gain loses more to int8 than
    a trained one (TensorRT's symmetric int8 of the tiny ResNet: 25.2 dB vs fp32, ONNX Runtime's 38.1 dB,
    measured), and the default 35 dB would send every TensorRT export through the slow layer fallback.
    The gate at its default bar is tested in test_export_api.py.
    """
    import edgedistill

    root = tmp_path_factory.mktemp("exported")
    made: dict[tuple[str, str, str], Path] = {}

    def calib_data(model: str) -> str | Path:
        if TINY[model][0] == "dcgan":
            return "noise"
        folder = root / "calibration-images"
        return folder if folder.is_dir() else _calibration_images(folder)

    def export_once(
        model: str = "resnet", target: str | Path = "x86-onnxruntime", precision: str = "fp32"
    ) -> Path:
        key = (model, str(target), precision)
        if key not in made:
            out = root / f"{model}-{Path(str(target)).stem}-{precision}"
            result = edgedistill.export(
                str(tiny_generators[model]), target, out, precision=precision, size=(SIZE, SIZE),
                calib_data=calib_data(model) if precision == "int8" else None, calib_size=32, holdout=4,
                min_psnr=INT8_MIN_PSNR, threads=1, log=lambda _message: None,
            )  # fmt: skip
            made[key] = result.out
        return made[key]

    return export_once
