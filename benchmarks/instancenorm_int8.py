"""InstanceNorm teachers (every CycleGAN checkpoint): should the INT8 student keep InstanceNorm or
switch to BatchNorm, which folds into the convolutions?

    python benchmarks/instancenorm_int8.py                 # ~15 min on 2 cores
    python benchmarks/instancenorm_int8.py --teacher-steps 300 --steps 200   # quicker, noisier

1. Trains a CycleGAN-layout ResNet teacher here (InstanceNorm without affine, reflection padding,
   ngf 32, 6 blocks) for blind restoration on the bundled photos (L1 to the clean photo), and saves
   it as a plain state dict, as pytorch-CycleGAN-and-pix2pix does (`latest_net_G.pth`).
2. Writes a paired data folder of the same photos (A/ degraded, B/ clean).
3. Runs `compress` twice with the same recipe and steps, once per student norm, for ONNX Runtime
   INT8 and OpenVINO INT8 with the quality gate off (so the plain INT8 quality shows), and reads each
   artifact's PSNR vs its own fp32 student, the students' PSNR vs the teacher, and latency.

Writes benchmarks/results/instancenorm_int8.json and .md; prints the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from edgedistill.core.atomic import write_text_atomic
from edgedistill.data.bundled import bundled_photos, degrade, random_crops
from edgedistill.models import create
from edgedistill.pipeline.compress import CompressOptions, compress
from edgedistill.runtime.hostinfo import host_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
SCRATCH = ROOT / "scratch" / "instancenorm_int8"


def train_teacher(path: Path, steps: int, threads: int) -> dict:
    """A CycleGAN-layout restorer, L1 only (a brief teacher: the question is the student's norm)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = create("resnet", ngf=32, n_blocks=6, norm="instance")
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    photos, gen, t0 = bundled_photos("train"), torch.Generator().manual_seed(0), time.perf_counter()
    for step in range(steps):
        clean = random_crops(photos, 6, 64, gen)
        x = degrade(clean, gen) * 2 - 1
        loss = torch.nn.functional.l1_loss(net(x), clean * 2 - 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"teacher step {step}: L1 {loss.item():.4f}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return {"steps": steps, "final_l1": round(loss.item(), 4), "seconds": round(time.perf_counter() - t0, 1)}


def paired_folder(root: Path) -> Path:
    """A/ degraded and B/ clean versions of the bundled photos (same names)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(1)
    for sub in ("A", "B"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, photo in enumerate(bundled_photos("train") + bundled_photos("heldout")):
        clean = torch.from_numpy(photo).permute(2, 0, 1)[None]
        noisy = degrade(clean, gen)[0].permute(1, 2, 0).numpy()
        for sub, img in (("A", noisy), ("B", photo)):
            Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
                root / sub / f"{i:02d}.png"
            )
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-steps", type=int, default=800)
    ap.add_argument("--steps", type=int, default=400, help="distillation steps per student")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    host = host_info(args.threads)
    print(f"machine: {host.get('cpu')} ({', '.join(host.get('isa', []))}), {platform.machine()}", flush=True)

    teacher_path = SCRATCH / "latest_net_G.pth"
    teacher = {"reused": True}
    if not teacher_path.exists():
        teacher = train_teacher(teacher_path, args.teacher_steps, args.threads)
    data = paired_folder(SCRATCH / "photos")
    rows, results = [], {}
    for norm in ("instance", "batch"):
        opts = CompressOptions(
            teacher=f"resnet:{teacher_path}", targets=["x86-onnxruntime", "x86-openvino"], out=SCRATCH / norm,
            width=args.width, steps=args.steps, data=data, cache=0, size=(128, 128), min_psnr=None,
            threads=args.threads, profile_seconds=3.0, student_norm=norm,
        )  # fmt: skip
        report = compress(opts, log=lambda m: print(m, flush=True))
        results[norm] = report
        psnr_vs_teacher = {q["name"]: q["psnr_vs_teacher"] for q in report["quality"]}
        p50 = {m["name"]: m["stats"]["p50"] for m in report["latency"]["models"] if m.get("stats")}
        for name, manifest in report["artifacts"].items():
            rows.append({
                "student norm": norm,
                "artifact": name,
                "INT8 PSNR vs own fp32 (dB)": manifest["quality"]["psnr_vs_fp32"],
                "INT8 SSIM vs own fp32": manifest["quality"]["ssim_vs_fp32"],
                "student fp32 PSNR vs teacher (dB)": psnr_vs_teacher.get("student"),
                "INT8 PSNR vs teacher (dB)": psnr_vs_teacher.get(name),
                "p50 ms": p50.get(name),
                "student p50 ms (torch)": p50.get("student"),
            })  # fmt: skip
    out = {"machine": host, "teacher": teacher, "args": vars(args), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    write_text_atomic(
        RESULTS / "instancenorm_int8.json",
        json.dumps(out, indent=2, default=str).replace(f"{ROOT}/", "") + "\n",
    )  # paths relative to the checkout
    cols = list(rows[0])
    md = [
        f"Machine: {host.get('cpu')} ({', '.join(host.get('isa', []))}); teacher: CycleGAN-layout ResNet "
        f"(InstanceNorm, ngf 32, 6 blocks), {args.teacher_steps} L1 steps; students width {args.width}, "
        f"{args.steps} steps, 128x128, gate off.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
        *["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows],
    ]
    write_text_atomic(RESULTS / "instancenorm_int8.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
