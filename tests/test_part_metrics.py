"""Part-level metrics: retrieval AP against scikit-learn (ties included, chunked equals dense) and the
segmentation metrics against a confusion matrix computed by hand (an absent class, the ignore index)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from probebench.learners.retrieval import average_precisions, retrieval_metrics
from probebench.metrics.segmentation import confusion, segmentation_metrics


def crops(n: int = 60, d: int = 8, classes: int = 4, seed: int = 0, ties: bool = False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = rng.normal(size=(n, d)) + 1.5 * np.eye(classes, d)[labels]
    if ties:  # one-hot directions: every similarity is exactly 0 or 1, so most of them tie
        hot = np.where(rng.random(n) < 0.6, labels, rng.integers(0, d, n))
        x = np.eye(d)[hot]
    return x.astype(np.float32), labels


def sklearn_aps(x: np.ndarray, labels: np.ndarray, include_self: bool) -> np.ndarray:
    """The authors' loop: per query, average_precision_score(same label, cosine similarity)."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = []
    for i in range(len(x)):
        keep = np.ones(len(x), bool) if include_self else np.arange(len(x)) != i
        sims = (xn @ xn[i])[keep].astype(np.float32)
        out.append(average_precision_score(labels[keep] == labels[i], sims))
    return np.array(out)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("include_self", [True, False])
def test_ap_equals_scikit_learn_per_query(ties, include_self):
    x, y = crops(ties=ties)
    ours = average_precisions(x, y, include_self=include_self, chunk=7)
    np.testing.assert_allclose(ours, sklearn_aps(x, y, include_self), atol=1e-6)


def test_chunked_equals_dense_and_a_lonely_query_has_no_ap():
    x, y = crops(n=45, seed=3)
    np.testing.assert_array_equal(average_precisions(x, y, chunk=4), average_precisions(x, y, chunk=1000))
    y2 = y.copy()
    y2[0] = 99  # the only crop of its part
    ap = average_precisions(x, y2, include_self=False)
    assert np.isnan(ap[0]) and not np.isnan(ap[1:]).any()
    assert average_precisions(x, y2, include_self=True)[0] == 1.0, (
        "with itself in the database it finds itself"
    )
    m = retrieval_metrics(ap, y2)
    assert m["n_queries"] == 44 and m["n_without_positive"] == 1


def test_ap_and_map_by_hand():
    ap = np.array([1.0, 0.5, 0.5, 0.2])
    labels = np.array([0, 0, 0, 1])
    m = retrieval_metrics(ap, labels, resamples=200)
    assert m["ap"] == pytest.approx(55.0)  # mean over queries
    assert m["map"] == pytest.approx((2 / 3 * 100 + 20) / 2)  # mean over classes of their means
    assert m["ap_ci95"][0] <= m["ap"] <= m["ap_ci95"][1]
    assert m["per_class_ap"] == {"0": pytest.approx(200 / 3), "1": pytest.approx(20.0)}


def test_segmentation_metrics_from_a_hand_made_confusion():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 3, 0], [2, 0, 3, 3]])
    conf = confusion(pred, gt, num_classes=5)
    expect = np.zeros((5, 5), int)
    expect[0, 0], expect[0, 1] = 3, 1  # class 0: 4 pixels, 3 right
    expect[1, 1], expect[1, 3] = 2, 1  # class 1: 3 pixels, 2 right, 1 called 3
    expect[2, 2], expect[2, 0] = 1, 1  # class 2: 2 pixels; class 3 never in gt; class 4 nowhere
    np.testing.assert_array_equal(conf, expect)
    m = segmentation_metrics(conf, ["bg", "a", "b", "c", "d"])
    iou = {"bg": 3 / 5, "a": 2 / 4, "b": 1 / 2, "c": 0.0}  # c predicted but absent from gt: IoU 0 (mmseg)
    assert m["per_class_iou"]["d"] is None and m["per_class_acc"]["c"] is None
    assert m["miou"] == pytest.approx(np.mean(list(iou.values())) * 100)
    assert m["macc"] == pytest.approx(np.mean([3 / 4, 2 / 3, 1 / 2]) * 100)
    assert m["aacc"] == pytest.approx(6 / 9 * 100) and m["n_pixels"] == 9
    with pytest.raises(ValueError, match="outside"):
        confusion(pred, np.full_like(gt, 7), num_classes=5)
