"""The profile report: one row per model, the settings and machine it was measured on.

JSON holds everything (and is what a device sends back over SSH); Markdown holds the table a
person compares students by. Both say what the latency is: see timing.WHAT_IS_TIMED.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.core.atomic import write_text_atomic
from edgedistill.runtime.stats import TimingStats

FORMAT = 1


@dataclass
class ModelResult:
    name: str
    source: str
    kind: str  # torch | artifact
    backend: str
    precision: str
    device: str = "CPU"
    size_bytes: int | None = None
    macs: int | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    skipped: str | None = None  # why it did not run here (its runtime is missing)
    load_s: float | None = None  # load + compile (OpenVINO compiles at load)
    first_ms: float | None = None  # the first inference after load (lazy init, allocation)
    rss_growth_mb: float | None = None  # resident memory added by load + warm-up (still held)
    # growth of the process's peak RSS during load + warm-up (0 when an earlier model peaked higher)
    peak_rss_growth_mb: float | None = None
    warmup_calls: int = 0
    stats: TimingStats | None = None
    speedup: float | None = None  # p50 of the reference (first) model / this p50
    psnr_vs_first: float | None = None  # dB, outputs on the same input, mapped to [0, 1]
    achieved_gops: float | None = None
    pct_target_peak: float | None = None
    pct_measured_peak: float | None = None
    pct_theoretical_peak: float | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)  # top-N by time
    layers_total_ms: float | None = None  # sum over all layers the runtime's profiler reported
    kernel_mix: dict[str, float] = field(default_factory=dict)  # % of layer time per kernel/precision

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.to_dict() if self.stats else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelResult:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if d.get("stats"):
            d["stats"] = TimingStats.from_dict(d["stats"])
        return cls(**d)


@dataclass
class ProfileReport:
    models: list[ModelResult]
    what_is_timed: str
    settings: dict[str, Any]
    host: dict[str, Any]
    peaks: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    remote: str | None = None  # user@host when measured over SSH
    format: int = FORMAT

    # ------------------------------------------------------------------------------- access
    def __getitem__(self, name: str) -> ModelResult:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def measured(self) -> list[ModelResult]:
        return [m for m in self.models if m.stats is not None]

    # -------------------------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "what_is_timed": self.what_is_timed,
            "remote": self.remote,
            "settings": self.settings,
            "host": self.host,
            "peaks": self.peaks,
            "warnings": self.warnings,
            "models": [m.to_dict() for m in self.models],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProfileReport:
        return cls(
            models=[ModelResult.from_dict(m) for m in d["models"]],
            what_is_timed=d["what_is_timed"],
            settings=d.get("settings", {}),
            host=d.get("host", {}),
            peaks=d.get("peaks", {}),
            warnings=list(d.get("warnings", [])),
            remote=d.get("remote"),
            format=d.get("format", FORMAT),
        )

    def write_json(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def write_markdown(self, path: str | Path) -> Path:
        return write_text_atomic(path, self.to_markdown())

    # ----------------------------------------------------------------------------- markdown
    def table_rows(self) -> list[dict[str, str]]:
        """The summary table as strings (shared by Markdown and the terminal table)."""
        rows = []
        for m in self.models:
            s = m.stats
            skip = f"skipped: {m.skipped}" if m.skipped else ""
            rows.append(
                {
                    "model": m.name,
                    "backend": m.backend,
                    "precision": m.precision,
                    "p50 ms": _ms(s.p50) if s else skip,
                    "p90 ms": _ms(s.p90) if s else "",
                    "p99 ms": _ms(s.p99) if s else "",
                    "FPS": f"{s.fps:.1f}" if s else "",
                    "size": _bytes(m.size_bytes),
                    "PSNR vs teacher": _psnr(m.psnr_vs_first),
                    "speedup vs teacher": f"{m.speedup:.2f}x" if m.speedup is not None else "–",
                    "% of peak": _peak_cell(m),
                }
            )
        return rows

    def to_markdown(self) -> str:
        rows = self.table_rows()
        lines = [f"# Latency profile{f' on {self.remote}' if self.remote else ''}", ""]
        if rows:
            cols = list(rows[0])
            lines.append("| " + " | ".join(cols) + " |")
            lines.append(
                "|"
                + "|".join("---" if c in ("model", "backend", "precision") else "---:" for c in cols)
                + "|"
            )
            lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in rows]
        lines += ["", *self.notes()]
        if self.measured:
            lines += ["", "## Load and memory", ""]
            lines += [
                "| model | load + compile s | first inference ms | RSS growth MB | peak RSS growth MB |"
            ]
            lines += ["|---|---:|---:|---:|---:|"]
            for m in self.measured:
                cells = [m.load_s, m.first_ms, m.rss_growth_mb, m.peak_rss_growth_mb]
                lines.append(
                    f"| {_md(m.name)} | " + " | ".join("–" if v is None else f"{v:g}" for v in cells) + " |"
                )
        for m in self.measured:
            if m.layers:
                lines += ["", f"## Slowest layers: {m.name} ({m.backend} {m.precision})", ""]
                if m.kernel_mix:
                    mix = ", ".join(f"{k} {v:.0f}%" for k, v in m.kernel_mix.items())
                    lines += [f"Layer time by kernel/precision that ran: {mix}.", ""]
                lines += ["| layer | op | ms | % | kernel / precision |", "|---|---|---:|---:|---|"]
                for layer in m.layers:
                    lines.append(
                        f"| {_md(layer['name'])} | {_md(layer['op_type'])} | {layer['ms']:.3f} | "
                        f"{layer.get('pct', 0):.1f} | {_md(layer.get('precision') or '')} |"
                    )
        if self.warnings:
            lines += ["", "## Warnings", "", *[f"- {w}" for w in self.warnings]]
        return "\n".join(lines) + "\n"

    def notes(self) -> list[str]:
        """Lines under the table: what was timed, how, where, against what."""
        st, h = self.settings, self.host
        first = self.measured[0].name if self.measured else "–"
        shapes = self.measured[0].input_shapes if self.measured else {}
        size = "x".join(map(str, st.get("input_size") or ())) or ", ".join(map(str, shapes.values())) or "–"
        lines = [
            f"Latency: {self.what_is_timed}.",
            f"Settings: {st.get('threads')} thread(s), batch {st.get('batch')}, input {size}, "
            f"warm-up {st.get('warmup')} call(s) / {st.get('warmup_time')} s, {st.get('rounds')} interleaved "
            f"round(s) in {st.get('measure_s', 0):.1f} s.",
            f"Teacher = the first model given (`{first}`): speedup and PSNR are against it.",
            f"Machine: {h.get('cpu')} ({h.get('arch')}, ISA {'+'.join(h.get('isa') or ['?'])}, "
            f"{h.get('logical_cpus')} CPUs), {h.get('system')}, "
            f"host {h.get('hostname')}; "
            + ", ".join(f"{k} {v}" for k, v in (h.get("versions") or {}).items()),
        ]
        lines.append(_peak_note(self.peaks))
        return [f"{line}  " for line in lines]  # Markdown line breaks


def _peak_cell(m: ModelResult) -> str:
    parts = []
    if m.pct_target_peak is not None:
        parts.append(f"{m.pct_target_peak:.1f}% target")
    if m.pct_measured_peak is not None:
        parts.append(f"{m.pct_measured_peak:.1f}% GEMM")
    if not parts and m.pct_theoretical_peak is not None:
        parts.append(f"{m.pct_theoretical_peak:.1f}% theor.")
    return ", ".join(parts) or "–"


def _peak_note(peaks: dict[str, Any]) -> str:
    bits = []
    tgt = peaks.get("target") or {}
    if tgt.get("peak_gops"):
        bits.append(
            f"target {tgt.get('name')} peak " + ", ".join(f"{k} {v:g}" for k, v in tgt["peak_gops"].items())
        )
    meas = peaks.get("measured") or {}
    if meas.get("fp32") or meas.get("int8"):
        bits.append(f"measured GEMM fp32 {meas.get('fp32')} / int8 {meas.get('int8')} ({meas.get('how')})")
    theo = peaks.get("theoretical") or {}
    if theo.get("fp32"):
        bits.append(f"theoretical fp32 {theo['fp32']} / int8 {theo['int8']} ({theo.get('basis')})")
    if not bits:
        return "% of peak: no peak known (give --target, or run with the roofline measurement on)."
    return "% of peak = 2 x MACs / p50 against, in GOP/s: " + "; ".join(bits) + "."


def _psnr(v: float | None) -> str:
    if v is None:
        return "–"
    return "≥ 100 dB (same)" if v >= 100.0 else f"{v:.2f} dB"


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "–"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")
