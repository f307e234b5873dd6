"""The report as a PNG: p50 bars with p90 whiskers per model, and each model's slowest layers.

matplotlib runs headless (Agg) and is imported only here: the device side never plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgedistill.core.atomic import write_atomic

if TYPE_CHECKING:
    from edgedistill.runtime.report import ProfileReport

MAX_LAYER_PANELS = 4
LAYERS_PER_PANEL = 8


def plot_report(report: ProfileReport, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    measured = report.measured
    with_layers = [m for m in measured if m.layers][:MAX_LAYER_PANELS]
    panels = 1 + len(with_layers)
    height = max(2.0, 0.5 * len(measured) + 1.2)
    heights = [height] + [max(2.0, 0.35 * min(len(m.layers), LAYERS_PER_PANEL) + 1.0) for m in with_layers]
    fig, axes = plt.subplots(
        panels, 1, figsize=(9, sum(heights)), gridspec_kw={"height_ratios": heights}, squeeze=False
    )
    ax = axes[0][0]
    names = [f"{m.name}\n{m.backend} {m.precision}" for m in measured]
    p50 = [m.stats.p50 for m in measured]  # type: ignore[union-attr]
    p90 = [m.stats.p90 for m in measured]  # type: ignore[union-attr]
    ys = list(range(len(measured)))[::-1]
    err = [[0.0] * len(measured), [max(b - a, 0.0) for a, b in zip(p50, p90, strict=True)]]
    ax.barh(ys, p50, xerr=err, color="#4C78A8", capsize=4, error_kw={"elinewidth": 1})
    ax.set_yticks(ys, names, fontsize=8)
    ax.set_xlabel("latency, ms (bar: p50, whisker: p90)")
    where = f" on {report.remote}" if report.remote else f" on {report.host.get('hostname', '')}"
    ax.set_title(f"latency{where}, {report.settings.get('threads')} thread(s)", fontsize=10)
    for y, m in zip(ys, measured, strict=True):
        label = f" {m.stats.p50:.2f} ms"  # type: ignore[union-attr]
        if m.speedup is not None and m is not measured[0]:
            label += f"  ({m.speedup:.2f}x)"
        ax.text(m.stats.p90, y, label, va="center", fontsize=8)  # type: ignore[union-attr]
    ax.set_xlim(0, max(p90) * 1.35 if p90 else 1)
    for row, m in enumerate(with_layers, start=1):
        lax = axes[row][0]
        top = m.layers[:LAYERS_PER_PANEL]
        ly = list(range(len(top)))[::-1]
        lax.barh(ly, [layer["ms"] for layer in top], color="#F58518")
        labels = [_short(f"{layer['name']} ({layer['op_type']})") for layer in top]
        lax.set_yticks(ly, labels, fontsize=7)
        for y, layer in zip(ly, top, strict=True):
            kernel = f" {layer['precision']}" if layer.get("precision") else ""
            lax.text(layer["ms"], y, f" {layer['ms']:.2f} ms{kernel}", va="center", fontsize=7)
        lax.set_xlim(0, max(layer["ms"] for layer in top) * 1.6)
        lax.set_title(f"slowest layers: {m.name} ({m.backend} {m.precision})", fontsize=9)
        lax.set_xlabel("ms per inference (runtime profiler)", fontsize=8)
    fig.tight_layout()

    def save(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=110)

    try:
        return write_atomic(path, save)
    finally:
        plt.close(fig)


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1) :]
