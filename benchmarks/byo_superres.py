"""A super-resolver a user brings, through `compress`: an ESPCN-style 2x network (PReLU +
PixelShuffle, written here as a user would, loaded as module:Class --weights), trained briefly on
the bundled photos, distilled into a pruned `.pt2` student, exported for ONNX Runtime INT8 and
OpenVINO INT8, scored and profiled.

    python benchmarks/byo_superres.py                       # ~10 min on 2 cores

The data is a paired folder made from the bundled photos: A/ bicubic 2x-downscaled, B/ the photo.
Writes benchmarks/results/byo_superres.json and .md; prints the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgedistill.core.atomic import write_text_atomic
from edgedistill.data.bundled import bundled_photos, random_crops
from edgedistill.pipeline.compress import CompressOptions, compress
from edgedistill.runtime.hostinfo import host_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
SCRATCH = ROOT / "scratch" / "byo_superres"

USER_MODULE = '''
import torch


class SuperRes2x(torch.nn.Module):
    """ESPCN-style 2x super-resolver: PReLU features, PixelShuffle upsampling, global residual."""

    def __init__(self, width=64):
        super().__init__()
        self.head = torch.nn.Sequential(torch.nn.Conv2d(3, width, 5, padding=2), torch.nn.PReLU(width))
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.PReLU(width),
            torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.PReLU(width),
        )
        self.up = torch.nn.Sequential(torch.nn.Conv2d(width, 3 * 4, 3, padding=1), torch.nn.PixelShuffle(2))

    def forward(self, x):
        base = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return (base + self.up(self.body(self.head(x)))).clamp(-1, 1)
'''


def downscale(hr: torch.Tensor) -> torch.Tensor:
    return F.interpolate(hr, scale_factor=0.5, mode="bicubic", align_corners=False, antialias=True).clamp(
        0, 1
    )


def train_teacher(module_dir: Path, weights: Path, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from superres_user import SuperRes2x  # the user's module, as the CLI imports it

    net = SuperRes2x(width=64)
    opt = torch.optim.Adam(net.parameters(), lr=5e-4)
    photos, gen, t0 = bundled_photos("train"), torch.Generator().manual_seed(0), time.perf_counter()
    for step in range(steps):
        hr = random_crops(photos, 8, 64, gen)
        loss = F.l1_loss(net(downscale(hr) * 2 - 1), hr * 2 - 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"teacher step {step}: L1 {loss.item():.4f}", flush=True)
    torch.save(net.state_dict(), weights)
    return {"steps": steps, "final_l1": round(loss.item(), 4), "seconds": round(time.perf_counter() - t0, 1)}


def paired_folder(root: Path) -> Path:
    from PIL import Image

    for sub in ("A", "B"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, photo in enumerate(bundled_photos("train") + bundled_photos("heldout")):
        h, w = (photo.shape[0] // 2) * 2, (photo.shape[1] // 2) * 2
        hr = torch.from_numpy(np.ascontiguousarray(photo[:h, :w])).permute(2, 0, 1)[None]
        lr = downscale(hr)[0].permute(1, 2, 0).numpy()
        for sub, img in (("A", lr), ("B", photo[:h, :w])):
            Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
                root / sub / f"{i:02d}.png"
            )
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-steps", type=int, default=600)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    host = host_info(args.threads)
    print(f"machine: {host['cpu']} (ISA {'+'.join(host['isa'])})", flush=True)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    (SCRATCH / "superres_user.py").write_text(USER_MODULE)
    sys.path.insert(0, str(SCRATCH))  # as PYTHONPATH would for `edgedistill compress superres_user:...`
    weights = SCRATCH / "sr.pth"
    teacher = (
        {"reused": True}
        if weights.exists()
        else train_teacher(SCRATCH, weights, args.teacher_steps, args.threads)
    )
    data = paired_folder(SCRATCH / "photos")
    opts = CompressOptions(
        teacher="superres_user:SuperRes2x", targets=["x86-onnxruntime", "x86-openvino"], out=SCRATCH / "c",
        width=args.width, steps=args.steps, data=data, cache=0, size=(128, 128), threads=args.threads,
        profile_seconds=3.0, kwargs={"width": 64}, weights=weights,
    )  # fmt: skip
    report = compress(opts, log=lambda m: print(m, flush=True))
    out = {"machine": host, "teacher": teacher, "args": vars(args), "report": report}
    RESULTS.mkdir(exist_ok=True)
    write_text_atomic(
        RESULTS / "byo_superres.json", json.dumps(out, indent=2, default=str).replace(f"{ROOT}/", "") + "\n"
    )  # paths relative to the checkout
    md = [
        f"Machine: {host['cpu']} (ISA {'+'.join(host['isa'])}). Teacher: ESPCN-style 2x super-resolver "
        f"(width 64), {args.teacher_steps} L1 steps on the bundled photos; student: pruned to width "
        f"{args.width}, {args.steps} steps; input 128x128 -> output 256x256.",
        "",
        report["markdown_table"],
        "",
        f"Student metrics: {json.dumps(report['student_metrics'])}",
    ]
    write_text_atomic(RESULTS / "byo_superres.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
