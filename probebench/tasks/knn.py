"""Weighted k-nearest-neighbour classification on frozen features, as DINO defines it.

Cosine similarity between L2-normalised features; each of the k nearest training images votes for its class
with weight exp(similarity / T), T = 0.07. Test rows are processed in chunks and training features are
streamed in blocks, so neither the full similarity matrix nor all training features need to sit in device
memory at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_KS = (10, 20)
TEMPERATURE = 0.07


def knn_topk(
    train: Iterable[np.ndarray], test: np.ndarray, k: int, *, chunk: int = 1024, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine neighbours. train: blocks of (Ni, C) in order; test (M, C) -> sims, indices (M, k)."""
    q = F.normalize(torch.as_tensor(np.asarray(test), dtype=torch.float32, device=device), dim=1)
    best_s = torch.full((len(q), 0), -float("inf"), device=device)
    best_i = torch.zeros((len(q), 0), dtype=torch.long, device=device)
    offset = 0
    for block in train:
        t = F.normalize(torch.as_tensor(np.asarray(block), dtype=torch.float32, device=device), dim=1)
        sims = torch.cat([q[lo : lo + chunk] @ t.T for lo in range(0, len(q), chunk)])
        ids = torch.arange(offset, offset + len(t), device=device).expand(len(q), -1)
        s, j = torch.cat([best_s, sims], 1).topk(min(k, best_s.shape[1] + len(t)), dim=1)
        best_i = torch.cat([best_i, ids], 1).gather(1, j)
        best_s = s
        offset += len(t)
    return best_s, best_i


def weighted_vote(
    sims: torch.Tensor,
    idx: torch.Tensor,
    train_labels: np.ndarray,
    k: int,
    num_classes: int,
    temperature: float = TEMPERATURE,
) -> torch.Tensor:
    """Class scores (M, num_classes) from the first k neighbours of each row."""
    labels = torch.as_tensor(train_labels, device=idx.device)[idx[:, :k]]
    weights = (sims[:, :k] / temperature).exp()
    scores = torch.zeros(len(idx), num_classes, device=idx.device)
    return scores.scatter_add_(1, labels, weights)


def topk_accuracy(scores: torch.Tensor, labels: np.ndarray, k: int) -> float:
    pred = scores.topk(min(k, scores.shape[1]), dim=1).indices.cpu()
    return float((pred == torch.as_tensor(labels)[:, None]).any(1).float().mean() * 100)


def knn_classify(
    train: Iterable[np.ndarray],
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    ks: tuple[int, ...] = DEFAULT_KS,
    temperature: float = TEMPERATURE,
) -> dict:
    """Top-1 (and top-5 when there are more than 5 classes) accuracy in % for every k."""
    sims, idx = knn_topk(train, test, max(ks))
    metrics = {}
    for k in ks:
        scores = weighted_vote(sims, idx, train_labels, k, num_classes, temperature)
        metrics[f"top1_k{k}"] = topk_accuracy(scores, test_labels, 1)
        if num_classes > 5:
            metrics[f"top5_k{k}"] = topk_accuracy(scores, test_labels, 5)
    return metrics
