"""Train the embedded classifier teachers for data-free distillation (issue 14). A few minutes each.

    python scripts/train_classifiers.py digits    # LeNet-5 (width 2) on scikit-learn digits at 32x32
    python scripts/train_classifiers.py shapes    # small ResNet on the procedural shapes set

Only the 'train' split is used; held-out accuracy is measured once at the end and recorded in the
shipped model.json. Files go to edgedistill/models/embedded/NAME/ (fp16 safetensors, model.json,
a grid of training samples).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.spec import spec_for_family
from edgedistill.data.bundled import digits_images
from edgedistill.data.shapes import CLASSES, shapes_images
from edgedistill.datafree.supervised import accuracy, train_supervised
from edgedistill.models import create
from edgedistill.models.weights import save_weights

EMBEDDED = Path(__file__).resolve().parents[1] / "edgedistill" / "models" / "embedded"

TEACHERS = {
    "digits": dict(
        name="digits-classifier",
        family="lenet",
        kwargs={"in_channels": 1, "classes": 10, "width": 2.0, "image_size": 32},
        data="scikit-learn digits (8x8 upsampled bicubic to 32x32, [-1, 1]), the fixed 85% train split",
        steps=1500,
        batch=64,
        lr=2e-3,
        flip=False,
        classes=[str(i) for i in range(10)],
    ),
    "shapes": dict(
        name="shapes-classifier",
        family="resnet_classifier",
        kwargs={
            "in_channels": 3,
            "classes": 10,
            "width": 1.0,
            "blocks": 1,
            "image_size": 32,
            "stem_stride": 2,
        },
        data="procedural shapes set (edgedistill/data/shapes.py), the 10 000-image train split",
        steps=2500,
        batch=96,
        lr=3e-3,
        flip=True,
        classes=list(CLASSES),
    ),
}


def load_split(which: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return digits_images(split) if which == "digits" else shapes_images(split)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=sorted(TEACHERS))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", type=int, default=1)  # 1 beats 2 on a shared machine
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TEACHERS[args.which]
    steps = args.steps or cfg["steps"]
    x, y = load_split(args.which, "train")
    net = create(cfg["family"], **cfg["kwargs"])
    t0 = time.time()

    def report(step: int, loss: float) -> None:
        if step % 100 == 0 or step == steps - 1:
            print(
                json.dumps({"step": step, "loss": round(loss, 4), "s": round(time.time() - t0, 1)}),
                flush=True,
            )

    train_supervised(
        net, x, y, steps, batch=cfg["batch"], lr=cfg["lr"], flip=cfg["flip"], seed=0, on_step=report
    )
    seconds = time.time() - t0
    xh, yh = load_split(args.which, "heldout")
    acc_h, acc_t = accuracy(net, xh, yh), accuracy(net, x, y)
    print(json.dumps({"heldout_acc": acc_h, "train_acc": acc_t, "seconds": round(seconds, 1)}), flush=True)
    out = EMBEDDED / cfg["name"]
    out.mkdir(parents=True, exist_ok=True)
    save_weights(net, out / "model.safetensors", dtype=torch.float16)
    spec = spec_for_family(cfg["family"], cfg["kwargs"])
    spec.input_range = (-1.0, 1.0)
    spec.provenance = {
        "trained_by": f"scripts/train_classifiers.py {args.which}",
        "data": cfg["data"],
        "dataset": args.which,
        "class_names": cfg["classes"],
        "steps": steps,
        "batch": cfg["batch"],
        "loss": "cross-entropy, AdamW (cosine), random shifts" + (" + flips" if cfg["flip"] else ""),
        "quality": {"heldout_top1": round(acc_h, 4), "train_top1": round(acc_t, 4), "heldout_n": len(yh)},
        "train_seconds": round(seconds, 1),
    }
    spec.save(out / "model.json")
    write_text_atomic(out / "train_log.json", json.dumps(spec.provenance, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
