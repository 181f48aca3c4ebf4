"""PCK: the share of keypoints predicted within alpha x max(h, w) of a reference size of the target image, in
the target's original pixels.

The reference size is what each dataset's papers use, and a record names the one it used (`threshold`):
- `box`: the target's object box (SPair-71k; CUB's box). CompVis/distilldift#3 found a published SPair
  threshold scaled by the wrong side, so the size is taken here once, from the box in original pixels;
- `keypoints`: the box around the target's labelled keypoints (PF-WILLOW);
- `image`: the target image (PF-PASCAL).
A point is a hit when its distance is at most the threshold. PCK over a set of pairs is hits over keypoints
(every keypoint of every pair weighs the same): as per-item counts, pairs are the items and each pair's
counts are its (hits, keypoints) per keypoint name, so a bootstrap resamples whole pairs.
"""

from __future__ import annotations

import numpy as np

from probebench.data.base import Sample
from probebench.errors import UserError

THRESHOLDS = ("box", "keypoints", "image")


def reference_size(
    sample: Sample, mode: str, image_size: tuple[int, int], keypoints: np.ndarray, where: str
) -> float:
    """max(h, w) of the reference of one target image, in its original pixels. image_size (width, height)
    as stored; keypoints (M, 2) its labelled points."""
    if mode == "image":
        return float(max(image_size))
    if mode == "keypoints":
        if len(keypoints) == 0:
            return 0.0
        span = keypoints.max(0) - keypoints.min(0)
        return float(span.max())
    if mode != "box":
        raise ValueError(f"threshold {mode!r}: use one of {', '.join(THRESHOLDS)}")
    boxes = sample.ann.get("boxes") or []
    if len(boxes) != 1:
        raise UserError(
            f"{where}: image {sample.path} has {len(boxes)} boxes; threshold 'box' measures PCK by the one "
            "object box of each image: give the threshold knob 'keypoints' or 'image', or one box per image"
        )
    x0, y0, x1, y1 = (float(v) for v in boxes[0][:4])
    return max(x1 - x0, y1 - y0)


def metric_name(alpha: float) -> str:
    return f"pck@{alpha:g}"


def items_array(alpha: float) -> str:
    """The items file's array of one alpha's counts (array names are [a-z0-9_])."""
    return "pck_" + f"{alpha:g}".replace(".", "_").replace("-", "m")


def pair_counts(
    hits: np.ndarray, pair: np.ndarray, part: np.ndarray, n_pairs: int, n_parts: int
) -> np.ndarray:
    """Per-pair counts (P, 3, K) of keypoint hits: intersection = hits, ground truth = prediction = the
    keypoints the pair shares, per keypoint name. hits, pair, part (M,) one row per tested keypoint."""
    counts = np.zeros((n_pairs, 3, n_parts), dtype=np.int64)
    np.add.at(counts[:, 0], (pair, part), hits.astype(np.int64))
    np.add.at(counts[:, 1], (pair, part), 1)
    counts[:, 2] = counts[:, 1]
    return counts


def grouped_pck(hits: np.ndarray, groups: np.ndarray, names: list[str]) -> dict[str, float]:
    """PCK in % of each group (a category, a keypoint name) that holds a tested keypoint."""
    out = {}
    for g in np.unique(groups):
        out[names[int(g)]] = float(hits[groups == g].mean() * 100)
    return out
