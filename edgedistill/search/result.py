"""What a search found: its candidates, their Pareto front, and the files that show them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.core.atomic import write_atomic, write_text_atomic


@dataclass
class Candidate:
    arch: dict[str, Any]
    macs: int
    predicted_ms: float | None = None
    proxy_inherited: float | None = None  # PSNR vs teacher, inherited weights, no training
    proxy_psnr: float | None = None  # after the short KD
    uniform: float | None = None  # the --width it equals, for the baseline
    measured_ms: float | None = None
    grown: bool = False  # a mutated child walked towards the budget, not a random sample

    @property
    def quality(self) -> float:
        return self.proxy_psnr if self.proxy_psnr is not None else (self.proxy_inherited or float("-inf"))


@dataclass
class SearchResult:
    teacher: str
    target: str
    precision: str
    size: list[int] | None
    budget_ms: float
    latency_source: str
    chosen: Candidate
    uniform: Candidate | None
    candidates: list[Candidate]
    pareto: list[int]  # indices into candidates
    wall_s: dict[str, float] = field(default_factory=dict)
    out: Path | None = None
    measured_ratio: float | None = None  # finalists' median measured / predicted ms (search re-anchors off 1)
    # per measuring session of the finalists: the speed anchor's time over its typical time
    session_slowness: list[float] = field(default_factory=list)
    # per measuring session: how far it read off the speed the sessions agree on, once each model is
    # read from every session that timed it (search/readings.py); 1.0 each where they agree
    session_factors: list[float] = field(default_factory=list)
    allowed: dict[str, list[Any]] = field(default_factory=dict)  # choices the user limited (--allow)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out) if self.out else None
        return d


def pareto_front(cands: list[Candidate]) -> list[int]:
    """Indices of the fine-tuned candidates no other fine-tuned one beats on both latency (lower) and
    proxy quality (higher). Only those: the inherited-weights proxy scores 8-10 dB lower on another
    scale, and a front through both would join points that cannot be compared."""
    pts = [(i, c.predicted_ms, c.quality) for i, c in enumerate(cands)
           if c.predicted_ms is not None and c.proxy_psnr is not None]  # fmt: skip
    pts = [p for p in pts if p[2] != float("-inf")]
    front = []
    for i, ms, q in pts:
        if not any((ms2 <= ms and q2 >= q) and (ms2 < ms or q2 > q) for _, ms2, q2 in pts):
            front.append(i)
    return sorted(front, key=lambda i: cands[i].predicted_ms or 0)


def write_result(result: SearchResult) -> None:
    out = Path(result.out or "search")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "search.json", json.dumps(result.to_dict(), indent=2) + "\n")
    write_text_atomic(out / "arch.json", json.dumps(result.chosen.arch, indent=2) + "\n")
    plot_pareto(result, out / "pareto.png")


def plot_pareto(result: SearchResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pick, style in (
        (
            "sampled, inherited weights (no training)",
            lambda c: c.proxy_psnr is None and c.proxy_inherited is not None and not c.grown,
            "o",
        ),
        (
            "grown towards the budget, inherited weights",
            lambda c: c.proxy_psnr is None and c.proxy_inherited is not None and c.grown,
            "D",
        ),
        ("short KD", lambda c: c.proxy_psnr is not None and c.uniform is None, "s"),
        ("uniform width", lambda c: c.uniform is not None and c.quality != float("-inf"), "^"),
    ):
        pts = [(c.predicted_ms, c.quality) for c in result.candidates if pick(c)]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=style, label=label, alpha=0.7)
    front = [result.candidates[i] for i in result.pareto]
    if front:
        ax.plot(
            [c.predicted_ms for c in front],
            [c.quality for c in front],
            "k--",
            lw=1,
            label="Pareto front (short KD)",
        )
    ax.axvline(result.budget_ms, color="r", lw=1, label=f"budget {result.budget_ms:g} ms")
    ratio = result.measured_ratio
    if ratio and abs(ratio - 1) > 0.02:  # the finalists measured off the table: where the budget reads in it
        ax.axvline(result.budget_ms / ratio, color="r", lw=1, ls=":",
                   label=f"budget in the table's units ({result.budget_ms / ratio:.1f} ms: measured {ratio:.2f}x predicted)")  # fmt: skip
    ax.scatter(
        [result.chosen.predicted_ms], [result.chosen.quality], s=160, facecolors="none", edgecolors="r"
    )
    ax.set_xlabel(f"predicted latency, ms ({result.target} {result.precision})")
    ax.set_ylabel("proxy PSNR vs teacher, dB")
    ax.set_title(f"search: {result.teacher}", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()

    def save(tmp: Path) -> None:
        fig.savefig(tmp, dpi=110, format="png")

    try:
        return write_atomic(path, save)
    finally:
        plt.close(fig)
