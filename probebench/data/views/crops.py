"""Keypoint-centred part crops (Zhu et al. part retrieval and classification, protocols.md section 1.3, P1).

For each target keypoint, d is its distance to the nearest other target keypoint of the same image (COCO:
of the same person). The authors' code keeps d / 2 when 20 < d / 2 < 1000 and crops the square
(x - h, y - h, x + h, y + h) with h = round(d / 4): a side of about d / 2 (`side="code"`, the default). The
paper's text says a d x d patch (`side="text"`: h = round(d / 2), same filter). The box is centred on the
keypoint rounded to whole pixels. Crops are then resized by the encoder's own preprocessing, so the keypoint
stays at the crop's centre.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from probebench.data.base import ImageDataset, Sample
from probebench.errors import UserError

SIDES = ("code", "text")


@dataclass(frozen=True)
class PartCrop:
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) in image pixels, may reach outside the image
    part: int  # the keypoint's index in the file's keypoint list (CUB: part id - 1)
    centre: tuple[float, float]  # the keypoint
    group: int  # the person (COCO) or -1 (one group per image)


def keypoint_crops(
    keypoints: list[list[float]],
    targets: list[int],
    *,
    side: str = "code",
    min_visibility: int = 1,
    min_per_group: int = 2,
    bounds: tuple[float, float] = (20.0, 1000.0),
    counts: Counter | None = None,
) -> list[PartCrop]:
    """Crops for one image. keypoints: [x, y, visibility, part] or [x, y, visibility, part, group] rows (the
    readers' `ann["keypoints"]`); targets: the part indices to crop. A keypoint counts when its visibility is
    at least `min_visibility` (CUB: 1 = visible; COCO: 2 = labelled and visible), and a group (person) only
    with at least `min_per_group` such target keypoints. `counts`, when given, adds up the target keypoints
    seen and why each one left out was: `visibility`, `group` (too few in its group), `distance` (the
    filter on d / 2)."""
    if side not in SIDES:
        raise ValueError(f"unknown crop side {side!r}; use {' or '.join(SIDES)}")
    counts = Counter() if counts is None else counts
    groups: dict[int, list[tuple[float, float, int]]] = {}
    for kp in keypoints:
        x, y, vis, part = kp[0], kp[1], int(kp[2]), int(kp[3])
        group = int(kp[4]) if len(kp) > 4 else -1
        if part not in targets:
            continue
        counts["seen"] += 1
        if vis >= min_visibility:
            groups.setdefault(group, []).append((float(x), float(y), part))
        else:
            counts["visibility"] += 1
    out = []
    for group, points in groups.items():
        if len(points) < min_per_group:
            counts["group"] += len(points)
            continue
        xy = np.array([(x, y) for x, y, _ in points])
        dist = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
        np.fill_diagonal(dist, np.inf)
        for (x, y, part), d in zip(points, dist.min(1), strict=True):
            if not bounds[0] < d / 2 < bounds[1]:
                counts["distance"] += 1
                continue
            half = int(round(d / 4)) if side == "code" else int(round(d / 2))
            box = (int(round(x)) - half, int(round(y)) - half, int(round(x)) + half, int(round(y)) + half)
            out.append(PartCrop(box, part, (x, y), group))
    counts["kept"] += len(out)
    return out


def crop_view(
    dataset: ImageDataset,
    targets: list[int],
    part_names: list[str],
    *,
    side: str = "code",
    min_visibility: int = 1,
    min_per_group: int = 2,
) -> ImageDataset:
    """A dataset of part crops: one sample per kept target keypoint of every image of `dataset`, labelled by
    its position in `targets` (class names `part_names`), in the source image's split, with the crop box in
    `ann["crop"]` (the loader crops it; the fingerprint covers it, so the crops are cached like any dataset).
    """
    if len(part_names) != len(targets):
        raise ValueError("one part name per target keypoint")
    samples, counts = [], Counter()
    for row, sample in enumerate(dataset.samples):
        for crop in keypoint_crops(
            sample.ann.get("keypoints", []),
            targets,
            side=side,
            min_visibility=min_visibility,
            min_per_group=min_per_group,
            counts=counts,
        ):
            ann = {
                "crop": list(crop.box),
                "centre": list(crop.centre),
                "source_row": row,
                "group": crop.group,
            }
            samples.append(Sample(sample.path, targets.index(crop.part), sample.split, ann))
    return replace(
        dataset,
        name=f"{dataset.name}_parts",
        classes=list(part_names),
        samples=samples,
        description=f"keypoint-centred part crops ({side} side) of {dataset.name}",
        extra={
            "source": dataset.name,
            "targets": list(targets),
            "side": side,
            # what the protocol's own filters left out, so a record says how many keypoints it stands on
            "crop_counts": {
                "keypoints": counts["seen"],
                "crops": counts["kept"],
                "below_min_visibility": counts["visibility"],
                "too_few_in_group": counts["group"],
                "outside_distance_filter": counts["distance"],
            },
        },
    )


# -- crops as a task's view of its data -------------------------------------------------------------------
class CropSpec(BaseModel):
    """How a task turns a dataset into part crops (the `crops:` field of a task entry).

    source: `keypoints` (squares centred on the keypoints named in `keypoints`, by the names of the file's
    keypoints or their 1-based ids; CUB's `part_locs.txt` ids, COCO's category keypoint names), `boxes`
    (each annotated box is a crop, labelled by its class: part boxes such as carparts'), or `masks` (the box
    of each part present in a part label map, labelled by the part). Crops smaller than `min_side` pixels
    are left out (boxes and masks)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["keypoints", "boxes", "masks"]
    keypoints: list[StrictStr | StrictInt] = []
    side: Literal["code", "text"] = "code"
    # 0 would crop keypoints that are not labelled at all (COCO and CUB store them at 0, 0)
    min_visibility: int = Field(default=1, ge=1, le=2)
    min_per_group: int = Field(default=2, ge=1, le=1000)
    min_side: int = Field(default=8, ge=1, le=100_000)

    @model_validator(mode="after")
    def _keypoints_named(self) -> CropSpec:
        if (self.source == "keypoints") != bool(self.keypoints):
            raise ValueError("name the keypoints to crop (and only) with source: keypoints")
        if bad := [k for k in self.keypoints if isinstance(k, int) and k < 1]:
            raise ValueError(f"crops.keypoints: id {bad[0]} is not a keypoint; ids count from 1")
        if len(set(self.keypoints)) < len(self.keypoints):
            raise ValueError("crops.keypoints: a keypoint is named twice; name each once")
        return self


def crop_view_name(dataset: str, spec: CropSpec) -> str:
    """The crop view's dataset name: its cache folder and its line in the record."""
    digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:8]
    return f"{dataset}.crops-{spec.source}-{digest}"


