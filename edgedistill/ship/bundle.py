"""`edgedistill bundle`: the zip an app embeds — model files, manifest, a standalone runner, docs.

The runner (templates/run_model.py) imports numpy and the runtime only, and reads the manifest for
everything model-specific, so the same file serves every bundle; the README is written per model.
The C++ app (templates/cpp/) is filled in per model instead: C++ has no JSON reader to lean on, so
the manifest's names, shapes and ranges are written into cpp/main.cpp as constants.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from edgedistill.core.artifact import MANIFEST, Artifact, member_path, read_manifest
from edgedistill.core.atomic import write_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec
from edgedistill.ship.run import size_multiple

TEMPLATES = Path(__file__).parent / "templates"
RUNNER = "run_model.py"
CPP_MAIN, CPP_CMAKE = "cpp/main.cpp", "cpp/CMakeLists.txt"
CPP_BACKENDS = ("openvino", "onnxruntime")  # runtimes the C++ app is written for
OV_HINTS = ("f32", "f16", "bf16")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # same bytes for the same artifact: bundles can be diffed and cached


@dataclass
class BundleResult:
    path: Path
    members: list[str]
    size: int


def bundle(artifact_dir: str | Path, out: str | Path) -> BundleResult:
    """Zip the artifact in `artifact_dir` with run_model.py, requirements.txt and README.md into `out`."""
    directory, out = Path(artifact_dir), Path(out)
    if not directory.is_dir():
        raise EdgeDistillError(
            f"{directory} is not an artifact directory: give one written by `edgedistill export`"
        )
    art = Artifact(directory, read_manifest(directory))
    if not art.spec:
        raise EdgeDistillError(
            f"{directory / MANIFEST} has no 'spec': re-run `edgedistill export` so the runner knows the I/O"
        )
    spec = GeneratorSpec.from_dict(art.spec)
    if out.suffix.lower() != ".zip" or out.is_dir():
        raise EdgeDistillError(f"--out {out}: give a file name ending in .zip")
    files = model_files(art)
    texts = {
        "README.md": readme(art, spec, files),
        RUNNER: (TEMPLATES / RUNNER).read_text(),
        "requirements.txt": requirements(art.manifest),
        **cpp_app(art, spec, files[0]),
    }

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, text in texts.items():
                zf.writestr(_info(name, 0o755 if name == RUNNER else 0o644), text)
            for name in [MANIFEST, *files]:
                with (directory / name).open("rb") as src, zf.open(_info(name, 0o644), "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)

    path = write_atomic(out, write)
    return BundleResult(path, [*texts, MANIFEST, *files], path.stat().st_size)


def model_files(art: Artifact) -> list[str]:
    """The manifest's files plus what loading them needs (an IR's .bin, a reduced build's op list)."""
    files = list(dict.fromkeys(art.manifest["files"]))
    for name in list(files):
        if name.endswith(".xml") and (art.dir / name).with_suffix(".bin").exists():
            files.append(str(Path(name).with_suffix(".bin")))
        if name.endswith(".ort") and (art.dir / "required_operators.config").exists():
            files.append("required_operators.config")
    files = list(dict.fromkeys(files))
    for name in files:
        if not member_path(art.dir, name).is_file():  # only files inside the directory travel
            raise EdgeDistillError(
                f"{art.dir / name} is listed in {MANIFEST} but missing: re-run `edgedistill export`"
            )
    return files


def requirements(manifest: dict[str, Any]) -> str:
    """What run_model.py imports: numpy and the runtime, no lower than the version that checked it."""
    backend = manifest["backend"]
    lines = ["numpy>=1.24"]
    if backend in ("onnxruntime", "openvino"):
        built = (manifest.get("versions") or {}).get(backend)
        floor = ".".join(built.split(".")[:2]) if built else None
        lines.append(f"{backend}>={floor}" if floor else backend)
    else:
        lines.append(f"# run_model.py does not run {backend}: build and load the engine on the device")
    lines.append("# pillow  # optional: JPEG input, resizing inputs to a static input shape")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- C++ app
_FIELD = re.compile(r"@([a-z0-9_]+)@")


def cpp_app(art: Artifact, spec: GeneratorSpec, model_file: str) -> dict[str, str]:
    """cpp/main.cpp and cpp/CMakeLists.txt for the artifact's runtime; none for TensorRT, whose
    engine is built on the device (the README's C/C++ section shows how to load it there)."""
    if art.backend not in CPP_BACKENDS:
        return {}
    cpp = TEMPLATES / "cpp"
    values = _cpp_values(art, spec, model_file)
    backend = fill((cpp / f"{art.backend}.cpp").read_text(), values)
    main = fill((cpp / "main.cpp").read_text(), {**values, "backend_code": backend})
    cmake = fill((cpp / f"CMakeLists.{art.backend}.txt").read_text(), values)
    return {CPP_MAIN: main, CPP_CMAKE: cmake}


