"""Segmentation metrics as mmseg computes them (`mmseg.core.evaluation.metrics`): mIoU, mAcc and aAcc from a
confusion matrix accumulated over images, pixels at the ignore index left out.

Per class c: IoU = |pred c and gt c| / |pred c or gt c|, Acc = |pred c and gt c| / |gt c|; the means are
NaN-means, so a class absent from the ground truth has no Acc, and a class absent from both prediction and
ground truth has no IoU; a class predicted but absent from the ground truth has IoU 0 and counts (mmseg's
behaviour). aAcc = correctly labelled pixels / labelled pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from probebench.stats.items import ItemScores


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(K, K) int64 counts, rows the ground-truth class, columns the predicted one. pred, gt (H, W) ints."""
    pred, gt = np.asarray(pred).ravel(), np.asarray(gt).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction of {pred.size} pixels for a ground truth of {gt.size}")
    keep = gt != ignore_index
    if ((gt[keep] < 0) | (gt[keep] >= num_classes)).any():
        raise ValueError(f"ground-truth labels outside 0..{num_classes - 1} (and not the ignore index)")
    cells = gt[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(cells, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def count_rows(conf: np.ndarray) -> np.ndarray:
    """(3, K) per-class pixel counts of a confusion matrix (K, K): intersection, ground truth, prediction.
    Summed over images they give back every metric here (`probebench.stats.items`)."""
    conf = np.asarray(conf)
    return np.stack([np.diag(conf), conf.sum(1), conf.sum(0)])


def count_items(ids: list[str], counts: np.ndarray) -> ItemScores:
    """Per-image items of mIoU, mAcc and aAcc: each image (named by `ids`) with its (3, K) pixel counts
    (counts (N, 3, K), from `count_rows`), one array the three metrics share."""
    from probebench.stats.items import ItemScores

    items = ItemScores()
    for m in ("miou", "macc", "aacc"):
        items.add(m, m, "images", ids, counts, array="counts")
    return items


def class_iou(conf: np.ndarray) -> np.ndarray:
    """(K,) IoU per class from a confusion matrix (K, K); NaN for a class neither in truth nor prediction."""
    conf = np.asarray(conf, dtype=np.float64)
    intersect = np.diag(conf)
    union = conf.sum(1) + conf.sum(0) - intersect
    with np.errstate(invalid="ignore", divide="ignore"):
        return intersect / union


def miou(conf: np.ndarray, classes: list[int] | None = None) -> float:
    """Mean IoU (a fraction) over the classes that occur in the truth or the prediction, over `classes`
    only when given; NaN when none does (the caller says why it has no number)."""
    iou = class_iou(conf)
    if classes is not None:
        iou = iou[np.asarray(classes, dtype=np.int64)]
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def segmentation_metrics(conf: np.ndarray, class_names: list[str] | None = None) -> dict:
    """mIoU, mAcc, aAcc in % from a confusion matrix (K, K), with per-class IoU and Acc (None where NaN)."""
    conf = np.asarray(conf, dtype=np.float64)
    intersect = np.diag(conf)
    area_gt = conf.sum(1)
    iou = class_iou(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = intersect / area_gt
    names = class_names or [str(i) for i in range(len(conf))]
    return {
        "miou": miou(conf) * 100,
        "macc": float(np.nanmean(acc) * 100),
        "aacc": float(intersect.sum() / max(area_gt.sum(), 1) * 100),
        "per_class_iou": {
            n: (None if np.isnan(v) else float(v * 100)) for n, v in zip(names, iou, strict=True)
        },
        "per_class_acc": {
            n: (None if np.isnan(v) else float(v * 100)) for n, v in zip(names, acc, strict=True)
        },
        "n_pixels": int(area_gt.sum()),
    }