def _keypoint_ids(dataset: ImageDataset, wanted: list[str | int]) -> tuple[list[int], list[str]]:
    """0-based keypoint indices and names of `wanted` (names, or 1-based ids as CUB and COCO number them).
    An id beyond the dataset's keypoints, a name it lacks, or one keypoint asked twice (by name and by id)
    is one line."""
    names = list(dataset.extra.get("keypoint_names") or [])
    count = len(names) or 1 + max(
        (int(kp[3]) for s in dataset.samples for kp in s.ann.get("keypoints", [])), default=-1
    )
    ids, labels = [], []
    for k in wanted:
        if isinstance(k, int):
            if not 0 < k <= count:
                raise UserError(
                    f"dataset {dataset.name!r} has no keypoint id {k}: its ids are 1 to {count}"
                    if count
                    else f"dataset {dataset.name!r} has no keypoints to crop"
                )
            ids.append(k - 1)
            labels.append(names[k - 1] if names else f"keypoint_{k}")
        elif k in names:
            ids.append(names.index(k))
            labels.append(k)
        else:
            known = ", ".join(names) or "none named: give 1-based ids"
            raise UserError(f"dataset {dataset.name!r} has no keypoint {k!r} (its keypoints: {known})")
    if len(set(ids)) < len(ids):
        twice = labels[ids.index(next(i for i in ids if ids.count(i) > 1))]
        raise UserError(f"crops.keypoints {list(wanted)} ask for keypoint {twice!r} twice; name it once")
    return ids, labels


