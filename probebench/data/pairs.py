"""Image pairs for keypoint correspondence, and the keypoints a pair shares.

A pair is (source row, target row) of one dataset role, both images of one category (their class label:
a CUB species, an SPair category). A benchmark's own list (`listed`: SPair-71k's, PF-PASCAL's and
PF-WILLOW's, read into `dataset.extra["pairs"][split]` with each pair's keypoint ids) is used as it is; a pair
naming an image that could not be read is skipped and counted. Two ways to make pairs from images alone:
- `all`: every ordered pair of two different images of a category (PF-PASCAL/PF-WILLOW folders without a
  pair list; small sets);
- `sampled`: `per_category` ordered pairs of each category drawn without replacement with the run's seed
  (CUB's same-species pairs; every pair when a category has fewer).
A category with fewer than two images gives no pair: it is skipped and counted, and the record says so.

Keypoints are matched by name (their part index), never by position in a list. A keypoint takes part where
its visibility is at least `min_visibility` in both images (CUB: 1 is visible; COCO: 1 labelled but
occluded, 2 visible). Left and right are object-centric in CUB and SPair ("left wing" is the bird's), and no
image is flipped here, so names are compared as they are.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from probebench.data.base import ImageDataset, Sample
from probebench.errors import UserError

PAIR_MODES = ("sampled", "all", "listed")
EXHAUSTIVE_LIMIT = 4_000_000  # ordered pairs of a category drawn by index; more: drawn one at a time


@dataclass
class PairDraw:
    """The pairs (P, 2) of dataset rows, what was left out and why (counted by reason), and for listed pairs
    the keypoint parts each pair names (None: every part both images label)."""

    pairs: np.ndarray
    skipped: Counter
    parts: list[list[int]] | None = None


def listed_pairs(dataset: ImageDataset, split: str, rows: np.ndarray) -> PairDraw:
    """The dataset's own pairs of `split` whose two images are among `rows` (the readable ones)."""
    listed = (dataset.extra.get("pairs") or {}).get(split)
    if listed is None:
        raise UserError(
            f"dataset {dataset.name!r} has no pair list for split {split!r} (pair lists: "
            f"{', '.join(sorted(dataset.extra.get('pairs') or {})) or 'none'}); use pairs: sampled or all"
        )
    readable = set(np.asarray(rows).tolist())
    keep = [p for p in listed if p[0] in readable and p[1] in readable]
    skipped = Counter({"listed pairs naming an image that could not be read": len(listed) - len(keep)})
    pairs = np.array([p[:2] for p in keep], dtype=np.int64).reshape(-1, 2)
    return PairDraw(pairs, +skipped, [list(p[2]) for p in keep])


def draw_pairs(dataset: ImageDataset, rows: np.ndarray, mode: str, per_category: int, seed: int) -> PairDraw:
    """Ordered pairs of two different images of one category among `rows` (N,), category by category in
    label order, each category's pairs in increasing (source, target) order."""
    if mode not in PAIR_MODES:
        raise ValueError(f"pairs {mode!r}: use one of {', '.join(PAIR_MODES)}")
    labels = np.array([dataset.samples[int(r)].label for r in rows], dtype=np.int64)
    rng = np.random.default_rng(seed)
    out, skipped = [], Counter()
    for c in np.unique(labels):
        members = np.asarray(rows)[labels == c]
        n = len(members)
        if n < 2:
            skipped["categories with fewer than two images"] += 1
            continue
        total = n * (n - 1)
        if mode == "all" or total <= per_category:
            k = np.arange(total)
        elif total <= EXHAUSTIVE_LIMIT:
            k = np.sort(rng.choice(total, size=per_category, replace=False))
        else:
            k = _draw_large(rng, total, per_category)
        i, j = np.divmod(k, n - 1)
        j = j + (j >= i)  # the j-th of the other n - 1 images
        out.append(np.stack([members[i], members[j]], axis=1))
    pairs = np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)
    return PairDraw(pairs.astype(np.int64), skipped)


def _draw_large(rng: np.random.Generator, total: int, count: int) -> np.ndarray:
    """`count` distinct integers below `total` (total far above count): drawn until enough differ."""
    seen: set[int] = set()
    while len(seen) < count:
        seen.update(int(v) for v in rng.integers(0, total, size=count - len(seen)))
    return np.array(sorted(seen), dtype=np.int64)


def labelled_keypoints(sample: Sample, min_visibility: int, where: str) -> dict[int, tuple[float, float]]:
    """Part index -> (x, y) of an image's keypoints at `min_visibility` or above. An image whose keypoints
    name one part twice (COCO files with several instances per image) is refused: whole-image pairs cannot
    say which instance a point belongs to."""
    out: dict[int, tuple[float, float]] = {}
    for kp in sample.ann.get("keypoints") or []:
        if kp[2] < min_visibility:
            continue
        part = int(kp[3])
        if part in out:
            raise UserError(
                f"{where}: image {sample.path} has two keypoints of part {part + 1} (several instances per "
                "image); keypoint correspondence pairs whole images of one object"
            )
        out[part] = (float(kp[0]), float(kp[1]))
    return out


def shared_keypoints(
    source: dict[int, tuple[float, float]], target: dict[int, tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parts both images label (K,) in increasing order, and their points in each, (K, 2) and (K, 2)."""
    parts = np.array(sorted(set(source) & set(target)), dtype=np.int64)
    src = np.array([source[p] for p in parts], dtype=np.float64).reshape(-1, 2)
    trg = np.array([target[p] for p in parts], dtype=np.float64).reshape(-1, 2)
    return parts, src, trg
