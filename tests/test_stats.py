"""Cell intervals, paired comparisons and rank ranges, checked against scipy and statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sp
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from leaderboards.stats import (
    Z95,
    bootstrap,
    clustered_se,
    mcnemar_exact,
    paired,
    rank_ranges,
    sample_interval,
    wilson,
)


@pytest.mark.parametrize(("k", "n"), [(0, 8), (1, 8), (5, 8), (8, 8), (37, 100), (612, 1000)])
def test_wilson_matches_statsmodels(k: int, n: int) -> None:
    assert wilson(k, n) == pytest.approx(proportion_confint(k, n, alpha=0.05, method="wilson"), abs=1e-12)


def test_a_binary_cell_without_clusters_gets_the_wilson_interval() -> None:
    iv = sample_interval([1, 1, 0, 1, 0, 0, 0, 1, 1, 1])
    assert iv is not None and iv.method == "wilson" and iv.n == 10 and iv.mean == 0.6
    assert (iv.low, iv.high) == pytest.approx(proportion_confint(6, 10, method="wilson"), abs=1e-12)
    assert iv.se == pytest.approx(np.sqrt(0.6 * 0.4 / 10))


def test_clustered_se_matches_statsmodels_cluster_robust_ols() -> None:
    rng = np.random.default_rng(1)
    groups = np.repeat([f"subject{i}" for i in range(12)], rng.integers(3, 15, size=12))
    effect = {g: rng.normal(0, 0.3) for g in sorted(set(groups))}  # sorted: the same data under any hash seed
    scores = np.array([float(rng.random() < 0.5 + effect[g] / 2) for g in groups])
    fit = OLS(scores, np.ones(len(scores))).fit(
        cov_type="cluster", cov_kwds={"groups": np.unique(groups, return_inverse=True)[1], "use_correction": False}
    )
    assert clustered_se(scores, list(groups)) == pytest.approx(fit.bse[0], rel=1e-10)
    iv = sample_interval(scores.tolist(), list(groups))
    assert iv is not None and iv.method == "clustered" and iv.clusters == 12
    assert iv.low == pytest.approx(max(0.0, scores.mean() - Z95 * fit.bse[0]), rel=1e-10)
    # Correlated questions within a subject: the clustered error is wider than the naive one
    assert clustered_se(scores, list(groups)) > scores.std() / np.sqrt(len(scores))


def test_bootstrap_for_bounded_non_binary_scores_agrees_with_scipy() -> None:
    rng = np.random.default_rng(7)
    scores = rng.choice([0.0, 0.5, 1.0], size=300, p=[0.3, 0.2, 0.5])
    low, high, se = bootstrap(scores)
    ref = sp.bootstrap((scores,), np.mean, method="percentile", n_resamples=20000, rng=np.random.default_rng(3))
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert high == pytest.approx(ref.confidence_interval.high, abs=0.01)
    assert se == pytest.approx(ref.standard_error, rel=0.1)
    iv = sample_interval(scores.tolist())
    assert iv is not None and iv.method == "bootstrap" and (iv.low, iv.high) == (low, high)


def test_paired_difference_matches_scipy_ttest_rel() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(50)
    b = np.clip(a - 0.05 + rng.normal(0, 0.1, 50), 0, 1)
    ids = [f"s{i}" for i in range(50)]
    result = paired(dict(zip(ids, a, strict=True)), dict(zip(ids, b, strict=True)))
    assert result is not None and result.n_shared == 50
    t = sp.ttest_rel(a, b).statistic
    assert result.diff == pytest.approx(float(np.mean(a - b)))
    assert result.diff / result.se == pytest.approx(t, rel=1e-10)
    assert result.p_mcnemar is None


def test_paired_uses_shared_samples_only_and_mcnemar_matches_statsmodels() -> None:
    a = {f"q{i}": float(i % 3 != 0) for i in range(40)}  # 26 right
    b = {f"q{i}": float(i % 2 == 0) for i in range(5, 45)}  # shares q5..q39
    result = paired(a, b)
    assert result is not None and result.n_shared == 35
    shared = [f"q{i}" for i in range(5, 40)]
    n10 = sum(1 for s in shared if a[s] == 1 and b[s] == 0)
    n01 = sum(1 for s in shared if a[s] == 0 and b[s] == 1)
    assert result.discordant == (n10, n01)
    table = [[0, n10], [n01, 0]]
    assert result.p_mcnemar == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)
    for b_, c_ in [(0, 0), (0, 5), (3, 12), (20, 21)]:
        assert mcnemar_exact(b_, c_) == pytest.approx(mcnemar([[0, b_], [c_, 0]], exact=True).pvalue, rel=1e-12)


def test_rank_ranges_join_neighbours_that_cannot_be_separated() -> None:
    order = ["a", "b", "c", "d"]
    separable = {("a", "b"): False, ("b", "c"): True, ("a", "c"): True, ("c", "d"): False, ("b", "d"): True}

    def better(x: str, y: str) -> bool | None:
        return separable.get((x, y))

    ranges = rank_ranges(order, better)
    assert {k: v.text for k, v in ranges.items()} == {"a": "1-2", "b": "1-2", "c": "3-4", "d": "3-4"}
    assert {k: v.text for k, v in rank_ranges(order, lambda x, y: None).items()} == {
        "a": "1",
        "b": "2",
        "c": "3",
        "d": "4",
    }
