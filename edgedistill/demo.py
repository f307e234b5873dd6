"""`edgedistill demo`: the embedded teachers on bundled data, end to end as far as the pipeline goes.

Today: restore the held-out photos with the photo teacher, sample the digits teacher, print each
teacher's size, cost and quality, and distill the digits teacher briefly. Export/profile join later.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from edgedistill.distill.bundled import bundled_photos, center_crop, degrade
from edgedistill.errors import EdgeDistillError
from edgedistill.imageio import save_grid
from edgedistill.metrics.complexity import measure_complexity
from edgedistill.metrics.quality import psnr
from edgedistill.models.embedded import embedded_teachers


def run_demo(out: Path, console: Console) -> dict[str, dict]:
    teachers = embedded_teachers()
    if not teachers:
        raise EdgeDistillError(
            "no embedded teachers in this install; run scripts/train_teachers.py or reinstall"
        )
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    for name, teacher in teachers.items():
        spec, net = teacher.spec, teacher.generator()
        size = spec.default_size or (256, 256)
        with torch.no_grad():
            if spec.kind == "image":
                clean = torch.stack([center_crop(p, size[0]) for p in bundled_photos("heldout")])
                degraded = degrade(clean, torch.Generator().manual_seed(123))
                x = spec.to_input(degraded)
            else:
                x = spec.example_inputs(batch=32, seed=7)[0]
            t0 = time.perf_counter()
            y = spec.to_pixels(net(x))
            wall_ms = (time.perf_counter() - t0) * 1000 / x.shape[0]
        cost = measure_complexity(net, spec.example_inputs(size=size))
        row = {
            "params": cost.params,
            "macs": cost.macs,
            "size": list(size),
            "ms_per_image": round(wall_ms, 1),
        }
        if spec.kind == "image":
            row["psnr_input"] = round(psnr(degraded, clean), 2)
            row["psnr_output"] = round(psnr(y, clean), 2)
            grid = save_grid([degraded, y, clean], out / f"{name}.png")
        else:
            grid = save_grid(list(y.split(8)), out / f"{name}.png")
        row["grid"] = str(grid)
        results[name] = row

    table = Table(title="embedded teachers (torch eager, fp32, this machine)")
    for col in ("teacher", "input", "params", "GMACs", "ms/image", "PSNR in → out (dB)"):
        table.add_column(col, no_wrap=True)
    for name, r in results.items():
        quality = f"{r['psnr_input']} → {r['psnr_output']}" if "psnr_output" in r else "-"
        table.add_row(name, "x".join(map(str, r["size"])), f"{r['params'] / 1e6:.2f}M", f"{r['macs'] / 1e9:.2f}",
                      f"{r['ms_per_image']}", quality)  # fmt: skip
    console.print(table)
    for name, r in results.items():
        console.print(f"{name} samples: {r['grid']}", highlight=False)
    console.print("rows of the photo grid: degraded input | teacher output | clean target")
    results["digits-student"] = distill_digits(out / "digits-student", console)
    return results


def distill_digits(run_dir: Path, console: Console) -> dict:
    """A short distillation of the digits teacher into a 4x narrower student (about a minute)."""
    import json
    import shutil

    from edgedistill.distill.api import distill
    from edgedistill.distill.config import DistillConfig

    shutil.rmtree(run_dir, ignore_errors=True)  # the demo owns its output folder
    cfg = DistillConfig(
        teacher="digits-dcgan", out=str(run_dir), width=0.25, steps=600, cache=1024, lambda_adv=0.0
    )
    distill(cfg)
    m = json.loads((run_dir / "metrics.json").read_text())
    console.print(
        f"digits student ({m['macs_ratio']}x fewer MACs, {m['steps']} steps, {m['wall_s']} s): "
        f"PSNR vs teacher {m['psnr_vs_teacher']} dB, feature distance {m['feature_distance']} "
        f"(teacher {m['feature_distance_teacher']}); run directory {run_dir}"
    )
    return m
