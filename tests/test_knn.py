"""Weighted kNN against hand-computed cases; chunking and blocking do not change the answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probebench.learners.knn import knn_classify, knn_topk, weighted_vote


def test_hand_computed_weighted_vote():
    # Unit vectors at angles; the test point is at angle 0.
    ang = np.array([0.1, 0.2, 1.0, 1.1, 1.2])
    train = np.stack([np.cos(ang), np.sin(ang)], 1)
    labels = np.array([0, 0, 1, 1, 1])
    sims, idx = knn_topk([train], np.array([[1.0, 0.0]]), k=5)
    assert idx[0].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(sims[0].numpy(), np.cos(ang), rtol=1e-6)
    scores = weighted_vote(sims, idx, labels, k=5, num_classes=2, temperature=0.07)
    w = np.exp(np.cos(ang) / 0.07)
    np.testing.assert_allclose(scores[0].numpy(), [w[:2].sum(), w[2:].sum()], rtol=1e-5)
    # Majority is class 1 (3 of 5) but the two close neighbours outweigh it: the weighting matters.
    assert scores[0].argmax().item() == 0
    assert weighted_vote(sims, idx, labels, 5, 2, temperature=100.0)[0].argmax().item() == 1


def test_k_limits_the_vote():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    out = knn_classify([train], np.array([0, 1, 1]), np.array([[1.0, 0.01]]), np.array([0]), 2, ks=(1, 3))
    assert out["top1_k1"] == 100.0 and out["top1_k3"] == pytest.approx(100.0)
    out = knn_classify([train], np.array([1, 0, 0]), np.array([[1.0, 0.01]]), np.array([0]), 2, ks=(1,))
    assert out["top1_k1"] == 0.0


def test_blocks_and_chunks_match_one_pass():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(500, 16)), rng.normal(size=(70, 16))
    s1, i1 = knn_topk([train], test, k=20)
    s2, i2 = knn_topk(np.array_split(train, 7), test, k=20, chunk=9)
    torch.testing.assert_close(s1, s2)
    assert torch.equal(i1, i2)


def test_top5_reported_only_with_more_than_five_classes():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(60, 8)), rng.normal(size=(12, 8))
    few = knn_classify([train], rng.integers(0, 5, 60), test, rng.integers(0, 5, 12), 5, ks=(10,))
    many = knn_classify([train], rng.integers(0, 7, 60), test, rng.integers(0, 7, 12), 7, ks=(10,))
    assert "top5_k10" not in few and {"top1_k10", "top5_k10", "top5_k10_ci95"} <= set(many)
    assert many["top5_k10"] >= many["top1_k10"]


def test_perfectly_separable_classes_score_100():
    centres = np.eye(4) * 10
    rng = np.random.default_rng(2)
    ytr, yte = np.repeat(np.arange(4), 25), np.repeat(np.arange(4), 5)
    xtr = centres[ytr] + rng.normal(size=(100, 4)) * 0.1
    xte = centres[yte] + rng.normal(size=(20, 4)) * 0.1
    out = knn_classify([xtr], ytr, xte, yte, 4, ks=(10, 20))
    assert out["top1_k10"] == out["top1_k20"] == out["mean_per_class_k20"] == 100.0
    assert out["top1_k10_ci95"] == [100.0, 100.0]
