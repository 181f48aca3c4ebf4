"""COCO json: instances (polygons or RLE, rasterised on demand with pycocotools), boxes, `iscrowd`,
keypoints with visibility, categories and supercategories.

Real exports are messy and are accepted as they come: COCO Annotator writes boolean `iscrowd`, extra fields
and a `path` beside `file_name`; images may sit next to the json or in a sub-folder. Boxes become
[x0, y0, x1, y1, category index]; `iscrowd` instances are kept but flagged, so a protocol can drop them (LOST
removes crowd boxes).

What is refused, with one line naming the json and the entry (a broken file, not a quirk): a top level or
field of the wrong type, an image or annotation without its id, two images with one id, a file name that
leaves the dataset's folder, a box that is not four numbers, a keypoint list that is not x, y, visibility
triples (as many as the category names), a visibility other than 0, 1 or 2, split files whose categories
differ, and annotations none of which names an image. Annotations of images the file does not list are
counted in a warning. Keypoints are named per category: a file with a person and a dog category reads each
annotation's keypoints by its own category's names (`extra["keypoint_names"]`, their union in order).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from probebench.data.base import ImageDataset, Sample, confined, read_annotation_file
from probebench.data.checks import check_annotations
from probebench.errors import UserError

VISIBILITY = (0, 1, 2)  # COCO: 0 not labelled, 1 labelled but hidden, 2 labelled and visible


class _Json:
    """One COCO file's reader: every refusal names the file and where in it the problem is."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, what: str) -> UserError:
        return UserError(f"COCO json {self.path}: {where} {what}; fix the file")

    def records(self, data: dict, field: str) -> list[dict]:
        value = data.get(field, [])
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"'{field}'", f"is a {type(value).__name__}, not a list")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"{field}[{i}]", f"is a {type(item).__name__}, not an object")
        return value

    def ident(self, item: dict, key: str, where: str) -> int | str:
        value = item.get(key)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self.fail(where, f"has no '{key}' (an integer or a string), got {value!r}")
        return value

    def number(self, value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, f"holds {value!r}, not a number")
        return float(value)


def _size(value: object) -> int:
    """An image's width or height as the json gives it; 0 (take the file's) where it gives none or junk."""
    try:
        size = int(float(value))  # "640" as well as 640
    except (TypeError, ValueError, OverflowError):
        return 0
    return max(size, 0)


def _bases(json_path: Path, root: Path) -> list[Path]:
    """Folders an image of this json may sit in, each inside the dataset root (never its parent)."""
    json_dir = json_path.parent
    # The official layout pairs annotations/instances_train2014.json with a train2014/ image folder.
    split_dir = json_path.stem.rsplit("_", 1)[-1]
    bases = [json_dir, json_dir / "images", json_dir / "JPEGImages", json_dir / split_dir]
    bases.append(json_dir.parent / split_dir)
    top = os.path.abspath(root)
    return [b for b in bases if (p := os.path.abspath(b)) == top or p.startswith(top + os.sep)]


def _find_image(reader: _Json, img: dict, where: str, bases: list[Path]) -> Path:
    """The image file of one `images` entry. `file_name` (and COCO Annotator's `path`) must stay inside the
    dataset's folder; an absolute `path` (the annotation server's own) is not a name here and is skipped."""
    name = img.get("file_name")
    if not isinstance(name, str) or not name:
        raise reader.fail(where, f"has no 'file_name', got {name!r}")
    confined(Path("."), name, f"COCO json {reader.path}: {where}")
    candidates = [name]
    path = img.get("path")
    if isinstance(path, str) and path:
        try:
            confined(Path("."), path, "")
            candidates.insert(0, path)
        except UserError:
            pass  # an absolute server path: the file name finds the image
    for cand in candidates:
        cand = cand.replace("\\", "/")
        for base in bases:
            if (base / cand).is_file():
                return base / cand
            if (base / Path(cand).name).is_file():
                return base / Path(cand).name
    return reader.path.parent / name.replace("\\", "/")  # reported as unreadable at extraction


