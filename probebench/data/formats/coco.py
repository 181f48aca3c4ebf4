"""COCO json: instances (polygons or RLE, rasterised on demand with pycocotools), boxes, `iscrowd`,
keypoints with visibility, categories and supercategories.

Real exports are messy and are accepted as they come: COCO Annotator writes boolean `iscrowd`, extra fields
and a `path` beside `file_name`; images may sit next to the json or in a sub-folder. Boxes become
[x0, y0, x1, y1, category index]; `iscrowd` instances are kept but flagged, so a protocol can drop them (LOST
removes crowd boxes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from probebench.data.base import ImageDataset, Sample
from probebench.errors import UserError


def _find_image(json_path: Path, img: dict) -> Path:
    json_dir = json_path.parent
    # The official layout pairs annotations/instances_train2014.json with a train2014/ image folder.
    split_dir = json_path.stem.rsplit("_", 1)[-1]
    bases = (
        json_dir,
        json_dir / "images",
        json_dir / "JPEGImages",
        json_dir / split_dir,
        json_dir.parent / split_dir,
    )
    candidates = [img.get("path"), img.get("file_name")]
    for cand in filter(None, candidates):
        cand = cand.replace("\\", "/")
        for base in bases:
            if (base / cand).is_file():
                return base / cand
            if (base / Path(cand).name).is_file():
                return base / Path(cand).name
    return json_dir / (img.get("file_name") or str(img["id"]))  # reported as unreadable at extraction


def read_coco_split(json_path: Path, split: str, root: Path, categories: list[dict] | None = None):
    """Samples of one COCO json file, paths relative to `root`."""
    try:
        data = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read COCO json {json_path}: {exc}") from None
    cats = categories or sorted(data.get("categories", []), key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    by_image: dict[int, list[dict]] = {}
    for a in data.get("annotations", []):
        by_image.setdefault(a["image_id"], []).append(a)
    samples = []
    for img in sorted(data.get("images", []), key=lambda i: i["id"]):
        anns = [a for a in by_image.get(img["id"], []) if a.get("category_id") in index]
        ann: dict = {
            "size": [img.get("width", 0), img.get("height", 0)],
            "image_id": img["id"],
            "boxes": [],
            "iscrowd": [],
            "segmentation": [],
            "keypoints": [],
        }
        for a in anns:
            x, y, w, h = a.get("bbox", [0, 0, 0, 0])
            cls = index[a["category_id"]]
            ann["boxes"].append([x, y, x + w, y + h, cls])
            ann["iscrowd"].append(int(bool(a.get("iscrowd", 0))))
            ann["segmentation"].append(a.get("segmentation"))
            kps = a.get("keypoints") or []
            ann["keypoints"] += [
                [kps[i], kps[i + 1], int(kps[i + 2]), i // 3, len(ann["boxes"]) - 1]
                for i in range(0, len(kps), 3)
            ]
        path = _find_image(json_path, img)
        samples.append(
            Sample(str(path.relative_to(root)) if path.is_relative_to(root) else str(path), -1, split, ann)
        )
    return samples, cats


def read_coco(
    root: Path, name: str = "coco", files: dict[str, str] | None = None, filelist: str | None = None
) -> ImageDataset:
    """`files` maps split -> json path relative to root; default: `<split>/annotations.json` for each split
    folder that has one, else every `*.json` directly in root (split = file stem). `filelist` names a file
    of image names that keeps only those images (COCO20k: the subset of train2014 that LOST lists)."""
    if files is None:
        files = (
            {
                d.name: f"{d.name}/annotations.json"
                for d in sorted(root.iterdir())
                if (d / "annotations.json").is_file()
            }
            if root.is_dir()
            else {}
        )
        files = files or {p.stem: p.name for p in sorted(root.glob("*.json"))}
    if not files:
        raise UserError(f"{root}: no COCO json found (expected <split>/annotations.json or *.json)")
    samples: list[Sample] = []
    cats = None
    for split, rel in files.items():
        part, cats = read_coco_split(root / rel, split, root, cats)
        samples += part
    if filelist:
        if not (root / filelist).is_file():
            raise UserError(f"dataset {name!r}: its file list {root / filelist} is missing")
        keep = {Path(line).name for line in (root / filelist).read_text().split()}
        samples = [x for x in samples if Path(x.path).name in keep]
    return ImageDataset(
        name,
        root,
        [c["name"] for c in cats],
        samples,
        description=f"COCO json at {root}",
        extra={"categories": cats},
    )


def instance_masks(sample: Sample, height: int, width: int) -> np.ndarray:
    """(K, H, W) bool masks of a COCO sample's instances, from polygons or RLE (compressed or not)."""
    from pycocotools import mask as mask_utils

    out = np.zeros((len(sample.ann["segmentation"]), height, width), dtype=bool)
    for k, seg in enumerate(sample.ann["segmentation"]):
        if not seg:
            continue
        if isinstance(seg, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = seg
        out[k] = mask_utils.decode(rle).astype(bool)
    return out
