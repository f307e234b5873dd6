"""The package's parts import one way, top to bottom (docs/architecture.md, "Layers").

Every import counts, including those inside functions: a lazy import may keep torch off a device,
never hide an upward dependency. Run as a script to print the part-to-part graph:
`python tests/test_layers.py`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edgedistill"

# Bottom first. A part may import only parts listed before it.
LAYERS = [
    "core",  # torch-free floor: errors, atomic writes, JSON, spec, targets, artifact contract, quality
    "onnxtools",  # ONNX graph tools (checks, QDQ, pad folding, TensorRT rewrite)
    "backends",  # one module per runtime behind backends/base.py
    "models",  # generator families, registry, safe loading, embedded teachers (torch)
    "data",  # bundled photos/digits, degradations, folders, calibration sets, held-out inputs, image I/O
    "metrics",  # MACs/params, feature distances, inspection
    "runtime",  # open a model for running, timing loop, stats, report: what runs on a device
    "distiller",  # the distill step
    "datafree",  # data-free distillation of classifiers through a generator (DAFL, DFAD, BN matching)
    "exporter",  # the export step
    "profiler",  # the profile step (local or SSH)
    "search",  # students chosen by measured latency: search space, latency model, quality proxy
    "ship",  # run and bundle
    "pipeline",  # compress / demo: the steps chained
    "cli",  # the command line
    "__main__",
]
DEVICE_PARTS = ["core", "onnxtools", "backends", "runtime"]  # what SSH profiling ships (profiler/remote.py)


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def part_edges() -> dict[tuple[str, str], list[str]]:
    """(importer part, imported part) -> files doing it, for every import in the package."""
    edges: dict[tuple[str, str], list[str]] = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        if "templates" in f.parts:  # standalone files an app embeds, not package code
            continue
        me = _module_name(f)
        if len(me) < 2:
            continue  # edgedistill/__init__.py: the public API, above everything
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = me if f.name == "__init__.py" else me[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mods = [".".join([*base, *([node.module] if node.module else [])])]
                else:
                    mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                bits = mod.split(".")
                if bits[0] == "edgedistill" and len(bits) > 1 and bits[1] != me[1]:
                    edges.setdefault((me[1], bits[1]), []).append(str(f.relative_to(PACKAGE.parent)))
    return edges


def test_every_part_is_placed():
    parts = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    parts |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert parts == set(LAYERS), f"parts not in LAYERS: {parts - set(LAYERS)}; stale: {set(LAYERS) - parts}"


def test_imports_only_run_downwards():
    rank = {p: i for i, p in enumerate(LAYERS)}
    upward = [f"{a} -> {b} ({files[0]})" for (a, b), files in part_edges().items() if rank[b] >= rank[a]]
    assert not upward, "imports that go up or sideways:\n" + "\n".join(upward)


def test_device_parts_import_no_torch_at_module_level():
    """What ships to a device must import without torch: no top-level torch import in those folders."""
    offenders = []
    for part in DEVICE_PARTS:
        for f in sorted((PACKAGE / part).glob("*.py")):
            for node in ast.parse(f.read_text()).body:
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                if any(
                    n.split(".")[0] in {"torch", "torchmetrics", "torch_pruning", "sklearn", "skimage"}
                    for n in names
                ):
                    offenders.append(f"{f.relative_to(PACKAGE.parent)}: {names}")
    assert not offenders, offenders


if __name__ == "__main__":
    for (a, b), files in sorted(part_edges().items()):
        print(f"{a:>10} -> {b:<10} {len(files)} imports, e.g. {files[0]}")
    sys.exit(0)