def keypoint_names(categories: list[dict], reader: _Json) -> tuple[list[str], dict]:
    """The union of the categories' keypoint names (in order of first appearance) and, per category id,
    where each of its keypoints sits in that union (or None for a category that names none)."""
    names: list[str] = []
    where: dict = {}
    for i, c in enumerate(categories):
        kps = c.get("keypoints") or []
        if not isinstance(kps, list) or not all(isinstance(k, str) for k in kps):
            raise reader.fail(f"categories[{i}].keypoints", "is not a list of names")
        if len(set(kps)) < len(kps):
            raise reader.fail(f"categories[{i}].keypoints", "names a keypoint twice")
        for k in kps:
            if k not in names:
                names.append(k)
        where[c["id"]] = [names.index(k) for k in kps] if kps else None
    return names, where


def _keypoints(reader: _Json, a: dict, where: str, slots: list[int] | None, named: bool) -> list[list]:
    """One annotation's keypoints as [x, y, visibility, part] rows (part: the index in the union of names,
    or the position where no category names its keypoints)."""
    kps = a.get("keypoints")
    if kps is None or kps == []:
        return []
    if not isinstance(kps, list) or len(kps) % 3:
        raise reader.fail(f"{where}.keypoints", "is not a list of x, y, visibility triples")
    if slots is not None and len(kps) != 3 * len(slots):
        raise reader.fail(
            f"{where}.keypoints", f"holds {len(kps) // 3} keypoints; its category names {len(slots)}"
        )
    if slots is None and named:
        raise reader.fail(where, "has keypoints, but its category names none while others do")
    rows = []
    for j in range(0, len(kps), 3):
        x, y = (reader.number(v, f"{where}.keypoints") for v in kps[j : j + 2])
        try:
            vis = float(kps[j + 2])  # "2" as well as 2
        except (TypeError, ValueError):
            vis = float("nan")
        if vis not in VISIBILITY:
            raise reader.fail(f"{where}.keypoints", f"has visibility {kps[j + 2]!r}; COCO's are 0, 1 and 2")
        rows.append([x, y, int(vis), slots[j // 3] if slots is not None else j // 3])
    return rows


def _check_segmentation(reader: _Json, seg: object, where: str, size: tuple[int, int]) -> None:
    """Polygons (lists of x, y numbers) or RLE (`counts` and `size` [height, width] of the image)."""
    if seg is None or seg == []:
        return
    if isinstance(seg, list):
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                raise reader.fail(f"{where}.segmentation", "holds a polygon that is not 3 or more x, y pairs")
            for v in poly:
                reader.number(v, f"{where}.segmentation")
        return
    if not isinstance(seg, dict) or not isinstance(seg.get("counts"), list | str):
        raise reader.fail(f"{where}.segmentation", "is neither polygons nor RLE (counts and size)")
    rle = seg.get("size")
    if not (isinstance(rle, list) and len(rle) == 2 and all(isinstance(v, int) for v in rle)):
        raise reader.fail(f"{where}.segmentation.size", "is not [height, width]")
    width, height = size
    if width and height and list(rle) != [height, width]:
        raise reader.fail(
            f"{where}.segmentation", f"is an RLE of {rle[1]} x {rle[0]} on a {width} x {height} image"
        )


def read_coco_split(
    json_path: Path, split: str, root: Path, categories: list[dict] | None = None
) -> tuple[list[Sample], list[dict], list[str]]:
    """Samples of one COCO json file (paths relative to `root`), its categories (those of the first split
    when given: every split must have the same) and warnings about what was left out."""
    reader = _Json(json_path)
    try:
        data = json.loads(read_annotation_file(json_path, "COCO json"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"cannot read COCO json {json_path}: {exc}") from None
    if not isinstance(data, dict):
        raise reader.fail("the top level", f"is a {type(data).__name__}, not an object with 'images'")
    cats = _categories(reader, data)
    if categories is not None and _cat_key(cats) != _cat_key(categories):
        raise reader.fail("'categories'", "differ from the first split's; every split needs the same")
    cats = categories or cats
    index = {c["id"]: i for i, c in enumerate(cats)}
    names, slots = keypoint_names(cats, reader)
    images = reader.records(data, "images")
    ids: dict = {}
    for i, img in enumerate(images):
        key = reader.ident(img, "id", f"images[{i}]")
        if key in ids:
            raise reader.fail(f"images[{i}]", f"has id {key!r}, as images[{ids[key]}] does; ids are unique")
        ids[key] = i
    annotations = reader.records(data, "annotations")
    by_image: dict = {}
    for i, a in enumerate(annotations):
        by_image.setdefault(reader.ident(a, "image_id", f"annotations[{i}]"), []).append(i)
    warnings = []
    if orphans := sum(len(v) for k, v in by_image.items() if k not in ids):
        if orphans == len(annotations):
            kinds = sorted({type(k).__name__ for k in by_image} | {type(k).__name__ for k in ids})
            raise reader.fail(
                "'annotations'",
                f"name no image of 'images' (none of {len(annotations)}; id types {', '.join(kinds)})",
            )
        warnings.append(f"{json_path.name}: {orphans} annotation(s) name an image the file does not list")
    bases = _bases(json_path, root)
    samples, uncategorised, files = [], 0, {}
    for img in sorted(images, key=lambda m: (isinstance(m["id"], str), m["id"])):
        where = f"images[{ids[img['id']]}]"
        size = (_size(img.get("width")), _size(img.get("height")))
        ann: dict = {
            "size": list(size),
            "image_id": img["id"],
            "boxes": [],
            "iscrowd": [],
            "segmentation": [],
            "keypoints": [],
        }
        for i in by_image.get(img["id"], []):
            a, at = annotations[i], f"annotations[{i}]"
            if a.get("category_id") not in index:
                uncategorised += 1
                continue
            bbox = a.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise reader.fail(f"{at}.bbox", f"is {bbox!r}, not [x, y, width, height]")
            x, y, w, h = (reader.number(v, f"{at}.bbox") for v in bbox)
            crowd = a.get("iscrowd", 0)
            if crowd not in (0, 1):  # True and False are 1 and 0
                raise reader.fail(f"{at}.iscrowd", f"is {crowd!r}, not 0 or 1")
            _check_segmentation(reader, a.get("segmentation"), at, size)
            rows = _keypoints(reader, a, at, slots[a["category_id"]], bool(names))
            ann["boxes"].append([x, y, x + w, y + h, index[a["category_id"]]])
            ann["iscrowd"].append(int(crowd))
            ann["segmentation"].append(a.get("segmentation"))
            ann["keypoints"] += [[*r, len(ann["boxes"]) - 1] for r in rows]
        path = _find_image(reader, img, where, bases)
        if path in files:  # two ids for one photo: it would be scored twice, with each entry's annotations
            raise reader.fail(where, f"names image file {path.name}, as {files[path]} does; list each once")
        files[path] = where
        samples.append(
            Sample(str(path.relative_to(root)) if path.is_relative_to(root) else str(path), -1, split, ann)
        )
    if uncategorised:
        warnings.append(f"{json_path.name}: {uncategorised} annotation(s) of a category it does not list")
    return samples, cats, warnings


def _categories(reader: _Json, data: dict) -> list[dict]:
    cats = reader.records(data, "categories")
    seen = set()
    for i, c in enumerate(cats):
        key = reader.ident(c, "id", f"categories[{i}]")
        if key in seen:
            raise reader.fail(f"categories[{i}]", f"has id {key!r} twice")
        seen.add(key)
        if not isinstance(c.get("name"), str):
            raise reader.fail(f"categories[{i}]", f"has no 'name', got {c.get('name')!r}")
    return sorted(cats, key=lambda c: (isinstance(c["id"], str), c["id"]))


def _cat_key(cats: list[dict]) -> list:
    return [(c["id"], c["name"], c.get("keypoints") or []) for c in cats]


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
    warnings: list[str] = []
    for split, rel in files.items():
        part, cats, said = read_coco_split(confined(root, rel, f"dataset {name!r}"), split, root, cats)
        samples += part
        warnings += said
    if filelist:
        listed = confined(root, filelist, f"dataset {name!r}")
        if not listed.is_file():
            raise UserError(f"dataset {name!r}: its file list {listed} is missing")
        keep = {Path(line).name for line in listed.read_text(errors="replace").split()}
        samples = [x for x in samples if Path(x.path).name in keep]
    names, _ = keypoint_names(cats, _Json(root / next(iter(files.values()))))
    ds = ImageDataset(
        name,
        root,
        [c["name"] for c in cats],
        samples,
        description=f"COCO json at {root}",
        extra={"categories": cats, "keypoint_names": names},
    )
    for line in warnings:
        ds.warn(line)
    return check_annotations(ds)


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
