"""The bootstrap over shared test items (and training seeds), vectorised for many encoders at once.

One draw of item indices per resample is shared by every encoder on a task: that is what makes a comparison
paired (both sides see the same resampled test set), and it lets a resample of E encoders be one matrix
product of the multiplicity matrix (B, N) with their outcomes (N, E), rather than E separate bootstraps.
Where an encoder has several training seeds, each resample also draws its seeds with replacement (a
two-level bootstrap: seeds, then items), so the spread a probe's training adds is in the interval too.

The estimate of an encoder is the mean over its seeds of the metric on all items. Intervals are percentile
intervals (as every interval in a record); a difference's p-value is the two-sided bootstrap p-value of the
centred distribution, (1 + #{|d* - d| >= |d|}) / (B + 1), and a family of p-values is corrected by Holm's
step-down method.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from probebench.stats.items import ItemMetric, evaluate_kind

COMPARE_RESAMPLES = 10_000  # a p-value near 0.05 is then known to about +-0.004
CHUNK_BYTES = 64 * 2**20  # one chunk of the multiplicity matrix (resamples x items, float64)
ALPHA = 0.05


@dataclass
class Distribution:
    """Each entrant's estimate (E,) and bootstrap distribution (B, E), one shared item draw per row."""

    estimates: np.ndarray
    draws: np.ndarray


def resample_weights(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Item multiplicities of `resamples` bootstrap resamples of `n` items, in chunks (b, n) float64. The
    indices are `default_rng(seed).integers(0, n, (resamples, n))`, drawn chunk by chunk."""
    rng = np.random.default_rng(seed)
    rows = max(1, min(resamples, CHUNK_BYTES // (8 * max(n, 1))))
    done = 0
    while done < resamples:
        b = min(rows, resamples - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + (np.arange(b) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def bootstrap_entrants(
    spec: ItemMetric,
    entrants: list[list[np.ndarray]],
    labels: np.ndarray | None = None,
    resamples: int = COMPARE_RESAMPLES,
    seed: int = 0,
) -> Distribution:
    """The metric of each entrant (an encoder under one setting) over the same N items: `entrants[e]` is
    one outcome array per training seed, aligned to the shared items ((N,), (N, 3, K) counts or (N, T)
    curves). `labels` (N,): the items' classes, for `class_mean`."""
    sizes = [len(seeds) for seeds in entrants]
    if min(sizes, default=0) < 1:
        raise ValueError("every entrant needs at least one seed's outcomes")
    values = np.stack([v for seeds in entrants for v in seeds], axis=-1)  # (N, ..., C)
    n = values.shape[0]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    per_seed = evaluate_kind(spec, values, labels, np.ones((1, n)))[0]  # (C,)
    estimates = np.array([per_seed[a:b].mean() for a, b in zip(starts[:-1], starts[1:], strict=True)])
    seed_rng = np.random.default_rng([seed, 1])  # seeds drawn apart from items: the item draws stay fixed
    chunks = []
    for w in resample_weights(n, resamples, seed):
        m = evaluate_kind(spec, values, labels, w)  # (b, C)
        out = np.empty((len(w), len(entrants)))
        for e, (a, b) in enumerate(zip(starts[:-1], starts[1:], strict=True)):
            if b - a == 1:
                out[:, e] = m[:, a]
                continue
            picks = seed_rng.integers(0, b - a, size=(len(w), b - a))
            share = np.stack([(picks == s).sum(1) for s in range(b - a)], axis=1) / (b - a)
            out[:, e] = (m[:, a:b] * share).sum(1)
        chunks.append(out)
    return Distribution(estimates, np.concatenate(chunks))


def percentile_interval(draws: np.ndarray, level: float = 95.0) -> tuple[float, float]:
    """The percentile interval of a bootstrap distribution (B,), resamples without a value left out."""
    ok = draws[np.isfinite(draws)]
    if not len(ok):
        return float("nan"), float("nan")
    lo, hi = np.percentile(ok, [(100 - level) / 2, 100 - (100 - level) / 2])
    return float(lo), float(hi)


def p_value(draws: np.ndarray, estimate: float) -> float:
    """Two-sided bootstrap p-value of a difference: how often the centred distribution lands at least as far
    from zero as the estimate, (1 + #{|d* - d| >= |d|}) / (B + 1)."""
    ok = draws[np.isfinite(draws)]
    if not np.isfinite(estimate) or not len(ok):
        return float("nan")
    return float((1 + np.sum(np.abs(ok - estimate) >= abs(estimate))) / (len(ok) + 1))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (monotone, at most 1); NaN stays NaN and is not counted."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def interval_of(spec: ItemMetric, values: np.ndarray, labels: np.ndarray | None, resamples: int, seed: int):
    """A single record's 95 % percentile interval of one metric over its items."""
    dist = bootstrap_entrants(spec, [[values]], labels, resamples, seed)
    return list(percentile_interval(dist.draws[:, 0]))


@dataclass
class Pairs:
    """Every pair (i, j), i < j, of a distribution's entrants: the difference i - j, its 95 % percentile
    interval, and its p-value (each (P,))."""

    i: np.ndarray
    j: np.ndarray
    difference: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    p: np.ndarray


def pairwise_differences(dist: Distribution, level: float = 95.0) -> Pairs:
    """All pairwise differences of a distribution's entrants at once, paired by its shared item draws."""
    i, j = np.triu_indices(dist.draws.shape[1], k=1)
    estimate = dist.estimates[i] - dist.estimates[j]
    draws = dist.draws[:, i] - dist.draws[:, j]  # (B, P)
    ok = np.isfinite(draws)
    lo, hi = np.nanpercentile(
        np.where(ok, draws, np.nan), [(100 - level) / 2, 100 - (100 - level) / 2], axis=0
    )
    far = (np.abs(draws - estimate) >= np.abs(estimate)) & ok
    p = (1 + far.sum(0)) / (ok.sum(0) + 1)
    return Pairs(i, j, estimate, lo, hi, np.where(np.isfinite(estimate), p, np.nan))
