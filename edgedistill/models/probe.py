"""A small generator whose output visibly depends on its input: what hardware checks run.

Default init fades the signal through eval BatchNorm to flat gray, which a wrong kernel or engine
would also produce; a gain on the convs and non-default BatchNorm statistics keep it visible. Used by
scripts/arm64_check.py and scripts/tensorrt_check.py, so both check the same kind of model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgedistill.core.spec import spec_for_family
from edgedistill.models.registry import create
from edgedistill.models.weights import save_weights


def probe_run(root: Path, size: int, ngf: int = 8, n_blocks: int = 2, seed: int = 1) -> Path:
    """A ResNet generator (BatchNorm) saved as the run directory root/student; fixed seed."""
    kwargs = {"ngf": ngf, "n_blocks": n_blocks, "norm": "batch"}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = create("resnet", **kwargs).eval()
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                    m.weight.mul_(2.0)
                elif isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
    run = root / "student"
    run.mkdir(parents=True, exist_ok=True)
    save_weights(net, run / "generator.safetensors")
    spec_for_family("resnet", kwargs, default_size=(size, size)).save(run / "model.json")
    return run
