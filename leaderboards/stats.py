"""Error bars for a board: a 95% interval for every cell, paired comparisons, rank ranges.

Following Evan Miller, "Adding Error Bars to Evals" (2024, arXiv:2411.00640):

- A cell's interval is the framework's own standard error where its record has one (lm-eval's
  `*_stderr`), else it comes from the cell's samples: for 0/1 scores the Wilson interval for a
  proportion (it stays inside [0, 1] and is not empty at 0 of 8, where the plain CLT interval is),
  with clustered standard errors instead when the samples carry a cluster key (questions of one
  subject are not independent: Miller's section 2.2), and a percentile bootstrap for bounded scores
  that are not 0/1 (e.g. AlpacaEval's 0 / 0.5 / 1 preferences).
- Two models on the same cell are compared on the samples both answered (Miller's section 4: the
  paired difference, whose standard error is that of the per-sample differences, clustered where the
  samples are), and for 0/1 scores by McNemar's exact test on the discordant pairs.
- Ranks: a row's rank is a range `best-worst`, where best is 1 + the rows that are better than it at
  95% and worst the rows it is not better than at 95% (by the paired difference of the averages).

Scores are fractions of the metric's full scale (0-1); the board shows them times 100.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20241104  # fixed: the same store gives the same board


@dataclass(frozen=True)
class Interval:
    """A cell's mean and 95% interval, on 0-1."""

    n: int
    mean: float
    low: float
    high: float
    se: float | None
    method: str  # "framework stderr" | "wilson" | "clustered" | "bootstrap" | "stratified"
    clusters: int | None = None

    def scaled(self, factor: float = 100.0) -> tuple[float, float]:
        return self.low * factor, self.high * factor

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


@dataclass(frozen=True)
class Paired:
    """Model a minus model b on the samples both have (0-1 scale)."""

    n_shared: int
    diff: float
    se: float
    low: float
    high: float
    discordant: tuple[int, int] | None = None  # (a right & b wrong, a wrong & b right) for 0/1 scores
    p_mcnemar: float | None = None

    @property
    def separable(self) -> bool:
        """Whether a and b differ at 95%: the exact test where there is one, else the interval."""
        if self.p_mcnemar is not None:
            return self.p_mcnemar < 0.05
        return self.low > 0 or self.high < 0


def is_binary(scores: Sequence[float] | np.ndarray) -> bool:
    values = np.asarray(scores, dtype=float)
    return bool(np.all((values == 0.0) | (values == 1.0)))


def wilson(k: int | float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for k successes in n trials."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def clustered_se(scores: Sequence[float] | np.ndarray, groups: Sequence[str]) -> float:
    """Miller's clustered standard error of the mean: sqrt(sum over clusters of (sum of deviations)^2) / n
    (the sandwich estimator without small-sample correction)."""
    values = np.asarray(scores, dtype=float)
    deviations = values - values.mean()
    _, index = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    sums = np.bincount(index, weights=deviations)
    return float(math.sqrt(float(np.sum(sums * sums))) / len(values))


def bootstrap(
    scores: Sequence[float] | np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float, float]:
    """Percentile bootstrap of the mean: (low, high, standard error of the resampled means)."""
    values = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high), float(means.std(ddof=1))


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def sample_interval(scores: Sequence[float], groups: Sequence[str | None] | None = None) -> Interval | None:
    """A cell's interval from its samples' 0-1 scores (None without samples)."""
    values = np.asarray(scores, dtype=float)
    n = len(values)
    if n == 0:
        return None
    mean = float(values.mean())
    named = [g for g in groups or [] if g is not None]
    clusters = len(set(named)) if len(named) == n else 0
    if clusters > 1:
        se = clustered_se(values, [str(g) for g in named])
        return Interval(n, mean, _clip(mean - Z95 * se), _clip(mean + Z95 * se), se, "clustered", clusters)
    if is_binary(values):
        low, high = wilson(float(values.sum()), n)
        return Interval(n, mean, low, high, math.sqrt(mean * (1 - mean) / n), "wilson")
    low, high, se = bootstrap(values)
    return Interval(n, mean, low, high, se, "bootstrap")


def stratified_interval(scores: Sequence[float], strata: Sequence[str]) -> Interval | None:
    """The interval of an unweighted mean of stratum means (OpenCompass's C-Eval average of its subjects), from
    the samples of each stratum: mean of means, SE = sqrt(sum of var_s / n_s) / k (var_s with ddof=1)."""
    values = np.asarray(scores, dtype=float)
    if len(values) == 0 or len(strata) != len(values):
        return None
    _, index = np.unique(np.asarray(strata, dtype=object).astype(str), return_inverse=True)
    means, variances = [], []
    for s in range(int(index.max()) + 1):
        part = values[index == s]
        means.append(float(part.mean()))
        variances.append(float(part.var(ddof=1)) / len(part) if len(part) > 1 else 0.0)
    k = len(means)
    mean = float(np.mean(means))
    se = math.sqrt(sum(variances)) / k
    return Interval(len(values), mean, _clip(mean - Z95 * se), _clip(mean + Z95 * se), se, "stratified", k)


def stderr_interval(mean: float, stderr: float, n: int | None) -> Interval:
    """The framework's own standard error (on 0-1) as a 95% normal interval."""
    return Interval(n or 0, mean, _clip(mean - Z95 * stderr), _clip(mean + Z95 * stderr), stderr, "framework stderr")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value on b and c discordant pairs (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def paired(
    a: Mapping[str, float], b: Mapping[str, float], groups: Mapping[str, str | None] | None = None
) -> Paired | None:
    """a minus b on their shared sample ids (None when they share fewer than 2)."""
    shared = sorted(set(a) & set(b))
    n = len(shared)
    if n < 2:
        return None
    xa = np.array([a[i] for i in shared], dtype=float)
    xb = np.array([b[i] for i in shared], dtype=float)
    d = xa - xb
    diff = float(d.mean())
    keys = [groups.get(i) for i in shared] if groups else []
    if keys and all(k is not None for k in keys) and len(set(keys)) > 1:
        se = clustered_se(d, [str(k) for k in keys])
    else:
        se = float(d.std(ddof=1) / math.sqrt(n))
    discordant = p = None
    if is_binary(xa) and is_binary(xb):
        discordant = (int(np.sum((xa == 1) & (xb == 0))), int(np.sum((xa == 0) & (xb == 1))))
        p = mcnemar_exact(*discordant)
    return Paired(n, diff, se, diff - Z95 * se, diff + Z95 * se, discordant, p)


@dataclass(frozen=True)
class RankRange:
    best: int
    worst: int

    @property
    def text(self) -> str:
        return str(self.best) if self.best == self.worst else f"{self.best}-{self.worst}"


def rank_ranges(ordered: Sequence[str], better: Callable[[str, str], bool | None]) -> dict[str, RankRange]:
    """Rank ranges for `ordered` (best first by point estimate). `better(x, y)` says whether x is
    better than y at 95% (None: not known, counted as separable, i.e. the plain rank).

    Only neighbours are compared: walking up from a row, the first row found better than it is taken
    as better together with every row above it (they have higher averages still); likewise down."""
    out: dict[str, RankRange] = {}
    n = len(ordered)
    for i, name in enumerate(ordered):
        best = i
        while best > 0 and better(ordered[best - 1], name) is False:
            best -= 1
        worst = i
        while worst < n - 1 and better(name, ordered[worst + 1]) is False:
            worst += 1
        out[name] = RankRange(best + 1, worst + 1)
    return out
