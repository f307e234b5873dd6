"""README's "Where it has run" table comes from the checks' ledgers (scripts/where_it_ran.py), never by hand.

The table in README must be exactly what the script writes from the committed ledgers in
benchmarks/results/where_it_ran/; a ledger survives a write and a read unchanged; bad ledgers are
refused with one line; and scripts/tensorrt_check.py runs as it must on the lent GPU machine, where
neither OpenVINO nor NNCF is installed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgedistill.core.errors import EdgeDistillError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wir():
    module = sys.modules.get("where_it_ran")
    if module is None:  # registered before it runs: its dataclass looks its module up
        spec = importlib.util.spec_from_file_location("where_it_ran", ROOT / "scripts" / "where_it_ran.py")
        module = sys.modules["where_it_ran"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def sample(wir, check: str = "arm64"):
    led = wir.new_ledger(check, "a check", "python scripts/x.py --flag")
    led.add("arm64-onnxruntime", "int8", "run_aarch64", "pass", "cortex-a76 max abs 0.03 ≤ 0.1")
    led.add("arm64-onnxruntime", "fp32", "built", "fail", "gate 10 dB < 35 | forced")
    led.add("jetson-orin-nano", "int8", "gpu", "skip", "no TensorRT Python package")
    return led


def test_readme_table_is_what_the_committed_ledgers_give(wir):
    """Edit a ledger by rerunning its check, then `python scripts/where_it_ran.py`; never the README."""
    ledgers = wir.read_ledgers(wir.LEDGERS)
    assert ledgers, f"no ledgers in {wir.LEDGERS}: run the checks (docs/where_it_runs.md)"
    text = wir.README.read_text()
    start, end = wir.section(text)
    assert text[start:end] == wir.table(ledgers), (
        "README's where-it-ran table differs: run scripts/where_it_ran.py"
    )
    # every committed cell is in the table, marked with its check's letter
    for led in ledgers:
        for r in led.results:
            row = next(
                line
                for line in text[start:end].splitlines()
                if line.startswith(f"| {r['target']} | {r['precision']} |")
            )
            assert f"[{wir.tag(led.check)}]" in row, (led.check, r)


def test_a_ledger_round_trips_and_a_cell_is_recorded_once(wir, tmp_path):
    led = sample(wir)
    led.add("arm64-onnxruntime", "fp32", "built", "pass", "model.onnx")  # replaces the failure
    assert len(led.results) == 3
    path = led.write(tmp_path / "arm64.json")
    back = wir.read_ledger(path)
    assert back.to_dict() == led.to_dict()
    assert json.loads(path.read_text())["format"] == wir.FORMAT
    assert back.host["cpu"] and back.date == led.date and back.versions == led.versions
    assert wir.table([back]) == wir.table([led])


def test_the_table_shows_each_check_n_a_and_gaps(wir):
    arm, trt = sample(wir), sample(wir, "tensorrt")
    body = wir.table([arm, trt])
    lines = body.splitlines()
    row = next(line for line in lines if line.startswith("| arm64-onnxruntime | int8 |"))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[4] == "yes: cortex-a76 max abs 0.03 ≤ 0.1 [A]; yes: cortex-a76 max abs 0.03 ≤ 0.1 [T]"
    assert cells[2] == "—" and cells[6] == "n/a"  # not built by these ledgers; no GPU for a CPU target
    fail = next(line for line in lines if line.startswith("| arm64-onnxruntime | fp32 |"))
    assert "**no**: gate 10 dB < 35 \\| forced [A]" in fail  # a pipe in a detail cannot split the cell
    gpu = next(line for line in lines if line.startswith("| jetson-orin-nano | int8 |"))
    assert gpu.endswith(
        "| not run: no TensorRT Python package [A]; not run: no TensorRT Python package [T] |"
    )
    x86 = next(line for line in lines if line.startswith("| x86-openvino | bf16 |"))
    assert x86.count("n/a") == 2 and x86.count("—") == 3
    assert sum(line.startswith("- [") for line in lines) == 2


def test_bad_ledgers_are_refused_with_one_line(wir, tmp_path):
    led = sample(wir)
    with pytest.raises(EdgeDistillError, match="needs its reason"):
        led.add("x86-openvino", "int8", "cpp_app", "skip")
    with pytest.raises(EdgeDistillError, match="unknown column"):
        led.add("x86-openvino", "int8", "phone", "pass")
    with pytest.raises(EdgeDistillError, match="unknown status"):
        led.add("x86-openvino", "int8", "gpu", "maybe", "?")
    led.add("x86-openvino", "int4", "built", "pass")  # a precision no profile has: caught by the table
    with pytest.raises(EdgeDistillError, match="x86-openvino int4 is no target profile's"):
        wir.table([led])
    (tmp_path / "old.json").write_text('{"format": "something/0"}')
    with pytest.raises(EdgeDistillError, match="not a where-it-ran ledger"):
        wir.read_ledgers(tmp_path)
    raw = sample(wir).to_dict()
    raw["results"].append(dict(raw["results"][0]))
    (tmp_path / "old.json").write_text(json.dumps(raw))
    with pytest.raises(EdgeDistillError, match="recorded twice"):
        wir.read_ledgers(tmp_path)


def test_the_script_rewrites_only_between_the_markers(wir, tmp_path):
    ledgers = tmp_path / "ledgers"
    sample(wir).write(ledgers / "arm64.json")
    readme = tmp_path / "README.md"
    before, after = "# title\n\n## Where it has run\n\n", "\n## Next\n\ntext\n"
    readme.write_text(f"{before}{wir.START}\nhand-written\n{wir.END}\n{after}")
    argv = ["--ledgers", str(ledgers), "--readme", str(readme)]
    assert wir.main([*argv, "--check"]) == 1  # differs: --check says so, changes nothing
    assert "hand-written" in readme.read_text()
    assert wir.main(argv) == 0
    text = readme.read_text()
    assert text.startswith(before + wir.START + "\n") and text.endswith(wir.END + "\n" + after)
    assert "hand-written" not in text and "[A]" in text
    assert wir.main([*argv, "--check"]) == 0 and readme.read_text() == text
    readme.write_text(text.replace(wir.END, ""))
    assert wir.main(argv) == 2  # no end marker: one line, README untouched
    assert wir.END not in readme.read_text()


# The lent GPU machine has torch, onnx, onnxruntime, numpy, rich, typer, safetensors, scikit-image,
# scikit-learn and pillow, and the checkout on PYTHONPATH: nothing else is importable there.
GPU_MACHINE = """
import importlib.abc, importlib.machinery, importlib.util, runpy, sys
ABSENT = {"openvino", "nncf", "onnxslim", "torchmetrics", "torch_pruning", "matplotlib", "pytest",
          "tensorrt", "cuda"}
