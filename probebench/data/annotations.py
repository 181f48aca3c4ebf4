"""What a dataset's annotations say about each image, whatever its format stores, in pixels of the image as
stored: class label maps (segmentation probes, segmentation retrieval), boxes (CorLoc) and foreground masks
(saliency).

Label maps, two annotations chosen by a task's `annotation` knob:
- `mask`: the dataset's own per-pixel classes. Mask folders and the embedded dataset store label-map files
  (the dataset's `merge` map applied); COCO files store instance polygons or RLE, rasterised here with each
  pixel taking its instance's category (0 where no instance lies; larger instances are drawn first so a small
  part on a large one stays visible; a category named `_background_`, which COCO Annotator exports, is 0).
  Values index `label_classes(dataset, "mask")`, 0 being the background.
- `object_mask`: the object against the background. The embedded dataset stores one per image; elsewhere it is
  every labelled pixel of `mask` (the union of the parts). Object pixels take the image's class (index + 1)
  when images carry one, else 1.
Pixels at the dataset's ignore index (default 255) stay ignored.

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
from PIL import Image

from probebench.data.base import ImageDataset, Sample
from probebench.data.formats.masks import load_label_map, read_label_file
from probebench.errors import UserError

ANNOTATIONS = ("mask", "object_mask")
COCO_BACKGROUND = ("_background_",)


def ignore_index(dataset: ImageDataset) -> int:
    return int(dataset.extra.get("ignore_index", 255))


def _coco_values(dataset: ImageDataset) -> tuple[list[str], list[int]]:
    """Class names of a COCO label map (0 background) and the value each category index takes."""
    names, values = ["background"], []
    for name in dataset.classes:
        if name in COCO_BACKGROUND:
            values.append(0)
        else:
            values.append(len(names))
            names.append(name)
    return names, values


def _labelled(dataset: ImageDataset) -> bool:
    return bool(dataset.classes) and any(s.label >= 0 for s in dataset.samples[:1000])


def label_classes(dataset: ImageDataset, annotation: str) -> list[str]:
    """Names of label values 0..K-1 (0 is the background) of `annotation` on `dataset`."""
    if annotation == "object_mask":
        return ["background", *(dataset.classes if _labelled(dataset) else ["object"])]
    if annotation != "mask":
        raise ValueError(f"unknown annotation {annotation!r}; use {' or '.join(ANNOTATIONS)}")
    if dataset.extra.get("mask_classes"):
        return list(dataset.extra["mask_classes"])
    if any("mask" in s.ann for s in dataset.samples[:1000]):
        raise UserError(
            f"dataset {dataset.name!r} has label maps but no class list: add classes.txt to its folder or "
            "give `classes:` in its datasets entry"
        )
    if has_polygons(dataset):
        return _coco_values(dataset)[0]
    raise UserError(
        f"dataset {dataset.name!r} has no per-pixel labels (label maps or instance polygons); segmentation "
        "needs a mask folder, COCO instances or the embedded dataset"
    )


def has_polygons(dataset: ImageDataset) -> bool:
    """COCO instances with a polygon or RLE somewhere (a box-only file has no per-pixel labels)."""
    return any(seg for s in dataset.samples for seg in s.ann.get("segmentation") or [])


def check_values(labels: np.ndarray, classes: int, ignore: int, where: str) -> np.ndarray:
    """`labels` when every value is a class (0 to classes - 1) or the ignore index, else one line naming the
    file and the values: a label outside the class list would train on, or score, a class nobody named."""
    bad = (labels != ignore) & ((labels < 0) | (labels >= classes))
    if bad.any():
        values = np.unique(labels[bad])
        shown = ", ".join(str(v) for v in values[:5]) + (
            f" and {len(values) - 5} more" if len(values) > 5 else ""
        )
        raise UserError(
            f"{where} holds label(s) {shown}: not one of its {classes} classes (0 to {classes - 1}) nor the "
            f"ignore index {ignore}; fix the class list, the merge map or the labels"
        )
    return labels


def _rasterise(dataset: ImageDataset, sample: Sample) -> np.ndarray:
    from probebench.data.formats.coco import instance_masks

    width, height = sample.ann.get("size") or (0, 0)
    if not (width and height):
        with Image.open(dataset.root / sample.path) as im:
            width, height = im.size
    masks = instance_masks(sample, int(height), int(width))
    _, values = _coco_values(dataset)
    out = np.zeros((int(height), int(width)), dtype=np.int64)
    for k in np.argsort([-m.sum() for m in masks], kind="stable"):
        out[masks[k]] = values[int(sample.ann["boxes"][k][4])]
    merge = dataset.extra.get("merge")
    if merge:
        lut = np.arange(max(int(out.max()), max(merge)) + 1)
        for src, dst in merge.items():
            lut[src] = dst
        out = lut[out]
    return out


def label_map(dataset: ImageDataset, sample: Sample, annotation: str) -> np.ndarray:
    """(H, W) int64 label map of one image at its stored size (values as `label_classes` names them)."""
    ignore = ignore_index(dataset)
    if annotation == "object_mask" and "object_mask" in sample.ann:
        fg = read_label_file(dataset.root / sample.ann["object_mask"]) > 0
        return fg.astype(np.int64) * (sample.label + 1 if sample.label >= 0 else 1)
    if "mask" in sample.ann:
        parts = load_label_map(dataset.root, sample, dataset.extra.get("merge"), ignore)
        merged = " (after its merge map)" if dataset.extra.get("merge") else ""
        where = f"label map {dataset.root / sample.ann['mask']}{merged}"
        check_values(parts, len(label_classes(dataset, "mask")), ignore, where)
    elif "segmentation" in sample.ann:  # COCO: an image without instances is all background
        parts = _rasterise(dataset, sample)
    else:
        raise UserError(f"dataset {dataset.name!r}: image {sample.path} has no per-pixel labels")
    if annotation == "mask":
        return parts
    value = sample.label + 1 if _labelled(dataset) and sample.label >= 0 else 1
    return np.where(parts == ignore, ignore, (parts > 0) * value).astype(np.int64)


def reduce_zero_label(labels: np.ndarray, ignore: int = 255) -> np.ndarray:
    """mmseg's `reduce_zero_label`: the background (0) is ignored and every other class moves down by one."""
    out = labels - 1
    out[(labels == 0) | (labels == ignore)] = ignore
    return out


def resize_nearest(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W) -> (height, width), each output pixel taking the label under its centre."""
    h, w = labels.shape
    ys = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return labels[np.ix_(ys, xs)]


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