def fill(text: str, values: dict[str, str]) -> str:
    """Replace each @field@ (CMake's configure_file style: neither C++ nor CMake code uses @)."""
    return _FIELD.sub(lambda m: values[m.group(1)], text)


def _cpp_values(art: Artifact, spec: GeneratorSpec, model_file: str) -> dict[str, str]:
    """The manifest's contract as C++ literals: the same numbers run_model.py reads at run time."""
    target = art.manifest.get("target") or {}
    inp = spec.inputs[0]
    size = _exported_size(art, spec)
    if target.get("dynamic_shape") is False:
        shape: list[int | str] = list(spec.input_shape(size if spec.kind == "image" else None, batch=1))
    else:
        shape = list(inp.shape)
    hint, f16_if_capable = ov_cpu_precision(art.manifest)
    (lo, hi), (olo, ohi) = spec.input_range, spec.output_range
    return {
        "backend": art.backend,
        "precision": art.precision,
        "model_file": _c_string(model_file),
        "input_name": _c_string(inp.name),
        "output_name": _c_string(spec.outputs[0].name if spec.outputs else "output"),
        "is_image": "true" if spec.kind == "image" else "false",
        "input_shape": ", ".join(str(d) if isinstance(d, int) else "-1" for d in shape),
        "default_h": str(size[0]),
        "default_w": str(size[1]),
        "multiple": str(size_multiple(spec)),
        "in_lo": repr(float(lo)),
        "in_hi": repr(float(hi)),
        "out_lo": repr(float(olo)),
        "out_hi": repr(float(ohi)),
        "device": _c_string(str(target.get("device") or "CPU")),
        "precision_hint": hint,
        "f16_if_capable": "true" if f16_if_capable else "false",
        "backend_include": {
            "openvino": "#include <openvino/openvino.hpp>",
            "onnxruntime": "#include <onnxruntime_cxx_api.h>",
        }[art.backend],
    }


def ov_cpu_precision(manifest: dict[str, Any]) -> tuple[str, bool]:
    """run_model.py's INFERENCE_PRECISION_HINT rule: (hint, whether an fp16 IR runs f16 only where
    the CPU reports FP16 — decided at run time, on the device)."""
    recorded = (manifest.get("backend_info") or {}).get("inference_precision")
    recorded = recorded or ((manifest.get("target") or {}).get("options") or {}).get("inference_precision")
    if recorded in OV_HINTS:
        return recorded, False
    precision = manifest.get("precision", "fp32")
    if precision == "bf16":
        return "bf16", False
    return "f32", precision == "fp16"


def _exported_size(art: Artifact, spec: GeneratorSpec) -> tuple[int, int]:
    target = art.manifest.get("target") or {}
    size = spec.default_size or target.get("input_size") or (256, 256)  # export records its size in the spec
    return int(size[0]), int(size[1])


def _c_string(text: str) -> str:
    """`text` inside a C++ string literal (JSON's escapes are C's for the characters names use)."""
    return json.dumps(text)[1:-1]


