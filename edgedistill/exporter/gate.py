"""The quality gate: an exported generator must still make the teacher's images.

A classifier (2-D logits out) is gated on top-1 agreement with fp32 instead (percent of held-out
inputs whose argmax is unchanged, `Quality.score`), with the logits' max error recorded beside it.

After compiling, the artifact and the fp32 model run on held-out inputs from the calibration
source; PSNR/SSIM/max error go into the manifest. Below `min_psnr` the most harmful layers (ranked
by measured sensitivity) are kept at higher precision, a few more at a time, until the gate holds.
Everything here is numpy + the backends' runners: no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgedistill.backends.base import CompileResult, Runner
from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.quality import max_abs_err, psnr, ssim, to_unit

# How many of the ranked layers each successive attempt keeps at higher precision.
KEEP_SCHEDULE = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


@dataclass
class Quality:
    psnr_vs_fp32: float
    ssim_vs_fp32: float
    max_abs_err: float
    samples: int
    agreement: float | None = None  # classifiers: fraction of inputs whose top-1 matches fp32

    @property
    def score(self) -> float:
        """What the gate compares with its threshold: PSNR (dB), or a classifier's top-1 agreement (%)."""
        return 100.0 * self.agreement if self.agreement is not None else self.psnr_vs_fp32

    def to_dict(self) -> dict[str, float]:
        d = {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(self).items()}
        if self.agreement is None:
            d.pop("agreement")
        return d

    def describe(self) -> str:
        if self.agreement is not None:
            return f"top-1 agreement {100 * self.agreement:.2f} %, logits max |err| {self.max_abs_err:.3g}"
        return f"PSNR {self.psnr_vs_fp32:.2f} dB, SSIM {self.ssim_vs_fp32:.4f}"


@dataclass
class Attempt:
    kept: list[str]
    quality: Quality
    result: CompileResult
    out_dir: Path


@dataclass
class GateOutcome:
    result: CompileResult
    out_dir: Path
    quality: Quality
    passed: bool
    attempts: list[Attempt] = field(default_factory=list)
    ranking: list[dict] = field(default_factory=list)
    speed: dict[str, float] | None = None  # plain vs gated latency when layers were kept
    policy_kept: list[str] = field(default_factory=list)  # kept by the target's policy, before the gate
    ranked_by: str | None = None  # how the ranking measured harm (which quantizer, which runtime)


def reference_outputs(runner: Runner, holdout: CalibrationSet) -> list[np.ndarray]:
    name = runner.output_names[0]
    return [runner.run(sample)[name] for sample in holdout.samples(1)]


def measure_quality(
    runner: Runner, holdout: CalibrationSet, reference: list[np.ndarray], output_range: Sequence[float]
) -> Quality:
    """PSNR/SSIM (mean over samples, images mapped to [0, 1]) and max abs error vs the fp32 outputs;
    for logits (N, classes), also the top-1 agreement."""
    name = runner.output_names[0]
    psnrs, ssims, errs, agree = [], [], [], []
    for sample, ref in zip(holdout.samples(1), reference, strict=True):
        out = runner.run(sample)[name]
        if out.shape != ref.shape:
            raise EdgeDistillError(f"the compiled model returns {out.shape} where fp32 returns {ref.shape}")
        errs.append(max_abs_err(out, ref))
        if out.ndim == 2:  # a classifier's logits
            agree.extend((out.argmax(1) == ref.argmax(1)).tolist())
            psnrs.append(
                psnr(out[:, :, None, None], ref[:, :, None, None], max(float(np.ptp(ref)), 1e-6))
            )  # logits' span
            continue
        a, b = to_unit(out, output_range), to_unit(ref, output_range)
        psnrs.append(psnr(a, b, 1.0))
        ssims.append(ssim(a, b, 1.0) if min(a.shape[-2:]) >= 11 else float("nan"))
    return Quality(
        float(np.mean(psnrs)),
        float(np.nanmean(ssims)) if ssims else float("nan"),
        float(max(errs)),
        len(psnrs),
        float(np.mean(agree)) if agree else None,
    )


def run_gate(
    compile_into: Callable[[Sequence[str], str], tuple[CompileResult, Path]],
    load: Callable[[CompileResult, Path], Runner],
    holdout: CalibrationSet,
    reference: list[np.ndarray],
    output_range: Sequence[float],
    min_psnr: float | None,
    rank: Callable[[Attempt], list[dict]] | None,
    log: Callable[[str], None] = lambda _m: None,
) -> GateOutcome:
    """Compile plainly; if below `min_psnr` and `rank` is given, keep more top-ranked layers until it holds.

    `compile_into(keep, tag)` compiles into a fresh directory and returns (result, dir);
    `load(result, dir)` gives a runner of what was compiled; `rank(plain)` orders the layers, most
    harmful first, given the plain attempt (its artifact and quality). Returns the first attempt that holds,
    else the best one (passed=False): the caller decides whether that may be written.
    """
    result, out_dir = compile_into((), "plain")
    quality = measure_quality(load(result, out_dir), holdout, reference, output_range)
    log(f"quality vs fp32: {quality.describe()}")
    best = GateOutcome(result, out_dir, quality, min_psnr is None or quality.score >= min_psnr)
    best.attempts.append(Attempt([], quality, result, out_dir))
    if best.passed or rank is None:
        return best
    ranking = rank(best.attempts[0])
    best.ranking = ranking
    names = [r["name"] for r in ranking]
    for k in KEEP_SCHEDULE:
        keep = names[: min(k, len(names))]
        result, out_dir = compile_into(keep, f"keep{len(keep)}")
        q = measure_quality(load(result, out_dir), holdout, reference, output_range)
        best.attempts.append(Attempt(list(keep), q, result, out_dir))
        log(f"kept {len(keep)} layer(s) at higher precision: {q.describe()}")
        if q.score > best.quality.score:
            best.result, best.out_dir, best.quality = result, out_dir, q
        if q.score >= min_psnr:  # type: ignore[operator]
            best.passed = True
            break
        if len(keep) == len(names):
            break
    return best


def speed_cost(
    outcome: GateOutcome,
    load: Callable[[CompileResult, Path], Runner],
    holdout: CalibrationSet,
    rounds: int = 20,
) -> dict[str, float]:
    """Median latency of the plain and the gated artifact, measured interleaved: the kept layers' price."""
    import statistics
    import time

    plain = outcome.attempts[0]
    runners = {"plain": load(plain.result, plain.out_dir), "gated": load(outcome.result, outcome.out_dir)}
    sample = next(holdout.samples(1))
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(3):
        for r in runners.values():
            r.run(sample)
    for _ in range(rounds):
        for k, r in runners.items():
            t0 = time.perf_counter()
            r.run(sample)
            times[k].append((time.perf_counter() - t0) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "plain_ms": round(med["plain"], 3),
        "gated_ms": round(med["gated"], 3),
        "slowdown": round(med["gated"] / med["plain"], 3),
    }
