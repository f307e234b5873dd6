"""`edgedistill demo`: the whole job on the embedded photo-restoration teacher, no data or arguments.

compress photo-restore -> a 4.5x narrower student (~19x fewer MACs) -> ONNX Runtime INT8 and OpenVINO
INT8 for this x86 CPU -> teacher, student and both artifacts profiled side by side, interleaved.
Settings are chosen to finish in under 10 minutes, set-up included, on the slowest machine this
project runs on (2 AMD Zen3 cores, AVX2 only): training is budgeted by time (DEMO_TRAIN_S), so a
faster machine trains more steps in it (up to 1000) and a slower one fewer; the log says how many.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from edgedistill.pipeline.compress import CompressOptions, compress

DEMO_TARGETS = ["x86-onnxruntime", "x86-openvino"]
DEMO_TRAIN_S = 250.0  # the main distillation phase, its validations included; caching, QAT, export and profiling come on top
DEMO_QAT_STEPS = 80
DEMO_EVAL = 128  # held-out crops scored after training (512 by default: recipe comparisons need them)


def demo_options(out: Path, force: bool = False) -> CompressOptions:
    return CompressOptions(
        teacher="photo-restore",
        targets=DEMO_TARGETS,
        out=out,
        width=0.22,
        steps=1000,
        cache=384,
        qat_steps=DEMO_QAT_STEPS,
        distill_options={"time_budget_s": DEMO_TRAIN_S, "eval_samples": DEMO_EVAL},
        precision="int8",
        calib_size=48,
        threads=2,
        profile_seconds=3.0,
        force=force,
    )


def run_demo(out: Path, console: Console, force: bool = False) -> dict[str, Any]:
    console.print(
        "[bold]edgedistill demo[/]: distill the embedded photo-restore teacher, export the student for "
        "ONNX Runtime INT8 and OpenVINO INT8, profile all side by side"
    )
    return compress(demo_options(out, force), log=lambda m: console.print(m, highlight=False))
