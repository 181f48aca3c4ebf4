"""Metrics of unsupervised object discovery, as the baselines' own evaluation code computes them.

- CorLoc (LOST `main_lost.py`): one box per image; correct when its IoU with any ground-truth box is >= 0.5,
  IoU as LOST's `bbox_iou` (ultralytics' formula, eps 1e-7 added to the heights and to the union) in float32,
  as it runs on LOST's integer boxes: a box at exactly half the union scores 0.5 and counts.
- Saliency (TokenCut `unsupervised_saliency_detection/metric.py`): per image, accuracy and IoU of the mask
  binarised at > 0.5, averaged over images; max F-beta with beta^2 = 0.3: precision and recall per image at
  the 255 thresholds 0, 1/255, ..., 254/255 (prediction > threshold; precision 1 for an empty prediction,
  recall 1 for an empty ground truth), F per image and threshold (0 where undefined), averaged over images per
  threshold, then the maximum. An image whose ground truth is empty has no saliency score: its IoU is 0/0
  for an empty prediction (TokenCut's code divides by zero there) and its F rewards predicting nothing, so it
  is left out of all three averages and counted; a set with no foreground at all has no saliency metrics.
  The standard sets (ECSSD, DUTS, DUT-OMRON) have no empty mask, so their numbers are TokenCut's.
- Segmentation retrieval (MaskContrast `retrieval.py`, the VOC12 protocol FOUND follows): `SegRetrieval`,
  scored with the project's one confusion matrix and mIoU (`probebench.metrics.segmentation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IOU_EPS = 1e-7
BETA_SQ = 0.3
BINS = 255


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with many (M, 4), all [x0, y0, x1, y1], as LOST's `bbox_iou` computes it on the
    integer boxes it is given: in float32, where its eps of 1e-7 vanishes against box sizes."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(box, dtype=np.float32)
    eps = np.float32(IOU_EPS)
    iw = np.clip(np.minimum(b[2], boxes[:, 2]) - np.maximum(b[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(b[3], boxes[:, 3]) - np.maximum(b[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area1 = (b[2] - b[0]) * (b[3] - b[1] + eps)
    area2 = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1] + eps)
    return (inter / (area1 + area2 - inter + eps)).astype(np.float64)


def correct(box: np.ndarray | None, truth: np.ndarray) -> bool:
    """CorLoc's test for one image: IoU >= 0.5 with any ground-truth box (no box: a miss)."""
    return box is not None and len(truth) > 0 and bool((box_iou(box, truth) >= 0.5).any())


@dataclass
class CorLoc:
    """Accumulates CorLoc image by image: one box per image, scored against the image's ground-truth boxes."""

    hits: list[bool] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the images scored, for the per-item outcomes

    def add(self, box: np.ndarray | None, truth: np.ndarray, name: str = "") -> tuple[bool, float]:
        """Whether the box is correct, and its best IoU with a ground-truth box (0 without a box)."""
        ok = correct(box, truth)
        self.hits.append(ok)
        self.names.append(name)
        return ok, round(float(box_iou(box, truth).max()), 4) if box is not None and len(truth) else 0.0

    def metrics(self, seed: int) -> tuple[float, list[float]]:
        """CorLoc in %, and its 95 % bootstrap interval over the images."""
        from probebench.metrics.classification import bootstrap

        ok = np.asarray(self.hits, dtype=bool)
        return 100.0 * float(ok.mean()), list(bootstrap(ok, np.zeros(len(ok)), seed)["acc"])


SALIENCY = ("saliency_acc", "saliency_iou", "saliency_max_f")


