"""Classification metrics with 95% bootstrap confidence intervals over test images.

Ties are broken towards the lower class index (as `numpy.argmax` does), so a metric never depends on the order
in which a sort happened to return equal scores. Mean per-class accuracy averages over the classes present in
the test labels: a class absent from the test split has no accuracy and is not counted as zero.
"""

from __future__ import annotations

import numpy as np
import torch

RESAMPLES = 1000
CI_LEVEL = 95


def true_class_rank(scores: torch.Tensor | np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank (0 = best) of the true class per row. scores (M, K), labels (M,) -> (M,) int.

    Classes scoring higher than the true class rank before it; among equal scores, lower class indices first.
    """
    s = torch.as_tensor(scores, dtype=torch.float64).cpu()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    true = s.gather(1, y[:, None])
    lower_index = torch.arange(s.shape[1])[None, :] < y[:, None]
    rank = (s > true).sum(1) + ((s == true) & lower_index).sum(1)
    return rank.numpy()


def per_class_mean(correct: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in `labels` of the fraction of their rows that are `correct`, in %."""
    classes, inverse = np.unique(labels, return_inverse=True)
    hits = np.bincount(inverse, weights=correct.astype(np.float64), minlength=len(classes))
    return float((hits / np.bincount(inverse, minlength=len(classes))).mean() * 100)


def bootstrap(correct: np.ndarray, labels: np.ndarray, seed: int = 0, resamples: int = RESAMPLES) -> dict:
    """Percentile intervals of accuracy and mean per-class accuracy over test rows resampled with replacement.

    correct (M,) bool, labels (M,) -> {"acc": (lo, hi), "per_class": (lo, hi)} in %.
    """
    m = len(correct)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, m, size=(resamples, m))
    acc = correct[idx].mean(1) * 100
    classes, inverse = np.unique(labels, return_inverse=True)
    k = len(classes)
    # One bincount over (resample, class) cells; a class missing from a resample is left out of its mean.
    cell = (np.arange(resamples)[:, None] * k + inverse[idx]).ravel()
    hits = np.bincount(cell, weights=correct[idx].ravel().astype(np.float64), minlength=resamples * k)
    counts = np.bincount(cell, minlength=resamples * k).reshape(resamples, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.nanmean(hits.reshape(resamples, k) / counts, axis=1) * 100
    q = [(100 - CI_LEVEL) / 2, 100 - (100 - CI_LEVEL) / 2]
    return {
        "acc": tuple(float(v) for v in np.percentile(acc, q)),
        "per_class": tuple(float(v) for v in np.percentile(per_class, q)),
    }


def classification_metrics(
    scores: torch.Tensor | np.ndarray,
    labels: np.ndarray,
    *,
    suffix: str = "",
    seed: int = 0,
    resamples: int = RESAMPLES,
    ranks: dict[str, np.ndarray] | None = None,
) -> dict:
    """Top-1, top-5 (with more than 5 classes) and mean per-class accuracy in %, each with its 95% interval.

    scores (M, K), labels (M,). Keys: top1, top1_ci95, top5, top5_ci95, mean_per_class, mean_per_class_ci95,
    n_test; `suffix` is appended to each metric name (kNN reports one set per k: top1_k20, ...). `ranks`,
    when given, receives each test row's true-class rank under `suffix`: the per-item outcomes the record
    keeps (`classification_items`).
    """
    labels = np.asarray(labels)
    rank = true_class_rank(scores, labels)
    if ranks is not None:
        ranks[suffix] = rank
    top1 = rank < 1
    ci1 = bootstrap(top1, labels, seed, resamples)
    out = {
        f"top1{suffix}": float(top1.mean() * 100),
        f"top1{suffix}_ci95": list(ci1["acc"]),
        f"mean_per_class{suffix}": per_class_mean(top1, labels),
        f"mean_per_class{suffix}_ci95": list(ci1["per_class"]),
    }
    if np.shape(scores)[1] > 5:
        top5 = rank < 5
        out[f"top5{suffix}"] = float(top5.mean() * 100)
        out[f"top5{suffix}_ci95"] = list(bootstrap(top5, labels, seed, resamples)["acc"])
    out["n_test"] = len(labels)
    return out


def classification_items(
    items, ranks: dict[str, np.ndarray], labels: np.ndarray, ids: list[str], metrics: dict
):
    """Add to `items` (`probebench.stats.items.ItemScores`) each test row's top-1 hit, its top-5 hit where
    `metrics` has top-5, and the labels that mean per-class accuracy averages by, for every suffix of
    `ranks` (suffix -> (M,) true-class ranks, as `classification_metrics` gave them)."""
    for suffix, rank in ranks.items():
        items.add(f"top1{suffix}", "mean", "test", ids, rank < 1)
        items.add(f"mean_per_class{suffix}", "class_mean", "test", ids, rank < 1, labels=labels)
        if f"top5{suffix}" in metrics:
            items.add(f"top5{suffix}", "mean", "test", ids, rank < 5)
