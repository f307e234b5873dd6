"""Where a PixelShuffle upsampler's BatchNorm sits, and what ONNX Runtime INT8 makes of it.

    python benchmarks/shuffle_norm.py      # ~2 min

The ORT full-budget searched student (photo-restore, widths 32-64-128-64-32, 3x3 stem/head, 2
depthwise-separable blocks, PixelShuffle), inherited from the embedded teacher, in two forms:
"before" as edgedistill builds it (conv -> BatchNorm per phase -> ReLU -> DepthToSpace) and "after"
(conv -> DepthToSpace -> BatchNorm -> ReLU, as families stacked it until then). Each is compiled as the
search compiles a QAT student for x86-onnxruntime (INT8, no layer kept fp32) and as fp32; the four
are profiled together (2 threads, 256x256, interleaved). Prints each form's INT8 and fp32 ms, its
INT8 speed-up and the ops ONNX Runtime runs outside int8; writes benchmarks/results/shuffle_norm.md/.json.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

from torch import nn

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.targets import get_target
from edgedistill.distiller.student import make_student_from_arch
from edgedistill.models.embedded import embedded_teachers
from edgedistill.models.ops import PixelShuffleUp
from edgedistill.profiler.api import profile
from edgedistill.runtime.hostinfo import host_info
from edgedistill.search.latency_compile import as_qat_export, compile_whole

RESULTS = Path(__file__).parent / "results"
ARCH = {
    "widths": [32, 64, 128, 64, 32],
    "upsample": "pixelshuffle",
    "block": "dwsep",
    "n_blocks": 2,
    "kernel": 3,
}
FLOAT_OPS = ("BatchNormalization", "DequantizeLinear", "QuantizeLinear")  # what int8 did not absorb


def norm_after_shuffle(student: nn.Module) -> nn.Module:
    """The student with each PixelShuffle's BatchNorm (one per channel: phase 0's) and ReLU after it."""
    for parent in list(student.modules()):
        for name, up in list(parent.named_children()):
            if isinstance(up, PixelShuffleUp) and isinstance(up.norm, nn.BatchNorm2d):
                bn = nn.BatchNorm2d(up.norm.num_features // 4).eval()
                for key, value in up.norm.state_dict().items():
                    bn.state_dict()[key].copy_(value[::4] if value.ndim else value)
                setattr(parent, name, nn.Sequential(up.conv, up.shuffle, bn, up.act))
    return student


def ops_outside_int8(art: Path) -> dict[str, int]:
    """Ops of ONNX Runtime's optimized graph that are not int8 kernels (BatchNorm, Q/DQ around fp32)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(art / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        ops = Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    return {op: ops[op] for op in FLOAT_OPS if ops[op]}


def main() -> None:
    teacher = embedded_teachers()["photo-restore"]
    int8 = as_qat_export(get_target("x86-onnxruntime", "int8"))
    fp32 = get_target("x86-onnxruntime", "fp32")
    models, outside = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for form in ("before", "after"):
            student, spec = make_student_from_arch(teacher.generator(), teacher.spec, ARCH)
            student = student.eval() if form == "before" else norm_after_shuffle(student.eval())
            for tgt, precision in ((int8, "int8"), (fp32, "fp32")):
                art = compile_whole(student, spec, tgt, (256, 256), Path(tmp) / f"{form}-{precision}")
                models[f"BN {form} shuffle {precision}"] = str(art)
            outside[form] = ops_outside_int8(Path(models[f"BN {form} shuffle int8"]))
        report = profile(models, threads=2, min_time=10, layers=0, size=(256, 256), roofline=False, progress=False,
                         md_path=RESULTS / "shuffle_norm.md")  # fmt: skip
    p50 = {m.name: m.stats.p50 for m in report.models if m.stats}
    host = host_info(2)
    print(f"{host['cpu']} ({', '.join(host['isa'])}), 2 threads, 256x256")
    rows = {}
    for form in ("before", "after"):
        i8, f32 = p50[f"BN {form} shuffle int8"], p50[f"BN {form} shuffle fp32"]
        rows[form] = {"int8_ms": i8, "fp32_ms": f32, "int8_speedup": f32 / i8, "outside_int8": outside[form]}
        print(f"BN {form:6s} shuffle: int8 {i8:6.2f} ms  fp32 {f32:6.2f} ms  speed-up {f32 / i8:.2f}x  "
              f"outside int8: {outside[form] or 'nothing'}")  # fmt: skip
    print(f"int8 before/after: {rows['before']['int8_ms'] / rows['after']['int8_ms']:.3f}")
    write_text_atomic(
        RESULTS / "shuffle_norm.json", json.dumps({"host": host, "arch": ARCH, "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