# ------------------------------------------------------------------------------------------- README
def readme(art: Artifact, spec: GeneratorSpec, files: list[str]) -> str:
    m = art.manifest
    target = m.get("target") or {}
    static = target.get("dynamic_shape") is False
    size = _exported_size(art, spec) if spec.kind == "image" else None
    shape = spec.input_shape(size, batch=1)
    model_file = files[0]
    runtime = {"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(art.backend, "the runtime")
    values = {
        "title": f"{spec.family or 'generator'} for {target.get('name', art.backend)} ({art.backend}, {art.precision})",
        "summary": _summary(m, target),
        "artifact": art.dir.name,
        "files_table": "\n".join(
            f"| `{f}` | {_describe(f, files[0], art)} |" for f in _listing(files, art.backend)
        ),
        "io": _io(spec, static, size),
        "python_usage": _python_usage(spec, art.backend),
        "runtime_name": runtime,
        "cpp": _cpp(art, spec, model_file, shape),
        "cpp_app": _cpp_app_usage(art, spec, model_file),
    }
    return Template((TEMPLATES / "bundle_readme.md").read_text()).substitute(values)


def _listing(files: list[str], backend: str) -> list[str]:
    app = [CPP_MAIN, CPP_CMAKE] if backend in CPP_BACKENDS else []
    return [*files, MANIFEST, RUNNER, "requirements.txt", *app, "README.md"]


def _describe(name: str, model_file: str, art: Artifact) -> str:
    if name == model_file:
        return f"the model ({art.backend}, {art.precision})"
    if name.endswith(".onnx") and model_file.endswith(".ort"):
        return f"the same model as ONNX ({model_file} was converted from it)"
    return {
        MANIFEST: "spec, target, precision, quality vs fp32 (run_model.py reads it)",
        RUNNER: "standalone runner: numpy + the runtime",
        "requirements.txt": "what run_model.py needs",
        "README.md": "this file",
        CPP_MAIN: "C++ app: load, pre-process, run, post-process, time (see C++ app)",
        CPP_CMAKE: "builds the C++ app (see C++ app)",
        "required_operators.config": "operators for a reduced ONNX Runtime build",
    }.get(name, "weights" if name.endswith(".bin") else "model file")


def _summary(m: dict[str, Any], target: dict[str, Any]) -> str:
    where = f"{target.get('name', '?')} ({target.get('device', '?')} {target.get('arch', '')})".replace(
        " )", ")"
    )
    line = f"Target {where}, precision {m.get('precision', 'fp32')}."
    q = m.get("quality") or {}
    if q.get("psnr_vs_fp32") is not None:
        line += f" Quality vs the fp32 model: PSNR {q['psnr_vs_fp32']:.2f} dB"
        line += f" on {q['samples']} held-out inputs." if q.get("samples") else "."
    kept = m.get("kept_higher_precision") or []
    if kept:
        line += f" {len(kept)} layer(s) kept at higher precision."
    return line


def _range_formula(lo: float, hi: float, to_model: bool) -> str:
    if to_model:
        if (lo, hi) == (-1.0, 1.0):
            return "x = pixel / 127.5 - 1"
        if (lo, hi) == (0.0, 1.0):
            return "x = pixel / 255"
        return f"x = pixel / 255 * {hi - lo:g} + {lo:g}"
    if (lo, hi) == (-1.0, 1.0):
        return "pixel = clip((y + 1) * 127.5, 0, 255)"
    if (lo, hi) == (0.0, 1.0):
        return "pixel = clip(y * 255, 0, 255)"
    return f"pixel = clip((y - {lo:g}) / {hi - lo:g} * 255, 0, 255)"


def _io(spec: GeneratorSpec, static: bool, size: tuple[int, int] | None) -> str:
    inp, out = spec.inputs[0], spec.outputs[0] if spec.outputs else None
    out_name = out.name if out else "output"
    lo, hi = spec.input_range
    olo, ohi = spec.output_range
    if spec.kind == "image":
        assert size is not None
        c = inp.shape[1]
        colors = {1: "one gray channel", 3: "RGB channel order"}.get(c, f"{c} channels")  # type: ignore[call-overload]
        if static:
            dims = f"`{spec.input_shape(size, batch=1)}` (static: resize/crop inputs to {size[0]}x{size[1]})"
        else:
            dims = (
                f"`{_dims(inp.shape)}`: batch N and H, W free (exported at {size[0]}x{size[1]}"
                + (f"; H and W multiples of {size_multiple(spec)}" if size_multiple(spec) > 1 else "")
                + ")"
            )
        first = (
            f"- input `{inp.name}`: float32, NCHW {dims}, {colors}, values in [{lo:g}, {hi:g}]: "
            f"`{_range_formula(lo, hi, True)}`"
        )
    else:
        shape = spec.input_shape(batch=1) if static else inp.shape
        first = (
            f"- input `{inp.name}`: float32 `{_dims(shape)}`, independent standard-normal samples N(0, 1)"
            + (" (batch 1: the shape is static)" if static else "")
        )
    out_dims = list(out.shape) if out else []
    if static and size:  # the same free names as the input's take the same static values
        out_dims = [
            {"N": 1, "H": size[0], "W": size[1]}.get(d, d) if isinstance(d, str) else d for d in out_dims
        ]
    out_shape = f"NCHW `{_dims(out_dims)}`" if out else "NCHW"
    second = (
        f"- output `{out_name}`: float32 {out_shape}, values in [{olo:g}, {ohi:g}]: "
        f"`{_range_formula(olo, ohi, False)}`, rounded to uint8"
    )
    return f"{first}\n{second}\n\nOne call turns one input into one output; there is no state between calls."


def _dims(shape: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _python_usage(spec: GeneratorSpec, backend: str) -> str:
    if backend == "tensorrt":
        return "# TensorRT: build the engine on the device first (below); run_model.py says how and stops"
    if spec.kind == "noise":
        return "python run_model.py --seed 0 --count 16 --output grid.png [--threads 2]"
    return "python run_model.py --input in.png --output out.png [--threads 2]"


def _cpp(art: Artifact, spec: GeneratorSpec, model_file: str, shape: list[int]) -> str:
    target = art.manifest.get("target") or {}
    numel = 1
    for d in shape:
        numel *= int(d)
    values = {
        "model_file": model_file,
        "input_name": spec.inputs[0].name,
        "output_name": spec.outputs[0].name if spec.outputs else "output",
        "shape_cpp": ", ".join(str(d) for d in shape),
        "rank": str(len(shape)),
        "numel": str(numel),
        "threads": str(target.get("threads") or 2),
        "device": str(target.get("device") or "CPU"),
        "precision_hint": _ov_hint(art),
        "ort_format_note": _ort_note(model_file, art),
        "build_command": _build_command(art, model_file),
    }
    name = {"onnxruntime": "cpp_onnxruntime.md", "openvino": "cpp_openvino.md"}.get(art.backend)
    return Template((TEMPLATES / (name or "cpp_tensorrt.md")).read_text()).substitute(values).rstrip() + "\n"


def _cpp_app_usage(art: Artifact, spec: GeneratorSpec, model_file: str) -> str:
    """The README's "C++ app": how to build and run cpp/ (templates/cpp/usage_*.md)."""
    if art.backend not in CPP_BACKENDS:
        return (
            f"No C++ app in this bundle: a {art.backend} engine is built on the device it runs on, "
            "then loaded as the C/C++ section above shows.\n"
        )
    values = _cpp_values(art, spec, model_file)
    values["size_note"] = _size_note(art, spec)
    values["input_step"] = (
        f"reads a picture, maps it as the I/O contract says (NCHW float32 in [{values['in_lo']}, "
        f"{values['in_hi']}])"
        if spec.kind == "image"
        else "draws its input z ~ N(0, 1)"
    )
    return fill((TEMPLATES / "cpp" / f"usage_{art.backend}.md").read_text(), values)


def _size_note(art: Artifact, spec: GeneratorSpec) -> str:
    h, w = _exported_size(art, spec)
    if spec.kind != "image":
        return (
            "; a noise generator needs no picture: without `--input z.f32` it draws z ~ N(0, 1) from "
            "seed 0 with C++'s std::mt19937 (not numpy's numbers)"
        )
    if (art.manifest.get("target") or {}).get("dynamic_shape") is False:
        return f", exactly {w}x{h} pixels (the input shape is static: resize pictures first)"
    m = size_multiple(spec)
    return " of any size" + (f" (center-cropped to multiples of {m})" if m > 1 else "")


def _ov_hint(art: Artifact) -> str:
    """OpenVINO's inference precision: what export recorded, else what the artifact's precision implies
    (an fp16 IR: f16, on a CPU that has it)."""
    hint, f16_if_capable = ov_cpu_precision(art.manifest)
    return "f16" if f16_if_capable else hint


def _ort_note(model_file: str, art: Artifact) -> str:
    if model_file.endswith(".ort"):
        has_ops = (art.dir / "required_operators.config").exists()
        return (
            f"`{model_file}` is in the ORT format: the same API loads it, from the full library or from a "
            "reduced build that holds only this model's operators"
            + (
                " (in the onnxruntime source tree: `./build.sh --config MinSizeRel --minimal_build "
                "--include_ops_by_config required_operators.config`)."
                if has_ops
                else "."
            )
        )
    return (
        "For a phone app, the ORT format loads faster and allows a reduced build: "
        f"`python -m onnxruntime.tools.convert_onnx_models_to_ort {model_file}` "
        "(or export with `--target arm64-mobile-ort`)."
    )


def _build_command(art: Artifact, model_file: str) -> str:
    """How to build the engine on the device with what the bundle holds (trtexec ships with TensorRT)."""
    info = art.manifest.get("backend_info") or {}
    flags = {"int8": " --int8 --fp16", "fp16": " --fp16"}.get(art.precision, "")
    trtexec = info.get("trtexec") or f"trtexec --onnx={model_file} --saveEngine=model.engine{flags}"
    lines = ["sh build.sh  # runs: " + trtexec] if "build.sh" in art.manifest["files"] else [trtexec]
    if info.get("build_command"):
        lines.append(f"# or, with edgedistill installed there: {info['build_command']}")
    return "\n".join(lines)


def _info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100000 | mode) << 16
    return info
