"""Weighted k-nearest-neighbour classification on frozen features, as DINO defines it.

Cosine similarity between L2-normalised features; each of the k nearest training images votes for its class
with weight exp(similarity / T), T = 0.07, k in {10, 20, 100, 200}. Training features arrive as a stream of
blocks (memory-mapped cache shards) and test rows are processed in chunks, so neither all training features
nor the full similarity matrix ever sit in memory: the peak is one block plus one (chunk x block) matrix.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from probebench.learners import defaults
from probebench.metrics.classification import classification_metrics


def knn_topk(
    train: Iterable[np.ndarray], test: np.ndarray, k: int, *, chunk: int = 1024, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine neighbours. train: blocks of (Ni, C) in order; test (M, C) -> sims, indices (M, k').

    k' = min(k, number of training rows). Rows of equal similarity keep the earlier training row first.
    """
    q = F.normalize(torch.as_tensor(np.asarray(test), dtype=torch.float32, device=device), dim=1)
    best_s = torch.full((len(q), 0), -float("inf"), device=device)
    best_i = torch.zeros((len(q), 0), dtype=torch.long, device=device)
    offset = 0
    for block in train:
        t = F.normalize(torch.as_tensor(np.asarray(block, dtype=np.float32), device=device), dim=1)
        width = min(k, best_s.shape[1] + len(t))
        new_s = torch.empty((len(q), width), device=device)
        new_i = torch.empty((len(q), width), dtype=torch.long, device=device)
        ids = torch.arange(offset, offset + len(t), device=device)
        for lo in range(0, len(q), chunk):
            sims = torch.cat([best_s[lo : lo + chunk], q[lo : lo + chunk] @ t.T], 1)
            cand = torch.cat([best_i[lo : lo + chunk], ids.expand(len(sims), -1)], 1)
            s, j = sims.topk(width, dim=1, sorted=True)
            new_s[lo : lo + chunk], new_i[lo : lo + chunk] = s, cand.gather(1, j)
        best_s, best_i = new_s, new_i
        offset += len(t)
    return best_s, best_i


def weighted_vote(
    sims: torch.Tensor,
    idx: torch.Tensor,
    train_labels: np.ndarray,
    k: int,
    num_classes: int,
    temperature: float = defaults.KNN_TEMPERATURE,
) -> torch.Tensor:
    """Class scores (M, num_classes) from the first k neighbours of each row."""
    labels = torch.as_tensor(train_labels, device=idx.device)[idx[:, :k]]
    weights = (sims[:, :k] / temperature).exp()
    scores = torch.zeros(len(idx), num_classes, device=idx.device)
    return scores.scatter_add_(1, labels, weights)


def knn_classify(
    train: Iterable[np.ndarray],
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    ks: tuple[int, ...] = defaults.KNN_KS,
    temperature: float = defaults.KNN_TEMPERATURE,
    *,
    seed: int = 0,
    ranks: dict[str, np.ndarray] | None = None,
) -> dict:
    """Metrics (see `classification_metrics`) for every k, with the suffix `_k{k}`: top1_k10, ...

    A k larger than the training set uses every training row (and is recorded as asked). `ranks` receives
    the test rows' true-class ranks per k (`classification_metrics`). `seed` seeds the bootstrap intervals.
    """
    sims, idx = knn_topk(train, test, max(ks))
    metrics: dict = {}
    for k in ks:
        scores = weighted_vote(sims, idx, train_labels, k, num_classes, temperature)
        metrics.update(classification_metrics(scores, test_labels, suffix=f"_k{k}", seed=seed, ranks=ranks))
    return metrics
