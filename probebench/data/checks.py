"""Every annotation is checked against its image when a dataset is read, with one policy per kind:

- an annotated size (COCO `width`/`height`, VOC `<size>`) that differs from the image's: refused, one line
  naming the image and both sizes (a size of 0 means "take the image's");
- a label map, saliency mask or object mask of another size than its image: refused, naming both files;
- a box that is not finite or is inverted (x1 < x0 or y1 < y0): its instance is dropped, and counted in a
  warning that every record on the data keeps;
- a box with nothing inside its image: dropped and counted;
- a keypoint that is not finite, or labelled (visibility >= 1) and outside its image: dropped and counted;
- an image with no annotation: kept; it has no box (left out of CorLoc, counted there) and is all
  background.

Format-level problems (a file that does not parse, a field of the wrong type, a visibility code the format
does not have, a label outside the class list) are the readers' and the label maps' own one-line refusals.
Sizes are the image as the loader reads it, EXIF orientation applied, from cached file headers
(`probebench.data.sizes`); an unreadable image is not checked here (extraction names and skips it).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import numpy as np

from probebench.data.base import ImageDataset, Sample
from probebench.data.sizes import file_sizes
from probebench.errors import UserError

SPATIAL = ("boxes", "keypoints", "mask", "object_mask", "size")
PER_INSTANCE = ("iscrowd", "segmentation", "difficult", "truncated")  # lists aligned with `boxes`
MASK_KEYS = ("mask", "object_mask")
SHOWN = 3  # problems named in the one line


def check_annotations(dataset: ImageDataset, clip_boxes: bool = False) -> ImageDataset:
    """`dataset` with its annotations checked against its images: refused (UserError) where an annotation
    does not belong to its image, with what cannot be a box or a keypoint dropped and counted (a warning on
    the dataset). `clip_boxes`: boxes end at the image's border (VOC's convention)."""
    rows = [i for i, s in enumerate(dataset.samples) if any(k in s.ann for k in SPATIAL)]
    if not rows:
        return dataset
    images = file_sizes([dataset.root / dataset.samples[i].path for i in rows])
    masks = {}
    for key in MASK_KEYS:
        if found := [i for i in rows if key in dataset.samples[i].ann]:
            sizes = file_sizes([dataset.root / dataset.samples[i].ann[key] for i in found])
            masks[key] = dict(zip(found, sizes.tolist(), strict=True))
    problems: list[str] = []
    dropped: Counter = Counter()
    first: dict[str, str] = {}
    samples = list(dataset.samples)
    for (width, height, turned), i in zip(images.tolist(), rows, strict=True):
        sample = dataset.samples[i]
        if width == 0:
            continue  # unreadable: extraction names it and skips it
        ann = dict(sample.ann)
        if "size" in ann:
            problems += _size_problem(sample, ann["size"], (width, height), bool(turned))
            ann["size"] = [width, height]
        for key, sizes in masks.items():
            if i in sizes and (sizes[i][0], sizes[i][1]) != (width, height) and sizes[i][0]:
                kind = "object mask" if key == "object_mask" else "label map"
                kind = "saliency mask" if dataset.extra.get("saliency_convention") else kind
                problems.append(
                    f"{kind} {ann[key]} is {sizes[i][0]} x {sizes[i][1]}, its image "
                    f"{sample.path} is {width} x {height}"
                )
        before = Counter(dropped)
        if ann.get("boxes"):
            _check_boxes(ann, width, height, clip_boxes, dropped)
        if ann.get("keypoints"):
            _check_keypoints(ann, width, height, dropped)
        for reason in dropped - before:
            first.setdefault(reason, sample.path)
        samples[i] = Sample(sample.path, sample.label, sample.split, ann)
    if problems:
        more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise UserError(
            f"dataset {dataset.name!r}: {len(problems)} annotation(s) do not match their image: "
            f"{'; '.join(problems[:SHOWN])}{more}; fix the annotations (a size of 0 takes the image's)"
        )
    checked = replace(dataset, samples=samples, warnings=list(dataset.warnings))
    if dropped:
        said = ", ".join(f"{n} {reason} (first in {first[reason]})" for reason, n in sorted(dropped.items()))
        checked.warn(f"annotations dropped as they cannot be what they claim: {said}")
    return checked


def _size_problem(sample: Sample, size: list, image: tuple[int, int], turned: bool) -> list[str]:
    width, height = (int(v) for v in size)
    if width <= 0 or height <= 0 or (width, height) == image:
        return []
    exif = " (its EXIF orientation turns the stored picture)" if turned and (height, width) == image else ""
    return [f"image {sample.path} is {image[0]} x {image[1]}{exif}, its annotation says {width} x {height}"]


def _check_boxes(ann: dict, width: int, height: int, clip: bool, dropped: Counter) -> None:
    """Drop (with everything aligned to them: crowd flags, polygons, VOC flags, keypoints of the instance)
    the boxes that are not boxes of this image; clip the others when the format's boxes end at the border."""
    keep, boxes = [], []
    for box in ann["boxes"]:
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            dropped["box(es) not finite"] += 1
        elif x1 < x0 or y1 < y0:
            dropped["box(es) inverted"] += 1
        elif x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0:
            dropped["box(es) outside their image"] += 1
        else:
            if clip:
                box = [max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1), *box[4:]]
            keep.append(True)
            boxes.append(box)
            continue
        keep.append(False)
    ann["boxes"] = boxes
    if all(keep):
        return
    for key in PER_INSTANCE:
        if key in ann and len(ann[key]) == len(keep):
            ann[key] = [v for v, k in zip(ann[key], keep, strict=True) if k]
    renumber = np.cumsum(keep) - 1  # old instance index -> new
    if ann.get("keypoints") and len(ann["keypoints"][0]) > 4:  # COCO: rows name their instance
        ann["keypoints"] = [
            [*kp[:4], int(renumber[int(kp[4])])] for kp in ann["keypoints"] if keep[int(kp[4])]
        ]


def _check_keypoints(ann: dict, width: int, height: int, dropped: Counter) -> None:
    kept = []
    for kp in ann["keypoints"]:
        x, y, visibility = float(kp[0]), float(kp[1]), int(kp[2])
        if not (math.isfinite(x) and math.isfinite(y)):
            dropped["keypoint(s) not finite"] += 1
        elif visibility >= 1 and not (0 <= x <= width and 0 <= y <= height):
            dropped["keypoint(s) outside their image"] += 1
        else:
            kept.append(kp)
    ann["keypoints"] = kept


def check_label_values(dataset: ImageDataset, shown: int = SHOWN) -> list[str]:
    """Every label map of `dataset` decoded and its values checked against the class list (what a
    segmentation task would refuse, after extraction): the first `shown` problems, one line each. Reads
    every label map, so it is `doctor`'s check, not every run's."""
    from probebench.data.annotations import label_map

    if dataset.extra.get("saliency_convention"):  # binary masks, read by their own convention
        return []
    if not dataset.extra.get("mask_classes") or not any("mask" in s.ann for s in dataset.samples[:1000]):
        return []
    problems = []
    for sample in dataset.samples:
        if "mask" not in sample.ann:
            continue
        try:
            label_map(dataset, sample, "mask")
        except UserError as exc:
            problems.append(str(exc))
            if len(problems) >= shown:
                break
    return problems