@dataclass
class Saliency:
    """Accumulates TokenCut's saliency metrics image by image (images with an empty ground truth counted
    and left out)."""

    acc: list[float] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    f_sum: np.ndarray = field(default_factory=lambda: np.zeros(BINS))
    empty_truth: int = 0
    curves: list[np.ndarray] = field(default_factory=list)  # each scored image's F curve (BINS,)
    names: list[str] = field(default_factory=list)  # the images scored, for the per-item outcomes

    def add(self, pred: np.ndarray, truth: np.ndarray, name: str = "") -> None:
        """pred (H, W) float in [0, 1] (a binary mask is 0/1); truth (H, W) bool."""
        if not truth.any():
            self.empty_truth += 1
            return
        self.names.append(name)
        binary = pred > 0.5
        self.acc.append(float((binary == truth).mean()))
        union = np.logical_or(binary, truth).sum()  # > 0: the truth is not empty
        self.iou.append(float(np.logical_and(binary, truth).sum() / union))
        self.curves.append(f_curve(pred, truth))
        self.f_sum += self.curves[-1]

    def metrics(self) -> tuple[dict, str | None]:
        """In % (TokenCut's README prints them so; FOUND's tables as fractions, .712 = 71.2 here), or none
        and why, when no image has any foreground."""
        if not self.acc:
            return {}, f"none of the {self.empty_truth} test image(s) has any foreground in its ground truth"
        return {
            "saliency_acc": 100.0 * float(np.mean(self.acc)),
            "saliency_iou": 100.0 * float(np.mean(self.iou)),
            "saliency_max_f": 100.0 * float((self.f_sum / len(self.acc)).max()),
        }, None


def f_curve(pred: np.ndarray, truth: np.ndarray, beta_sq: float = BETA_SQ) -> np.ndarray:
    """F-beta of one image at each of the 255 thresholds (BINS,), TokenCut's `precision_recall`/`F_score`.

    Counting predictions above each threshold through a histogram keeps this O(pixels + bins)."""
    thresholds = np.arange(0.0, 1.0, 1.0 / BINS)
    edges = np.searchsorted(thresholds, pred.ravel(), side="left")  # pred > t_i  <=>  index > i
    fg = truth.ravel().astype(bool)
    above_all = np.bincount(edges, minlength=BINS + 1)
    above_fg = np.bincount(edges[fg], minlength=BINS + 1)
    # predictions strictly above threshold i: bins i+1..BINS
    area = np.cumsum(above_all[::-1])[::-1][1:]
    tp = np.cumsum(above_fg[::-1])[::-1][1:].astype(np.float64)
    gt_area = float(fg.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(area == 0, 1.0, tp / np.maximum(area, 1))
        recall = np.full(BINS, 1.0) if gt_area == 0 else tp / gt_area
        f = (1 + beta_sq) * precision * recall / (beta_sq * precision + recall)
    return np.nan_to_num(f, nan=0.0)


@dataclass
class SegRetrieval:
    """VOC12 segmentation retrieval (MaskContrast's protocol, as FOUND reports it).

    Each reference (train) image's predicted mask pools its dense features into one L2-normalised descriptor,
    labelled with the majority ground-truth class under the mask (background and ignored pixels excluded;
    masks over no object pixel are skipped). Each query (val) image's descriptor takes its cosine nearest
    neighbour's label, painted over its whole mask; the rest is background. mIoU over every class, and over a
    chosen subset (FOUND's 7 classes) with the other classes left out of the mean.
    """

    num_classes: int  # including the background, 0
    ignore: int = 255
    descriptors: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    skipped: int = 0

    @staticmethod
    def descriptor(tokens: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
        """tokens (h, w, D), weights (h, w) -> (D,) mask-weighted mean, L2-normalised; None for an empty
        mask."""
        w = weights.reshape(-1).astype(np.float64)
        if w.sum() <= 0:
            return None
        d = (np.asarray(tokens, dtype=np.float64).reshape(len(w), -1) * w[:, None]).sum(0) / w.sum()
        return d / (np.linalg.norm(d) + 1e-12)

    def add_reference(self, desc: np.ndarray | None, mask: np.ndarray, truth: np.ndarray) -> None:
        """mask (H, W) bool predicted object, truth (H, W) class labels at the same size."""
        under = truth[mask]
        under = under[(under != 0) & (under != self.ignore)]
        if desc is None or len(under) == 0:
            self.skipped += 1
            return
        self.descriptors.append(desc)
        self.labels.append(int(np.bincount(under).argmax()))

    def predict(self, desc: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
        """The query's label map (H, W): its nearest reference's class over its mask, background elsewhere."""
        out = np.zeros(mask.shape, dtype=np.int64)
        if desc is not None and self.descriptors:
            nearest = int(np.argmax(np.stack(self.descriptors) @ desc))
            out[mask] = self.labels[nearest]
        return out
