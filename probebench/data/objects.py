"""Ground truth for object discovery, whatever a dataset's format stores: boxes (CorLoc), foreground masks
(saliency) and class label maps (segmentation retrieval), all in pixels of the image as stored.

Boxes (`boxes`):
- `instances`: every annotated box. VOC boxes are 0-based with exclusive ends (LOST's conversion); COCO boxes
  are rounded to integers and crowd boxes dropped, as LOST's `extract_gt_COCO`; `exclude_hard` drops VOC's
  difficult and truncated objects (LOST's `--no_hard`; an image with only such objects then has none).
- `union`: one box around all of them (the car of `carparts`, whose parts are annotated, not the car).
- Datasets without boxes but with masks: the box of the foreground mask.
Foreground (`foreground`): saliency masks under their convention; the embedded object masks; mask folders'
labelled pixels (label > 0, not ignored); COCO's instance union.
"""

from __future__ import annotations

import numpy as np

from probebench.data.base import ImageDataset, Sample
from probebench.data.labelmaps import has_polygons, ignore_index, label_map

BOX_MODES = ("instances", "union")


def _is_saliency(dataset: ImageDataset) -> bool:
    return bool(dataset.extra.get("saliency_convention"))


def has_boxes(dataset: ImageDataset) -> bool:
    return any(s.ann.get("boxes") for s in dataset.samples[:1000])


def has_foreground(dataset: ImageDataset) -> bool:
    """Whether the images carry a foreground to score saliency on: saliency masks, label maps, object
    masks, or COCO instances with polygons (a box-only COCO file has none)."""
    first = dataset.samples[0].ann if dataset.samples else {}
    if _is_saliency(dataset) or any(k in first for k in ("mask", "object_mask")):
        return True
    return "segmentation" in first and has_polygons(dataset)


def boxes(dataset: ImageDataset, sample: Sample, mode: str = "instances", exclude_hard: bool = False):
    """(M, 4) float [x0, y0, x1, y1] ground-truth boxes of one image (M may be 0), or None when the image is
    to be left out of CorLoc (LOST drops images whose objects are all hard under `--no_hard`)."""
    ann = sample.ann
    if ann.get("boxes"):
        keep = np.ones(len(ann["boxes"]), dtype=bool)
        if "iscrowd" in ann:
            keep &= ~np.asarray(ann["iscrowd"], dtype=bool)
        if exclude_hard and "difficult" in ann:
            hard = np.asarray(ann["difficult"], dtype=bool) | np.asarray(ann["truncated"], dtype=bool)
            if hard.all():
                return None
            keep &= ~hard
        out = np.asarray([b[:4] for b in ann["boxes"]], dtype=np.float64)[keep]
        if "iscrowd" in ann:  # COCO: LOST rounds each coordinate to an integer
            out = np.round(out)
    elif has_foreground(dataset):
        ys, xs = np.nonzero(foreground(dataset, sample))
        found = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]] if len(ys) else []
        out = np.asarray(found, dtype=np.float64).reshape(-1, 4)
    else:
        return np.zeros((0, 4))
    if mode == "union" and len(out):
        out = np.array([[out[:, 0].min(), out[:, 1].min(), out[:, 2].max(), out[:, 3].max()]])
    return out


def foreground(dataset: ImageDataset, sample: Sample) -> np.ndarray:
    """(H, W) bool foreground of one image."""
    if _is_saliency(dataset):
        from probebench.data.formats.saliency import saliency_foreground

        return saliency_foreground(dataset.root, sample, dataset.extra["saliency_convention"])
    labels = label_map(dataset, sample, "object_mask")
    return (labels > 0) & (labels != ignore_index(dataset))


def classes(dataset: ImageDataset, sample: Sample, annotation: str) -> np.ndarray:
    """(H, W) class label map for segmentation retrieval (0 background, the ignore index kept)."""
    return label_map(dataset, sample, annotation)