def _box_samples(dataset: ImageDataset, spec: CropSpec) -> tuple[list[Sample], list[str], dict]:
    used = sorted({int(b[4]) for s in dataset.samples for b in s.ann.get("boxes", [])})
    samples, counts = [], Counter()
    for row, s in enumerate(dataset.samples):
        crowd = s.ann.get("iscrowd") or [0] * len(s.ann.get("boxes", []))
        for k, (box, is_crowd) in enumerate(zip(s.ann.get("boxes", []), crowd, strict=True)):
            counts["boxes"] += 1
            x0, y0, x1, y1 = (int(round(v)) for v in box[:4])
            if is_crowd:
                counts["crowd"] += 1
                continue
            if min(x1 - x0, y1 - y0) < spec.min_side:
                counts["below_min_side"] += 1
                continue
            ann = {"crop": [x0, y0, x1, y1], "source_row": row, "instance": k}
            samples.append(Sample(s.path, used.index(int(box[4])), s.split, ann))
    return samples, [dataset.classes[c] for c in used], {**counts, "crops": len(samples)}


def _mask_samples(dataset: ImageDataset, spec: CropSpec) -> tuple[list[Sample], list[str]]:
    from probebench.data.annotations import ignore_index, label_map

    names = dataset.extra.get("mask_classes")
    if not names:
        raise UserError(f"dataset {dataset.name!r} has no part label maps; crop its boxes or keypoints")
    samples, counts = [], Counter()
    for row, s in enumerate(dataset.samples):
        if "mask" not in s.ann:
            continue
        labels = label_map(dataset, s, "mask")  # values checked: each a class or the ignore index
        for part in np.unique(labels):
            if part == 0 or part == ignore_index(dataset):  # 0 is the background
                continue
            counts["parts"] += 1
            ys, xs = np.nonzero(labels == part)
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            if min(x1 - x0, y1 - y0) < spec.min_side:
                counts["below_min_side"] += 1
                continue
            ann = {"crop": [x0, y0, x1, y1], "source_row": row}
            samples.append(Sample(s.path, int(part) - 1, s.split, ann))
    return samples, list(names[1:]), {**counts, "crops": len(samples)}


def no_crops_in(view: ImageDataset, split: str) -> str:
    """Why a task bound to `split` of a crops view has nothing to read, in the words of the dataset."""
    return (
        f"dataset {view.extra['view_of']!r}: no {view.extra['crops']['source']} crop in its {split!r} images "
        f"(crops in: {', '.join(view.splits) or 'none'}); annotate them or bind the task to another split"
    )


def make_crop_view(dataset: ImageDataset, spec: CropSpec) -> ImageDataset:
    """The crops `spec` asks for, as a dataset of their own (cached and fingerprinted like any other)."""
    if spec.source == "keypoints":
        ids, labels = _keypoint_ids(dataset, spec.keypoints)
        view = crop_view(
            dataset,
            ids,
            labels,
            side=spec.side,
            min_visibility=spec.min_visibility,
            min_per_group=spec.min_per_group,
        )
    else:
        samples, labels, counts = (_box_samples if spec.source == "boxes" else _mask_samples)(dataset, spec)
        view = replace(
            dataset,
            classes=labels,
            samples=samples,
            description=f"part crops ({spec.source}) of {dataset.name}",
            extra={"source": dataset.name, "crop_counts": counts},
        )
    view.name = crop_view_name(dataset.name, spec)
    view.extra = {**view.extra, "view_of": dataset.name, "crops": spec.model_dump()}
    view.warnings = list(dataset.warnings)
    if not view.samples:
        dropped = [w for w in dataset.warnings if "dropped" in w]  # the annotation checks' own counts
        filtered = {k: v for k, v in view.extra.get("crop_counts", {}).items() if v}
        why = (
            "; ".join([*dropped[:2], *([f"the crop filters left out {filtered}"] if filtered else [])])
            or "check the task's crops field"
        )
        raise UserError(f"dataset {dataset.name!r}: no {spec.source} crops ({why})")
    return view
