"""The latency table: measured blocks and the whole-model fit, cached per target and machine.

One JSON file per target, precision, host, threads and runtime version (all in its name's digest),
and for this machine its CPU model and ISA too (a cloud VM keeps its hostname on another CPU, and a
Zen3 table read on a Zen4 would be off by 2-4x), so a table is never read for a machine or runtime
it was not measured on; the search reuses it across every candidate with the same blocks. TABLE_FORMAT is part of the digest: a fit whose form
changed is refitted, never read under the new form.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.targets import Target
from edgedistill.runtime.hostinfo import cpuinfo, isa
from edgedistill.search.block_timing import BlockTiming
from edgedistill.search.blocks import Block
from edgedistill.search.latency_fit import is_upsampling, whole_ms

# 10: ORT x86 INT8 convs channel-aligned (onnxtools/qdq_align.py); 9: whole models under 2 ms, and the speed anchor always, timed hot (whole_timing.time_compiled); 8: every timing session carries the speed anchor (search/speed_anchor.py), its times scaled to the
# table's first session; 7: OpenVINO's QAT-form blocks and models compiled from QDQ ONNX (search/latency_compile.py); 6: blocks timed in their carrier (blocks.block_model), their own kernels only; 5: blocks timed in
# interleaved rounds, fits per reference norm; 4: the fit scales upsampling blocks
# apart (d); 3: one scale on the blocks (c)
TABLE_FORMAT = 10
ANCHOR_SEEN = 64  # the speed anchor's times kept per timing kind: the typical speed is a level of them


def log_mean(xs: Sequence[float]) -> float:
    return math.exp(statistics.fmean(math.log(x) for x in xs))


def middle_log_mean(xs: Sequence[float]) -> float:
    """The geometric mean of the middle half (a quarter cut from each end, at least one of four)."""
    s = sorted(xs)
    cut = len(s) // 4
    return log_mean(s[cut : len(s) - cut])


# A shared VM's anchor times are not one bell: on a 2-core Zen3 they fell in two modes (5.3-6.0 and
# 7.1-8.4 ms, a third and two thirds of the minutes), elsewhere one mode with a rare 1.8x session. Replayed
# against re-measures (benchmarks/results/typical_level.md), the median read 3-5 % over them in two
# modes, the log mean 7 % over after one outlier, the lower quartile 7-10 % under; the log mean of the
# middle half was within 3 % on both, with as many readings within 10 % as the best level on each.
TYPICAL_LEVEL = middle_log_mean


@dataclass
class Prediction:
    """A predicted latency and what it is made of."""

    ms: float
    blocks_ms: float
    overhead_ms: float
    kernels: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # per distinct block: desc, count, ms, precision
    table: str = ""
    up_ms: float = 0.0  # of blocks_ms, the upsampling blocks' (scaled apart by the fit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ms": round(self.ms, 4),
            "blocks_ms": round(self.blocks_ms, 4),
            "up_ms": round(self.up_ms, 4),
            "overhead_ms": round(self.overhead_ms, 4),
            "kernels": self.kernels,
            "rows": self.rows,
            "table": self.table,
        }


class LatencyTable:
    """Per-block ms and the overhead fit for one target + precision + host + threads + runtime."""

    def __init__(self, path: Path, meta: dict[str, Any], data: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.data = data

    @classmethod
    def open(
        cls, tgt: Target, host: str | None, threads: int | None, cache_dir: str | Path | None = None
    ) -> LatencyTable:
        """The table for this target and machine, read from the cache when its meta matches."""
        runtime = _runtime_version(tgt.backend) if host is None else None
        meta = {
            "format": TABLE_FORMAT,
            "target": tgt.name,
            "precision": tgt.precision,
            "backend": tgt.backend,
            "host": host or f"local:{platform.node()}",
            "cpu": _local_cpu() if host is None else None,
            "threads": threads or tgt.threads,
            "runtime": runtime,
            "options": tgt.options,
        }
        digest = hashlib.sha1(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:10]
        name = f"{tgt.name}-{tgt.precision}-{_slug(meta['host'])}-{digest}.json"
        path = Path(cache_dir or default_cache_dir()) / name
        data: dict[str, Any] = {"blocks": {}, "overhead": {}, "anchor": {}}
        if path.is_file():
            try:
                old = json.loads(path.read_text())
                if old.get("meta") == json.loads(json.dumps(meta, default=str)):
                    data = {k: old.get(k, {}) for k in ("blocks", "overhead", "anchor")}
            except (OSError, json.JSONDecodeError):
                pass  # a broken cache is remeasured, never trusted
        return cls(path, meta, data)

    def block(self, key: str) -> dict[str, Any] | None:
        return self.data["blocks"].get(key)

    def put_block(self, block: Block, timing: BlockTiming) -> None:
        self.data["blocks"][block.key] = {"desc": block.desc, "macs": block.macs, **timing.to_dict()}

    def session_scale(self, how: str, anchor_ms: float) -> float:
        """What turns this session's times into the table's first session's: the speed anchor (timed
        `how`: "blocks" kernel by kernel, "whole" end to end) measured `anchor_ms` now; the first
        session's anchor is kept. A shared VM's speed moves 20-25 % between minutes while models timed
        together keep their ratios within ~6 % (benchmarks/results/measure_grouping.md): blocks timed in
        different sessions are then one scale, and a reference fit later under another norm too."""
        self._seen(how, anchor_ms)
        first = self.data["anchor"].setdefault(how, anchor_ms)
        return first / anchor_ms if anchor_ms > 0 and first > 0 else 1.0

    def typical_scale(self, how: str, anchor_ms: float) -> float:
        """What turns this session's times into this machine's typical speed: TYPICAL_LEVEL of the speed
        anchor's times over every session that timed it `how` (the table's own, each search's
        finalists' and the anchor's alone between a search's phases), this one included. The search judges its finalists against the budget at it: the
        table's first session is one minute, fast or slow, while a level of many is the speed the
        device keeps, and a student chosen in a slow minute left a fifth of an OpenVINO budget unspent."""
        seen = self._seen(how, anchor_ms)
        if anchor_ms <= 0 or not seen:
            return 1.0
        return TYPICAL_LEVEL(seen) / anchor_ms

    def _seen(self, how: str, anchor_ms: float) -> list[float]:
        anchor = self.data.setdefault("anchor", {})
        seen = anchor.setdefault(f"{how}_seen", [anchor[how]] if anchor.get(how) else [])
        if anchor_ms > 0:
            seen.append(round(anchor_ms, 5))
        del seen[:-ANCHOR_SEEN]
        return seen

    def overhead(
        self, kind: str, size: tuple[int, int] | None, norm: str | None = None
    ) -> dict[str, Any] | None:
        return self.data["overhead"].get(io_key(kind, size, norm))

    def put_overhead(
        self, kind: str, size: tuple[int, int] | None, fit: dict[str, Any], norm: str | None = None
    ) -> None:
        self.data["overhead"][io_key(kind, size, norm)] = fit

    def save(self) -> Path:
        text = json.dumps({"meta": self.meta, **self.data}, indent=1, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(self.path, text)

    def predict(
        self,
        blocks: Sequence[Block],
        kind: str,
        size: tuple[int, int] | None,
        with_overhead: bool = True,
        norm: str | None = None,
    ) -> Prediction:
        """The blocks' ms from the table, through the whole-model fit (or their plain sum)."""
        rows: dict[str, dict[str, Any]] = {}
        total, up, kernels = 0.0, 0.0, 0
        for b in blocks:
            entry = self.block(b.key)
            if entry is None:
                raise EdgeDistillError(f"block {b.desc} is not in {self.path}: measure it first")
            total += entry["ms"]
            kernels += entry["kernels"]
            if is_upsampling(entry.get("desc", b.desc)):
                up += entry["ms"]
            row = rows.setdefault(
                b.key, {"block": entry["desc"], "count": 0, "ms": entry["ms"], "precision": _main(entry)}
            )
            row["count"] += 1
        fit = self.overhead(kind, size, norm) if with_overhead else None
        # no fit: the blocks' sum itself (the identity fit's (total - up) + up can miss it by an ulp)
        ms = whole_ms(fit, total, kernels, up) if fit else total
        return Prediction(ms, total, ms - total, kernels, list(rows.values()), str(self.path), up)


def _local_cpu() -> str:
    """This CPU as a latency number must be read with: model and the ISA that picks the kernels."""
    return f"{cpuinfo()['model']} ({', '.join(isa())})"


def default_cache_dir() -> Path:
    """$EDGEDISTILL_CACHE, else the XDG cache: tables outlive a run, the search reuses them."""
    root = os.environ.get("EDGEDISTILL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgedistill"
    )
    return Path(root) / "latency"


def io_key(kind: str, size: tuple[int, int] | None, norm: str | None = None) -> str:
    """The fit's key in a table: one fit per generator kind, input size and the references' norm."""
    key = f"{kind}@{size[0]}x{size[1]}" if size else kind
    return f"{key}/{norm}" if norm else key


def _main(entry: dict[str, Any]) -> str:
    mix = entry.get("precision") or {}
    return max(mix, key=mix.get) if mix else ""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)[:60]


def _runtime_version(backend: str) -> str | None:
    from edgedistill.core.versions import installed_versions

    return installed_versions([backend]).get(backend)