CARRIED = sys.argv[1]
probing = []
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top not in ABSENT:
            return None
        if top == "onnxslim" and CARRIED in sys.path:  # only the copy that travels with the checkout
            return importlib.machinery.PathFinder.find_spec(name, path or [CARRIED])
        if not probing:
            print(f"ABSENT {name}", file=sys.stderr)
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
installed = importlib.util.find_spec
def find_spec(name, package=None):  # asking is not importing: an absent module is None
    probing.append(name)
    try:
        return installed(name, package)
    except ModuleNotFoundError:
        return None
    finally:
        probing.pop()
importlib.util.find_spec = find_spec
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_tensorrt_check_runs_without_openvino_nncf_or_a_gpu(tmp_path):
    """What the GPU machine lacks is never imported; it says what is missing, still exports and runs
    the ONNX under ONNX Runtime, and records built / not run on GPU in its ledger; exit 3."""
    deps = tmp_path / "deps"
    script = ROOT / "scripts" / "tensorrt_check.py"
    pack = subprocess.run([sys.executable, str(script), "--pack-deps", "--deps", str(deps)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert pack.returncode == 0 and (deps / "onnxslim" / "__init__.py").is_file(), pack.stderr
    ledger = tmp_path / "tensorrt.json"
    done = subprocess.run(
        [sys.executable, "-c", GPU_MACHINE, str(deps), str(script), "--out", str(tmp_path / "out"),
         "--ledger", str(ledger), "--deps", str(deps)],
        capture_output=True, text=True, timeout=170, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    absent = {
        line.split()[1].split(".")[0] for line in done.stderr.splitlines() if line.startswith("ABSENT ")
    }
    assert not absent & {"openvino", "nncf", "onnxslim"}, absent
    missing = [line for line in done.stderr.splitlines() if line.startswith("missing for the GPU half: ")]
    assert any("TensorRT Python package" in line for line in missing), done.stderr
    assert any("libnvinfer" in line for line in missing) and any("cuda-python" in line for line in missing)
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["tensorrt"]["onnxslim"].startswith("carried")
    for precision in ("fp16", "int8"):
        row = result["artifacts"][precision]
        assert row["onnxruntime"]["ran"] and row["onnxruntime"]["output_std"] > 0.05, row
    assert result["artifacts"]["int8"]["qdq_nodes"]["QuantizeLinear"] >= 10
    cells = {(r["precision"], r["column"]): r for r in json.loads(ledger.read_text())["results"]}
    assert {k: r["status"] for k, r in cells.items()} == {
        ("fp16", "built"): "pass", ("fp16", "gpu"): "skip", ("int8", "built"): "pass", ("int8", "gpu"): "skip"
    }  # fmt: skip
    assert "no TensorRT Python package" in cells[("int8", "gpu")]["detail"]
