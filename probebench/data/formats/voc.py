"""Pascal VOC: `JPEGImages/` + `Annotations/*.xml` (+ `ImageSets/Main/<split>.txt` when present).

Boxes become 0-based with exclusive ends (VOC's are 1-based inclusive, so x0 - 1 and x1 stay; LOST does the
same). An XML whose size is 0 or disagrees with the image takes the image's size. The image's class label is
the class with most boxes (ties: the largest total box area), for object-level probes on one-class images.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from PIL import Image

from probebench.data.base import ImageDataset, Sample
from probebench.errors import UserError


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def _objects(root: ET.Element) -> list[dict]:
    out = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        out.append(
            {
                "name": obj.findtext("name", "").strip(),
                "box": [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")],
                "difficult": int(obj.findtext("difficult", "0") or 0),
                "truncated": int(obj.findtext("truncated", "0") or 0),
            }
        )
    return out


def read_voc_split(
    split_root: Path, split: str, classes: list[str] | None = None
) -> tuple[list[Sample], list[str]]:
    """One VOC folder (JPEGImages + Annotations) as samples of `split`; classes are collected if not given."""
    ann_dir, img_dir = split_root / "Annotations", split_root / "JPEGImages"
    if not ann_dir.is_dir() or not img_dir.is_dir():
        raise UserError(f"{split_root} is not a Pascal VOC folder: it needs JPEGImages/ and Annotations/")
    ids = None
    listing = split_root / "ImageSets" / "Main" / f"{split}.txt"
    if listing.is_file():
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    xmls = [ann_dir / f"{i}.xml" for i in ids] if ids else sorted(ann_dir.glob("*.xml"))
    parsed = []
    for xml in xmls:
        root = ET.parse(xml).getroot()
        fname = root.findtext("filename") or f"{xml.stem}.jpg"
        image = img_dir / Path(fname.replace("\\", "/")).name
        if not image.is_file():
            image = next(iter(sorted(img_dir.glob(f"{xml.stem}.*"))), image)
        w, h = int(float(root.findtext("size/width", "0"))), int(float(root.findtext("size/height", "0")))
        if w <= 0 or h <= 0 or (image.is_file() and (w, h) != _image_size(image)):
            w, h = _image_size(image) if image.is_file() else (0, 0)
        parsed.append((image, w, h, _objects(root)))
    classes = classes or sorted({o["name"] for *_, objs in parsed for o in objs})
    samples = []
    for image, w, h, objs in parsed:
        objs = [o for o in objs if o["name"] in classes]  # flags stay aligned with the boxes kept
        boxes = [
            [
                max(0.0, o["box"][0] - 1),
                max(0.0, o["box"][1] - 1),
                min(float(w), o["box"][2]),
                min(float(h), o["box"][3]),
                classes.index(o["name"]),
            ]
            for o in objs
        ]
        counts = Counter(b[4] for b in boxes)
        area = Counter()
        for b in boxes:
            area[b[4]] += (b[2] - b[0]) * (b[3] - b[1])
        label = max(counts, key=lambda c: (counts[c], area[c])) if counts else -1
        ann = {
            "boxes": boxes,
            "difficult": [o["difficult"] for o in objs],
            "truncated": [o["truncated"] for o in objs],
            "size": [w, h],
        }
        samples.append(Sample(str(image.relative_to(split_root.parent)), label, split, ann))
    return samples, classes


def read_voc(
    root: Path, name: str = "voc", splits: tuple[str, ...] = ("train", "test", "trainval", "val")
) -> ImageDataset:
    """`root/<split>/{JPEGImages,Annotations}` per split, or one VOC folder at `root` (splits: ImageSets);
    the official tars unpack to `VOCdevkit/VOC20xx/`, which is found under `root` too."""
    samples: list[Sample] = []
    classes: list[str] | None = None
    present = [s for s in splits if (root / s / "Annotations").is_dir()]
    if present:
        found = [read_voc_split(root / s, s) for s in present]
        classes = sorted({c for _, cs in found for c in cs})
        for s in present:
            samples += read_voc_split(root / s, s, classes)[0]
        return ImageDataset(name, root, classes, samples, description=f"Pascal VOC layout at {root}")
    if not (root / "Annotations").is_dir():
        root = next(
            (d.parent for d in sorted([*root.glob("*/Annotations"), *root.glob("*/*/Annotations")])), root
        )
    for s in splits:
        if (root / "ImageSets" / "Main" / f"{s}.txt").is_file():
            part, classes = read_voc_split(root, s, classes)
            samples += part
    if not samples:
        raise UserError(f"{root}: no VOC split found (looked for {', '.join(splits)})")
    return ImageDataset(name, root.parent, classes or [], samples, description=f"Pascal VOC layout at {root}")


VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]  # fmt: skip


def read_voc_segmentation(root: Path, name: str = "voc_seg", splits: tuple[str, ...] = ("train", "val")):
    """VOC's segmentation split: `ImageSets/Segmentation/<split>.txt`, `SegmentationClass/<id>.png` (palette
    indices: 0 background, 1-20 the classes, 255 the ignored borders), `JPEGImages/<id>.jpg`. The folder may
    be `root` itself or the `VOC20xx` folder under it (the official tar unpacks to `VOCdevkit/VOC2012/`)."""
    if not (root / "SegmentationClass").is_dir():
        found = sorted([*root.glob("*/SegmentationClass"), *root.glob("*/*/SegmentationClass")])
        root = found[0].parent if found else root
    lists = root / "ImageSets" / "Segmentation"
    samples = []
    for split in splits:
        listing = lists / f"{split}.txt"
        if not listing.is_file():
            continue
        for stem in (x.split()[0] for x in listing.read_text().splitlines() if x.strip()):
            ann = {"mask": f"SegmentationClass/{stem}.png"}
            samples.append(Sample(f"JPEGImages/{stem}.jpg", -1, split, ann))
    if not samples:
        raise UserError(
            f"{root}: no VOC segmentation split found (ImageSets/Segmentation/{{{','.join(splits)}}}.txt)"
        )
    return ImageDataset(
        name,
        root,
        list(VOC_CLASSES[1:]),
        samples,
        description=f"Pascal VOC segmentation split at {root}",
        extra={"mask_classes": list(VOC_CLASSES), "ignore_index": 255},
    )
