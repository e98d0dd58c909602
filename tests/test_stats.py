"""The gate's statistics against scipy (a reference, not a dependency) and against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from lceval.analysis import stats

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize(("k", "n", "p"), [(0, 10, 0.3), (3, 10, 0.5), (30, 100, 0.4), (499, 1000, 0.5),
                                           (10, 10, 0.9), (2, 400, 0.001)])
def test_binomial_tails_match_scipy(k, n, p):
    assert stats.binomial_cdf(k, n, p) == pytest.approx(scipy_stats.binom.cdf(k, n, p), rel=1e-9, abs=1e-300)
    assert stats.binomial_sf(k, n, p) == pytest.approx(scipy_stats.binom.sf(k - 1, n, p), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("k", "n"), [(0, 5), (3, 10), (9, 9), (50, 114), (1, 1)])
def test_intervals_match_scipy(k, n):
    exact = scipy_stats.binomtest(k, n).proportion_ci(0.95, "exact")
    assert stats.clopper_pearson(k, n) == pytest.approx((exact.low, exact.high), abs=1e-9)
    wilson = scipy_stats.binomtest(k, n).proportion_ci(0.95, "wilson")
    assert stats.wilson_interval(k, n) == pytest.approx((wilson.low, wilson.high), abs=1e-9)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 0), (5, 1), (12, 3), (40, 35)])
def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs(b, c):
    expected = 1.0 if b + c == 0 else scipy_stats.binomtest(b, b + c, 0.5).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected)


def test_margin_test_at_margin_zero_is_mcnemars_statistic():
    # 12 losses, 3 wins among 100 pairs: Z = (3 - 12) / sqrt(15)
    assert stats.score_statistic(12, 3, 100, 0.0) == pytest.approx(-9 / 15 ** 0.5)
    assert stats.margin_p(12, 3, 100, 0.0) == pytest.approx(scipy_stats.norm.sf(-9 / 15 ** 0.5))


@pytest.mark.parametrize(("b", "c", "n", "d0"), [(12, 3, 100, -0.05), (0, 0, 9, -0.05), (4, 0, 9, -0.2),
                                                 (3, 7, 50, 0.02), (5, 0, 114, -0.05)])
def test_restricted_estimate_maximises_the_likelihood_under_the_null(b, c, n, d0):
    from scipy.optimize import minimize_scalar

    def negative_log_likelihood(x: float) -> float:
        terms = [(b, x), (c, x + d0), (n - b - c, 1 - 2 * x - d0)]
        return -sum(k * np.log(p) for k, p in terms if k)

    low, high = max(0.0, -d0) + 1e-9, (1 - d0) / 2 - 1e-9
    best = minimize_scalar(negative_log_likelihood, bounds=(low, high), method="bounded", options={"xatol": 1e-12})
    assert stats.restricted_loss_rate(b, c, n, d0) == pytest.approx(best.x, abs=1e-6)


def test_margin_test_and_interval_agree_and_few_losses_are_not_waved_through():
    b, c = 12, 3
    base = np.array([1] * b + [0] * c + [1] * 40 + [0] * 45)
    cand = np.array([0] * b + [1] * c + [1] * 40 + [0] * 45)
    for margin in (0.0, 0.05, 0.1, 0.15, 0.2):
        result = stats.paired_binary(base, cand, margin, confidence=0.90)
        assert result.difference == pytest.approx(-0.09)
        assert result.ci[0] < -0.09 < result.ci[1]
        assert (result.p_value < 0.05) == (result.ci[0] > -margin)  # the test and the 90% interval agree
    # 5 losses and no win among 114: the observed drop (0.044) is inside a 0.05 margin, the evidence is not
    few = stats.paired_binary([1] * 114, [0] * 5 + [1] * 109, 0.05, confidence=0.90)
    assert few.p_value > 0.05 and few.ci[0] < -0.05


def test_paired_binary_counts_and_identical_runs():
    result = stats.paired_binary([1, 1, 0, 0, 1], [1, 0, 1, 0, 1], 0.05)
    assert result.detail == {"losses": 1, "wins": 1} and result.difference == 0.0
    same = stats.paired_binary([1, 0, 1] * 40, [1, 0, 1] * 40, 0.05)
    assert same.ci[0] < 0 < same.ci[1] and same.p_value < 0.01 and same.p_two_sided == 1.0
    tiny = stats.paired_binary([1, 0, 1], [1, 0, 1], 0.05)
    assert tiny.p_value > 0.05  # three identical pairs cannot show non-inferiority within 0.05
    lost = stats.paired_binary([1] * 9, [0] * 9, 0.05, confidence=0.95)
    assert lost.ci[1] < -0.3 and lost.ci[0] == pytest.approx(-1.0) and lost.p_value > 0.99


def test_paired_bootstrap_is_seeded_and_consistent():
    rng = np.random.default_rng(1)
    base = rng.uniform(size=200)
    cand = base - 0.02 + rng.normal(scale=0.05, size=200)
    first = stats.paired_bootstrap(base, cand, 0.05, 0.9, iterations=4000, seed=7, name="x")
    again = stats.paired_bootstrap(base, cand, 0.05, 0.9, iterations=4000, seed=7, name="x")
    other = stats.paired_bootstrap(base, cand, 0.05, 0.9, iterations=4000, seed=8, name="x")
    assert first == again and first.ci != other.ci
    assert first.ci[0] < first.difference < first.ci[1]
    assert (first.p_value < 0.05) == (first.ci[0] > -0.05)
    sd = np.std(cand - base, ddof=1) / np.sqrt(200)  # the interval is about the normal one
    assert first.ci[1] - first.ci[0] == pytest.approx(2 * 1.645 * sd, rel=0.15)


def test_paired_bootstrap_of_identical_and_shifted_runs():
    same = stats.paired_bootstrap([0.2, 0.5, 0.7], [0.2, 0.5, 0.7], 0.05, iterations=1000)
    assert same.ci == (0.0, 0.0) and same.p_value == pytest.approx(1 / 1001)
    worse = stats.paired_bootstrap([0.5] * 20, [0.3] * 20, 0.05, iterations=1000)
    assert worse.p_value == 1.0 and worse.ci == pytest.approx((-0.2, -0.2))


def test_bootstrap_chunks_do_not_change_results(monkeypatch):
    values = np.arange(50, dtype=float)
    whole = stats.bootstrap_means(values, 300, np.random.default_rng(0))
    monkeypatch.setattr(stats, "_BOOTSTRAP_CELLS", 50 * 7)
    assert np.array_equal(whole, stats.bootstrap_means(values, 300, np.random.default_rng(0)))


def test_holm_matches_the_textbook_example():
    # Holm (1979) style: sorted p 0.01, 0.02, 0.03, 0.04 with m = 4 -> 0.04, 0.06, 0.06, 0.06
    assert stats.holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert stats.holm([]) == []
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_score_interval_by_kind():
    assert stats.score_interval([1, 0, 1, 1], "binary") == pytest.approx(stats.wilson_interval(3, 4))
    low, high = stats.score_interval([0.1, 0.4, 0.5, 0.9], "continuous", seed=3, name="a")
    assert 0.1 <= low < 0.475 < high <= 0.9
    assert stats.is_binary([0, 1.0, True]) and not stats.is_binary([0, 0.5])
