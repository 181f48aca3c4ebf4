"""Metrics against hand-computed cases: ties, top-5, a class absent from the test split, bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pytest

from probebench.metrics.classification import (
    bootstrap,
    classification_metrics,
    per_class_mean,
    true_class_rank,
)


def test_rank_breaks_ties_towards_the_lower_class_index():
    scores = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.2, 0.2, 0.1], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    labels = np.array([1, 1, 1, 0, 2])
    # row 1: class 2 scores higher, class 0 ties and has the lower index -> rank 2; row 2: class 0 ties -> 1
    assert true_class_rank(scores, labels).tolist() == [0, 2, 1, 0, 2]


def test_top1_top5_and_mean_per_class_by_hand():
    scores = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.2, 0.2, 0.1]])
    out = classification_metrics(scores, np.array([1, 1, 1]), resamples=20)
    assert out["top1"] == pytest.approx(100 / 3) and "top5" not in out, "3 classes: no top-5"
    assert out["mean_per_class"] == pytest.approx(100 / 3) and out["n_test"] == 3

    six = np.tile(np.arange(6, dtype=float), (2, 1))  # class 5 scores highest, class 0 lowest
    out = classification_metrics(six, np.array([0, 1]), resamples=20)
    assert out["top1"] == 0.0 and out["top5"] == 50.0, "class 1 is 5th, class 0 is 6th"


def test_a_class_absent_from_the_test_split_is_not_counted():
    correct = np.array([True, True, False, False])
    labels = np.array([0, 0, 0, 2])  # class 1 has no test image
    assert per_class_mean(correct, labels) == pytest.approx((2 / 3 + 0) / 2 * 100)
    scores = np.eye(3)[[0, 0, 1, 0]]  # predicts 0, 0, 1, 0
    out = classification_metrics(scores, labels, resamples=20)
    assert out["top1"] == 50.0 and out["mean_per_class"] == pytest.approx(100 / 3)


def test_bootstrap_is_seeded_contains_the_estimate_and_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    correct = rng.random(200) < 0.7
    a, b = (
        bootstrap(correct, labels, seed=3, resamples=200),
        bootstrap(correct, labels, seed=3, resamples=200),
    )
    assert a == b and bootstrap(correct, labels, seed=4, resamples=200) != a
    lo, hi = a["acc"]
    assert lo < correct.mean() * 100 < hi and 5 < hi - lo < 20

    # the vectorised per-class interval equals the textbook loop over the same resamples
    idx = np.random.default_rng(3).integers(0, 200, size=(200, 200))
    loop = [per_class_mean(correct[i], labels[i]) for i in idx]
    assert a["per_class"] == pytest.approx(tuple(np.percentile(loop, [2.5, 97.5])))
    assert bootstrap(np.ones(50, bool), np.zeros(50, int))["acc"] == (100.0, 100.0)
