"""Keypoint-centred part crops (Zhu et al. part retrieval and classification, protocols.md section 1.3, P1).

For each target keypoint, d is its distance to the nearest other target keypoint of the same image (COCO:
of the same person). The authors' code keeps d / 2 when 20 < d / 2 < 1000 and crops the square
(x - h, y - h, x + h, y + h) with h = round(d / 4): a side of about d / 2 (`side="code"`, the default). The
paper's text says a d x d patch (`side="text"`: h = round(d / 2), same filter). The box is centred on the
keypoint rounded to whole pixels. Crops are then resized by the encoder's own preprocessing, so the keypoint
stays at the crop's centre.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from probebench.data.base import ImageDataset, Sample

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
) -> list[PartCrop]:
    """Crops for one image. keypoints: [x, y, visibility, part] or [x, y, visibility, part, group] rows (the
    readers' `ann["keypoints"]`); targets: the part indices to crop. A keypoint counts when its visibility is
    at least `min_visibility` (CUB: 1 = visible; COCO: 2 = labelled and visible), and a group (person) only
    with at least `min_per_group` such target keypoints."""
    if side not in SIDES:
        raise ValueError(f"unknown crop side {side!r}; use {' or '.join(SIDES)}")
    groups: dict[int, list[tuple[float, float, int]]] = {}
    for kp in keypoints:
        x, y, vis, part = kp[0], kp[1], int(kp[2]), int(kp[3])
        group = int(kp[4]) if len(kp) > 4 else -1
        if part in targets and vis >= min_visibility:
            groups.setdefault(group, []).append((float(x), float(y), part))
    out = []
    for group, points in groups.items():
        if len(points) < min_per_group:
            continue
        xy = np.array([(x, y) for x, y, _ in points])
        dist = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
        np.fill_diagonal(dist, np.inf)
        for (x, y, part), d in zip(points, dist.min(1), strict=True):
            if not bounds[0] < d / 2 < bounds[1]:
                continue
            half = int(round(d / 4)) if side == "code" else int(round(d / 2))
            box = (int(round(x)) - half, int(round(y)) - half, int(round(x)) + half, int(round(y)) + half)
            out.append(PartCrop(box, part, (x, y), group))
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
    samples = []
    for row, sample in enumerate(dataset.samples):
        for crop in keypoint_crops(
            sample.ann.get("keypoints", []),
            targets,
            side=side,
            min_visibility=min_visibility,
            min_per_group=min_per_group,
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
        extra={"source": dataset.name, "targets": list(targets), "side": side},
    )
