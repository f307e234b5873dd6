"""Bootstrap confidence intervals: how far a held-out score would move on another draw of inputs.

Two recipes whose scores differ by less than their intervals overlap are not told apart by this
evaluation; a table that shows the interval says so instead of ranking noise. Percentile
bootstrap (Efron): resample the per-sample values (or both feature sets, for a Fréchet distance)
with replacement, recompute the statistic, report the 2.5th and 97.5th percentiles.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 1000
FRECHET_RESAMPLES = 100  # each one is two covariances and an eigen-solve


def mean_ci(
    values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0, level: float = 0.95
) -> list[float]:
    """[low, high] of the mean of `values` (one value per held-out sample)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    return _percentiles(values[idx].mean(axis=1), level)


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (FID's formula).

    tr(sqrt(S1 S2)) is the sum of the square roots of the eigenvalues of S1 S2 (real and >= 0 for
    two covariance matrices): an eigen-solve instead of a matrix square root, ~10x faster, which a
    bootstrap of hundreds of resamples needs.
    """
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = _cov(real, mu1), _cov(fake, mu2)
    eig = np.linalg.eigvals(s1 @ s2).real
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def _cov(x: np.ndarray, mu: np.ndarray) -> np.ndarray:
    d = x - mu
    return d.T @ d / (len(x) - 1)


def frechet_ci(
    real: np.ndarray, fake: np.ndarray, resamples: int = FRECHET_RESAMPLES, seed: int = 0, level: float = 0.95
) -> list[float]:
    """[low, high] of the Fréchet distance, both sets resampled independently.

    A resample repeats some samples and so has fewer distinct ones, and a Fréchet distance grows as
    the sets shrink: the raw bootstrap distribution sits above the estimate (measured: 6.0-6.5 around
    4.7 on 2000 vs 1500 samples). The interval is shifted back by that bias (bootstrap mean minus
    estimate), the usual bias-corrected percentile interval.
    """
    estimate = frechet_distance(real, fake)
    rng = np.random.default_rng(seed)
    values = np.asarray(
        [
            frechet_distance(
                real[rng.integers(0, len(real), len(real))], fake[rng.integers(0, len(fake), len(fake))]
            )
            for _ in range(resamples)
        ]
    )
    bias = values.mean() - estimate
    return [v - float(bias) for v in _percentiles(values, level)]


def frechet_ratio_ci(
    real: np.ndarray,
    fake: np.ndarray,
    baseline: np.ndarray,
    paired_real: bool,
    resamples: int = FRECHET_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> list[float]:
    """[low, high] of FD(real, fake) / FD(real, baseline): a student's distance in units of its
    teacher's, the form its targets take.

    `fake` and `baseline` are outputs for the same inputs and are resampled together, and so is
    `real` when it is those inputs' ground truth (`paired_real`). A draw of harder inputs moves both
    distances, so the ratio's interval is far narrower than the two distances' intervals suggest
    (measured, 18.6x photo student: FD 11.6 [10.3, 13.0] vs the teacher's 9.6 [8.4, 11.2], yet the
    ratio 1.21 [1.17, 1.26]: that student is worse, not unlucky). Bias-corrected as frechet_ci.
    """
    estimate = frechet_distance(real, fake) / frechet_distance(real, baseline)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, len(fake), len(fake))
        ref = real[idx] if paired_real else real[rng.integers(0, len(real), len(real))]
        values.append(frechet_distance(ref, fake[idx]) / frechet_distance(ref, baseline[idx]))
    values_arr = np.asarray(values)
    bias = values_arr.mean() - estimate
    return [v - float(bias) for v in _percentiles(values_arr, level)]


def _percentiles(values: np.ndarray, level: float) -> list[float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]
