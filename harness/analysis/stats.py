"""Statistics of one run and of two runs on the same samples: pure functions, no model, no scipy.

Paired tests compare per-sample scores of a baseline and a candidate aligned on the same sample ids. The sign
convention everywhere: `difference = candidate - baseline` (after flipping lower-is-better metrics), so that a
regression is a negative difference and a non-inferiority margin `delta` asks whether the difference is > -delta.

- Pass/fail metrics (values 0 or 1): exact McNemar for any difference; for a margin, Tango's score test and
  interval (McNemar's statistic with the share of discordant pairs re-estimated under the null).
- Continuous metrics: a paired bootstrap of the mean difference (seeded numpy Generator, reproducible).
- One run: a Wilson interval for a pass rate, a bootstrap percentile interval for a mean.
- Several checks at once: Holm's step-down adjustment of the p-values.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BOOTSTRAP_ITERATIONS = 10_000
_BOOTSTRAP_CELLS = 2_000_000  # resampled values per chunk: bounds memory, and fixed so that results never vary


# ------------------------------------------------------------------------------------------- binomial, exactly


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact enough for n in the hundred thousands)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return 1.0 - binomial_cdf(k - 1, n, p) if k > 0 else 1.0


def _bisect(f, lo: float, hi: float, iterations: int = 80) -> float:
    """The root of a function increasing on [lo, hi] (bisection: robust where the binomial tail is flat)."""
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion (each tail (1 - confidence) / 2)."""
    if n == 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    low = 0.0 if k == 0 else _bisect(lambda p: binomial_sf(k, n, p) - tail, 0.0, 1.0)
    high = 1.0 if k == n else _bisect(lambda p: tail - binomial_cdf(k, n, p), 0.0, 1.0)
    return low, high


def _normal_quantile(q: float) -> float:
    """Inverse of the standard normal CDF (bisection on erf; only called a few times per table)."""
    return _bisect(lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2))) - q, -40.0, 40.0, iterations=200)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a pass rate: sane at 0/n and n/n, unlike the Wald interval."""
    if n == 0:
        return 0.0, 1.0
    z = _normal_quantile(1 - (1 - confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of b and c discordant pairs (no difference: each is a fair coin flip)."""
    m = b + c
    if m == 0:
        return 1.0
    return min(1.0, 2 * binomial_cdf(min(b, c), m, 0.5))


# ------------------------------------------------------------------------------------------------ bootstrap


