"""README's "Where it has run" table, written from the checks' own ledgers, never by hand.

    python scripts/where_it_ran.py            # rewrite the README section from the ledgers
    python scripts/where_it_ran.py --check    # exit 1 if README's section differs (the test does this)

Each check that runs artifacts somewhere (benchmarks/export_matrix.py, scripts/arm64_check.py,
tests/test_cpp_app.py, scripts/tensorrt_check.py) records what it did per target x precision in a
small JSON ledger, benchmarks/results/where_it_ran/<check>.json: when and where it ran (date, CPU
model and ISA, GPU, package versions), and per (target, precision, column) pass / fail / skip with a
one-line detail or reason (a test writes its ledger only when EDGEDISTILL_WHERE_IT_RAN names a
folder, so CI records nothing). This script reads every ledger there and rewrites the part of README.md
between the markers START and END, atomically. A cell no ledger covers says so ("—"); a cell that
cannot apply to a target (an x86 target on aarch64) says "n/a".

The checks import this file by path (scripts/ is no package); it needs edgedistill's core and
runtime/hostinfo only (no torch), so it also runs on a bare GPU machine with PYTHONPATH=. .
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a bare checkout, installed or not

from edgedistill.core.atomic import write_text_atomic  # noqa: E402
from edgedistill.core.errors import EdgeDistillError  # noqa: E402

FORMAT = "edgedistill.where_it_ran/1"
LEDGERS = ROOT / "benchmarks" / "results" / "where_it_ran"
README = ROOT / "README.md"
START, END = "<!-- where-it-ran:start -->", "<!-- where-it-ran:end -->"
COLUMNS = {
    "built": "built here (x86)",
    "run_x86": "run here (x86)",
    "run_aarch64": "run on aarch64 runtime (emulated)",
    "cpp_app": "run in the C++ app",
    "gpu": "run on GPU",
}
STATUSES = ("pass", "fail", "skip")
WORDS = {"pass": "yes", "fail": "**no**", "skip": "not run"}
# The letter each known check's cells carry, in legend order; an unknown check is shown by its name.
TAGS = {"export_matrix": "M", "arm64": "A", "cpp_app": "C", "tensorrt": "T"}
VERSIONS = ("edgedistill", "torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt")


# ------------------------------------------------------------------------------------ the ledger
@dataclass
class Ledger:
    """One check's record: where and when it ran, and its outcome per (target, precision, column)."""

    check: str
    what: str
    command: str
    date: str
    host: dict[str, Any]
    versions: dict[str, str]
    results: list[dict[str, str]] = field(default_factory=list)

    def add(self, target: str, precision: str, column: str, status: str, detail: str = "") -> None:
        """Record one cell; a second record of the same cell replaces the first."""
        entry = _entry({"target": target, "precision": precision, "column": column, "status": status,
                        "detail": detail}, self.check)  # fmt: skip
        key = (target, precision, column)
        self.results = [r for r in self.results if (r["target"], r["precision"], r["column"]) != key]
        self.results.append(entry)

    def to_dict(self) -> dict[str, Any]:
        order = {(t, p, c): i for i, (t, p, c) in enumerate(_cell_order(self.results))}
        results = sorted(self.results, key=lambda r: order[(r["target"], r["precision"], r["column"])])
        return {"format": FORMAT, "check": self.check, "what": self.what, "command": self.command,
                "date": self.date, "host": self.host, "versions": self.versions, "results": results}  # fmt: skip

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "ledger") -> Ledger:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise EdgeDistillError(f"{source}: not a where-it-ran ledger (format {got!r}, want {FORMAT!r})")
        missing = [
            k for k in ("check", "what", "command", "date", "host", "versions", "results") if k not in raw
        ]
        if missing:
            raise EdgeDistillError(
                f"{source}: ledger lacks {', '.join(missing)}: rerun the check that wrote it"
            )
        ledger = cls(raw["check"], raw["what"], raw["command"], raw["date"], dict(raw["host"]),
                     dict(raw["versions"]))  # fmt: skip
        for r in raw["results"]:
            ledger.results.append(_entry(r, source))
        if len({(r["target"], r["precision"], r["column"]) for r in ledger.results}) != len(ledger.results):
            raise EdgeDistillError(f"{source}: a cell is recorded twice: rerun the check that wrote it")
        return ledger

    def write(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")


def _entry(r: dict[str, Any], source: str) -> dict[str, str]:
    """A checked result row: known column and status, a reason for every skip or failure."""
    try:
        entry = {k: str(r[k]) for k in ("target", "precision", "column", "status")}
    except (KeyError, TypeError):
        raise EdgeDistillError(f"{source}: a result lacks target/precision/column/status: {r!r}") from None
    entry["detail"] = " ".join(str(r.get("detail") or "").split())  # one line in a table cell
    if entry["column"] not in COLUMNS:
        raise EdgeDistillError(f"{source}: unknown column {entry['column']!r} (one of {', '.join(COLUMNS)})")
    if entry["status"] not in STATUSES:
        raise EdgeDistillError(f"{source}: unknown status {entry['status']!r} (one of {', '.join(STATUSES)})")
    if entry["status"] != "pass" and not entry["detail"]:
        raise EdgeDistillError(f"{source}: a {entry['status']} of {entry['target']} {entry['precision']} "
                               f"({entry['column']}) needs its reason in `detail`")  # fmt: skip
    return entry


def _cell_order(results: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    cols = list(COLUMNS)
    return sorted({(r["target"], r["precision"], r["column"]) for r in results},
                  key=lambda k: (k[0], _precision_rank(k[1]), cols.index(k[2])))  # fmt: skip


def _precision_rank(precision: str) -> int:
    from edgedistill.core.targets import PRECISIONS

    return PRECISIONS.index(precision) if precision in PRECISIONS else len(PRECISIONS)


def host() -> dict[str, Any]:
    """The machine a check ran on, as a reader of the table needs it: CPU model and ISA, no hostname."""
    from edgedistill.runtime.hostinfo import cpuinfo, isa

    return {"arch": platform.machine(), "system": f"{platform.system()} {platform.release()}",
            "cpu": cpuinfo()["model"], "isa": isa(), "logical_cpus": cpuinfo()["logical_cpus"],
            "python": platform.python_version()}  # fmt: skip


def new_ledger(check: str, what: str, command: str | None = None) -> Ledger:
    """An empty ledger for a check starting now on this machine (UTC date, host, installed versions)."""
    from edgedistill.core.versions import installed_versions

    if command is None:  # how this process was started, the script relative to the checkout
        script = Path(sys.argv[0]).resolve()
        shown = script.relative_to(ROOT).as_posix() if script.is_relative_to(ROOT) else sys.argv[0]
        command = " ".join(["python", shown, *sys.argv[1:]])
    return Ledger(check, what, command, dt.datetime.now(dt.UTC).date().isoformat(), host(),
                  installed_versions(VERSIONS))  # fmt: skip


def read_ledger(path: str | Path) -> Ledger:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgeDistillError(
            f"{path}: cannot read the ledger ({exc}): rerun the check that writes it"
        ) from None
    return Ledger.from_dict(raw, str(path))


def read_ledgers(folder: str | Path = LEDGERS) -> list[Ledger]:
    """Every ledger in `folder`, in legend order (known checks first, then by name)."""
    ledgers = [read_ledger(p) for p in sorted(Path(folder).glob("*.json"))]
    names = [led.check for led in ledgers]
    if len(set(names)) != len(names):
        raise EdgeDistillError(
            f"{folder}: two ledgers for one check ({', '.join(names)}): keep one per check"
        )
    return sorted(ledgers, key=lambda led: (list(TAGS).index(led.check) if led.check in TAGS else len(TAGS),
                                            led.check))  # fmt: skip


# ------------------------------------------------------------------------------------- the table
def not_applicable(target: Any, column: str) -> bool:
    """Cells that no check could fill for this target: shown as n/a, not as a gap."""
    gpu = target.backend == "tensorrt"
    return {
        "run_x86": gpu,  # an engine runs on its GPU only
        "run_aarch64": target.arch != "aarch64" or gpu,  # qemu emulates a CPU, not a GPU
        "cpp_app": gpu,  # bundle writes no C++ app for TensorRT (the engine is built on the device)
        "gpu": not gpu,
    }.get(column, False)


def tag(check: str) -> str:
    return TAGS.get(check, check)


def cell(entries: list[tuple[str, dict[str, str]]]) -> str:
    parts = []
    for check, r in entries:
        text = WORDS[r["status"]] + (f": {r['detail']}" if r["detail"] else "")
        parts.append(f"{text} [{tag(check)}]".replace("|", "\\|"))
    return "; ".join(parts)


def legend(led: Ledger) -> str:
    h = led.host
    isa = ", ".join(h.get("isa") or []) or "no ISA flags read"
    gpu = f"; GPU {h['gpu']}" if h.get("gpu") else ""
    versions = ", ".join(f"{k} {v}" for k, v in led.versions.items())
    return (f"- [{tag(led.check)}] {led.what}: `{led.command}`, {led.date}, on {h.get('cpu', '?')} "
            f"({h.get('arch', '?')}; {isa}){gpu}; {versions}.")  # fmt: skip


def table(ledgers: list[Ledger], targets: dict[str, Any] | None = None) -> str:
    """The README section's body from the ledgers: one row per target x precision profiles/ list."""
    from edgedistill.core.targets import load_targets

    targets = load_targets() if targets is None else targets
    cells: dict[tuple[str, str, str], list[tuple[str, dict[str, str]]]] = {}
    for led in ledgers:
        for r in led.results:
            t = targets.get(r["target"])
            if t is None or r["precision"] not in t.precisions:
                raise EdgeDistillError(
                    f"ledger {led.check}: {r['target']} {r['precision']} is no target profile's "
                    "(targets/*.toml): rerun the check, or delete its ledger"
                )
            cells.setdefault((r["target"], r["precision"], r["column"]), []).append((led.check, r))
    lines = [
        f"<!-- written by `python scripts/where_it_ran.py` from {LEDGERS.relative_to(ROOT).as_posix()}/*.json; "
        "tests/test_where_it_ran.py fails when this differs from what it writes: rerun it, never edit -->",
        "",
        "Each cell says what a check did with that target's artifact at that precision, and which run it",
        'was (the letter; the runs are listed below the table). "—": no check has covered it yet; "n/a":',
        "cannot apply (an x86 target on aarch64, a TensorRT engine anywhere but its GPU). Emulated aarch64",
        "runs check correctness only: no time from them is a latency. "
        "[docs/where_it_runs.md](docs/where_it_runs.md) explains each check and how to rerun it.",
        "",
        "| target | precision | " + " | ".join(COLUMNS.values()) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for name in sorted(targets):
        t = targets[name]
        for precision in sorted(t.precisions, key=_precision_rank):
            row = []
            for column in COLUMNS:
                got = cells.get((name, precision, column))
                row.append(cell(got) if got else "n/a" if not_applicable(t, column) else "—")
            lines.append(f"| {name} | {precision} | " + " | ".join(row) + " |")
    lines += ["", "The runs:", ""] + [legend(led) for led in ledgers]
    if not ledgers:
        lines.append("- none yet: run the checks above")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ the README
def section(text: str, readme: Path = README) -> tuple[int, int]:
    """Where the generated part of README sits (after START's line, before END's)."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise EdgeDistillError(f"{readme}: needs one {START} line and one {END} line after it, around "
                               "the generated table")  # fmt: skip
    return text.index(START) + len(START) + 1, text.index(END)


def render(text: str, body: str, readme: Path = README) -> str:
    start, end = section(text, readme)
    return text[:start] + body + text[end:]


def update_readme(body: str, readme: Path = README) -> bool:
    """Put `body` between the markers; True when README changed (written atomically)."""
    text = readme.read_text()
    new = render(text, body, readme)
    if new == text:
        return False
    write_text_atomic(readme, new)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ledgers", type=Path, default=LEDGERS, help="the folder of <check>.json ledgers")
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if README differs")
    args = ap.parse_args(argv)
    try:
        body = table(read_ledgers(args.ledgers))
        if args.check:
            text = args.readme.read_text()
            if render(text, body, args.readme) != text:
                print(f"{args.readme}: the where-it-ran table differs from the ledgers: run "
                      "`python scripts/where_it_ran.py`", file=sys.stderr)  # fmt: skip
                return 1
            return 0
        changed = update_readme(body, args.readme)
    except EdgeDistillError as exc:
        print(f"where_it_ran: {exc}", file=sys.stderr)
        return 2
    print(f"{args.readme}: {'rewritten' if changed else 'already up to date'} from {args.ledgers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
