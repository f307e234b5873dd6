"""Train the photo-restore teacher's in-domain feature net (edgedistill/models/feature_nets.py).

    python scripts/train_feature_nets.py [--steps N] [--max-minutes M]

Self-supervised: the label of a random 64x64 crop is which of the 18 bundled training photos it
came from. The rightmost fifth of every photo is never trained on; crops from it measure held-out
accuracy. Writes features.safetensors (fp16) + features.json into
edgedistill/models/embedded/photo-restore/, each atomically, and touches nothing else there
(the teacher's own files are written by scripts/train_teachers.py). Logs JSON lines to stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgedistill.core.atomic import write_text_atomic
from edgedistill.data.bundled import TRAIN_PHOTOS, bundled_photos
from edgedistill.models import create
from edgedistill.models import feature_nets as _feature_nets  # noqa: F401  (registers photo_features)
from edgedistill.models.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "edgedistill" / "models" / "embedded" / "photo-restore"
CROP = 64


def split_photos(photos: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train, held-out) regions: the held-out one is the rightmost fifth, at least one crop wide."""
    train, held = [], []
    for img in photos:
        cut = img.shape[1] - max(CROP, img.shape[1] // 5)
        train.append(img[:, :cut])
        held.append(img[:, cut:])
    return train, held


def sample_crops(regions: list[np.ndarray], labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random CROP x CROP crop from regions[label] per label, as (n, 3, CROP, CROP) in [0, 1]."""
    out = torch.empty(len(labels), 3, CROP, CROP)
    for i, label in enumerate(labels.tolist()):
        img = regions[label]
        y = int(torch.randint(img.shape[0] - CROP + 1, (1,), generator=gen))
        x = int(torch.randint(img.shape[1] - CROP + 1, (1,), generator=gen))
        out[i] = torch.from_numpy(img[y : y + CROP, x : x + CROP]).permute(2, 0, 1)
    return out


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random h/v flips and mild (±10 %) brightness, contrast and saturation jitter."""
    n = len(x)
    hflip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(hflip[:, None, None, None], x.flip(3), x)
    vflip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(vflip[:, None, None, None], x.flip(2), x)

    def factor() -> torch.Tensor:
        return 1 + 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)

    x = x * factor()
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * factor()
    gray = x.mean(1, keepdim=True)
    x = gray + (x - gray) * factor()
    return x.clamp(0, 1)


def heldout_set(regions: list[np.ndarray], per_photo: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(len(regions)).repeat_interleave(per_photo)
    return sample_crops(regions, labels, torch.Generator().manual_seed(123)), labels


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    pred = torch.cat([net(xb).argmax(1) for xb in x.split(128)])
    net.train()
    return float((pred == y).float().mean())


def train(steps: int, batch: int, width: int, max_minutes: float, seed: int) -> dict:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_regions, held_regions = split_photos(bundled_photos("train"))
    x_held, y_held = heldout_set(held_regions, per_photo=20)
    net = create("photo_features", width=width, n_classes=len(TRAIN_PHOTOS))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    t0 = time.time()
    step, acc = 0, 0.0
    while step < steps and time.time() - t0 < 60 * max_minutes:
        labels = torch.randint(len(train_regions), (batch,), generator=gen)
        x = augment(sample_crops(train_regions, labels, gen), gen)
        loss = F.cross_entropy(net(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % 50 == 0 or step == steps:
            row = {"step": step, "loss": round(loss.item(), 4), "elapsed_s": round(time.time() - t0, 1)}
            if step % 100 == 0 or step == steps:
                row["heldout_acc"] = acc = round(accuracy(net, x_held, y_held), 4)
            print(json.dumps(row), flush=True)
    acc = round(accuracy(net, x_held, y_held), 4)
    return {"net": net.eval(), "steps": step, "accuracy": acc, "seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--max-minutes", type=float, default=4.0, help="stop early at this wall-clock budget")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)  # leave the other core to the teacher training running beside us
    result = train(args.steps, args.batch, args.width, args.max_minutes, args.seed)
    net = result["net"]
    save_weights(net, OUT / "features.safetensors", dtype=torch.float16)
    meta = {
        "family": "photo_features",
        "kwargs": {"width": args.width, "n_classes": len(TRAIN_PHOTOS)},
        "description": (
            "Self-supervised photo-identity CNN on the bundled training photos: input (N, 3, H, W) RGB in "
            f"[0, 1], H, W >= 32; features() is a {net.feature_dim}-d global-average-pooled embedding."
        ),
        "feature_dim": net.feature_dim,
        "accuracy": result["accuracy"],
        "accuracy_on": f"{CROP}x{CROP} crops from the unseen right fifth of each of the {len(TRAIN_PHOTOS)} photos",
        "train": {"steps": result["steps"], "batch": args.batch, "seconds": result["seconds"], "threads": 1},
        "params": sum(p.numel() for p in net.parameters()),
    }
    write_text_atomic(OUT / "features.json", json.dumps(meta, indent=2) + "\n")
    print(json.dumps({"done": True, "accuracy": result["accuracy"], "steps": result["steps"],
                      "seconds": result["seconds"], "chance": round(1 / len(TRAIN_PHOTOS), 4)}))  # fmt: skip


if __name__ == "__main__":
    main()