def rng_for(seed: int, name: str) -> np.random.Generator:
    """A Generator from the policy's seed and a stable hash of what it is for: reproducible, independent streams."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def bootstrap_means(values: Sequence[float], iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `iterations` resamples (with replacement) of `values`, drawn in fixed-size chunks."""
    data = np.asarray(values, dtype=float)
    n = len(data)
    rows = max(1, _BOOTSTRAP_CELLS // max(n, 1))
    out = np.empty(iterations)
    for start in range(0, iterations, rows):
        count = min(rows, iterations - start)
        out[start:start + count] = data[rng.integers(0, n, size=(count, n))].mean(axis=1)
    return out


def bootstrap_interval(values: Sequence[float], confidence: float = 0.95, iterations: int = BOOTSTRAP_ITERATIONS,
                       seed: int = 0, name: str = "") -> tuple[float, float]:
    """Percentile interval of a mean (one run's continuous score)."""
    if len(values) == 0:
        return math.nan, math.nan
    means = bootstrap_means(values, iterations, rng_for(seed, name))
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def score_interval(values: Sequence[float], kind: str, confidence: float = 0.95,
                   iterations: int = BOOTSTRAP_ITERATIONS, seed: int = 0, name: str = "") -> tuple[float, float]:
    """One run's interval: Wilson for pass/fail scores, bootstrap for continuous ones."""
    if kind == "binary":
        return wilson_interval(int(round(sum(values))), len(values), confidence)
    return bootstrap_interval(values, confidence, iterations, seed, name)


# -------------------------------------------------------------------------------------------- paired tests


@dataclass
class Paired:
    """Candidate against baseline on n aligned samples.

    `ci` is two-sided at `confidence`; `p_value` is one-sided for H0: difference <= -margin (a regression of at
    least the margin), so a small p-value shows non-inferiority. `p_two_sided` tests "no difference".
    """

    n: int
    baseline: float
    candidate: float
    difference: float
    ci: tuple[float, float]
    confidence: float
    margin: float
    p_value: float
    p_two_sided: float
    test: str
    detail: dict[str, Any] = field(default_factory=dict)


def _check_pairs(baseline: Sequence[float], candidate: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    base, cand = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if base.shape != cand.shape or base.ndim != 1 or len(base) == 0:
        raise ValueError("paired tests need two equally long, non-empty sequences of scores")
    return base, cand


def restricted_loss_rate(b: int, c: int, n: int, d0: float) -> float:
    """Maximum-likelihood P(baseline passes, candidate fails) under H0: difference = d0 (Tango 1998).

    With x that probability and x + d0 that of a win, the likelihood b log x + c log(x + d0) +
    (n - b - c) log(1 - 2x - d0) is maximal at the feasible root of 2n x^2 - B x - b d0 (1 - d0) = 0,
    B = b (1 - 3 d0) + c (1 - d0) - 2 d0 (n - b - c).
    """
    low, high = max(0.0, -d0), (1 - d0) / 2
    big_b = b * (1 - 3 * d0) + c * (1 - d0) - 2 * d0 * (n - b - c)
    root = math.sqrt(max(big_b * big_b + 8 * n * b * d0 * (1 - d0), 0.0))
    candidates = [(big_b + sign * root) / (4 * n) for sign in (1, -1)]
    feasible = [x for x in candidates if low - 1e-12 <= x <= high + 1e-12]
    return min(max(feasible[0] if feasible else candidates[0], low), high)


def score_statistic(b: int, c: int, n: int, d0: float) -> float:
    """Tango's score statistic for H0: difference = d0 from b losses and c wins among n pairs; at d0 = 0 it is
    McNemar's (c - b) / sqrt(b + c). It falls as d0 rises."""
    x = restricted_loss_rate(b, c, n, d0)
    excess = c - b - n * d0
    variance = n * (2 * x + d0 - d0 * d0)
    if variance <= 1e-15:
        return math.copysign(math.inf, excess) if excess else 0.0
    return excess / math.sqrt(variance)


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def margin_p(b: int, c: int, n: int, margin: float) -> float:
    """One-sided p-value of H0: difference <= -margin (Tango's score test; at margin 0, McNemar's one-sided test
    in its normal form). It does not take the share of discordant pairs as known, so a handful of losses among
    many pairs is not waved through: non-inferiority needs evidence, not the absence of disagreement."""
    return _normal_sf(score_statistic(b, c, n, -margin))


def score_interval_paired(b: int, c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Tango's score interval of the paired difference: the d0 that a two-sided test at `confidence` keeps."""
    z = _normal_quantile(1 - (1 - confidence) / 2)
    lo, hi = -1 + 1e-12, 1 - 1e-12
    lower = _bisect(lambda d0: z - score_statistic(b, c, n, d0), lo, hi)
    upper = _bisect(lambda d0: -z - score_statistic(b, c, n, d0), lo, hi)
    return max(-1.0, lower), min(1.0, upper)


def paired_binary(baseline: Sequence[float], candidate: Sequence[float], margin: float,
                  confidence: float = 0.95) -> Paired:
    """Pass/fail scores: exact McNemar for "any difference", and for the margin Tango's score test (the McNemar
    statistic with the discordant share re-estimated under H0) with its score interval, so that the margin test
    rejects exactly when the interval at confidence 1 - 2 * alpha lies above -margin."""
    base, cand = _check_pairs(baseline, candidate)
    n = len(base)
    b = int(np.sum((base == 1) & (cand == 0)))
    c = int(np.sum((base == 0) & (cand == 1)))
    return Paired(n, float(base.mean()), float(cand.mean()), (c - b) / n, score_interval_paired(b, c, n, confidence),
                  confidence, margin, margin_p(b, c, n, margin), mcnemar_exact(b, c), "McNemar / Tango score",
                  {"losses": b, "wins": c})


def paired_bootstrap(baseline: Sequence[float], candidate: Sequence[float], margin: float,
                     confidence: float = 0.95, iterations: int = BOOTSTRAP_ITERATIONS, seed: int = 0,
                     name: str = "") -> Paired:
    """Paired bootstrap of the mean per-sample difference: percentile interval and one-sided margin p-value.

    p = (1 + #{bootstrap means <= -margin}) / (iterations + 1): the share of resamples no better than the margin,
    which inverts the percentile interval (never 0, so that it stays honest under Holm).
    """
    base, cand = _check_pairs(baseline, candidate)
    diff = cand - base
    means = bootstrap_means(diff, iterations, rng_for(seed, name))
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    p = (1 + int(np.sum(means <= -margin))) / (iterations + 1)
    centred = means - means.mean()
    p_two = (1 + int(np.sum(np.abs(centred) >= abs(diff.mean())))) / (iterations + 1)
    return Paired(len(diff), float(base.mean()), float(cand.mean()), float(diff.mean()), (float(low), float(high)),
                  confidence, margin, p, min(1.0, p_two), "paired bootstrap",
                  {"iterations": iterations, "seed": seed})


def paired_test(baseline: Sequence[float], candidate: Sequence[float], kind: str, margin: float,
                confidence: float = 0.95, iterations: int = BOOTSTRAP_ITERATIONS, seed: int = 0,
                name: str = "") -> Paired:
    """The paired test for a metric's kind: McNemar for binary scores, the bootstrap for continuous ones."""
    if kind == "binary":
        return paired_binary(baseline, candidate, margin, confidence)
    return paired_bootstrap(baseline, candidate, margin, confidence, iterations, seed, name)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: reject H_i when adjusted p_i < alpha (family-wise error <= alpha)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def is_binary(values: Sequence[float]) -> bool:
    """Pass/fail scores: every value is 0 or 1 (True/False count)."""
    return all(v in (0, 1) for v in values)
