"""Pascal VOC: `JPEGImages/` + `Annotations/*.xml` (+ `ImageSets/Main/<split>.txt` when present).

Boxes become 0-based with exclusive ends (VOC's are 1-based inclusive, so x0 - 1 and x1 stay; LOST does the
same), clipped to the image. An XML whose size is 0 takes the image's size; one that disagrees with the image
is refused (`probebench.data.checks`). The image's class label is the class with most boxes (ties: the
largest total box area), for object-level probes on one-class images.

A file that does not parse (expat neither fetches external entities nor expands past its amplification
limit), a coordinate that is not a number, a flag other than 0 or 1, and an image-set id without its XML
are one line naming the file.
"""

from __future__ import annotations

import glob
import math
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from probebench.data.base import ImageDataset, Sample, confined, read_annotation_file
from probebench.data.checks import check_annotations
from probebench.errors import UserError


def _parse(xml: Path) -> ET.Element:
    """An annotation file's root element, or one line naming the file. expat neither fetches external
    entities nor expands entities past its amplification limit, so a hostile file is a parse error here."""
    data = read_annotation_file(xml, "VOC annotation")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise UserError(f"VOC annotation {xml} is not valid XML ({exc}); fix or remove it") from None


def _number(text: str | None, xml: Path, field: str) -> float:
    """A coordinate or size as the file writes it; missing or not a number is one line naming the field.
    NaN and infinities are numbers here: the annotation checks drop such boxes and count them."""
    try:
        return float((text or "").strip())
    except ValueError:
        raise UserError(f"VOC annotation {xml}: <{field}> is {text!r}, not a number; fix the file") from None


def _flag(text: str | None, xml: Path, field: str) -> int:
    """VOC's 0/1 flags (`difficult`, `truncated`); empty or absent is 0."""
    value = (text or "0").strip() or "0"
    if value not in ("0", "1"):
        raise UserError(f"VOC annotation {xml}: <{field}> is {text!r}; VOC's flags are 0 or 1")
    return int(value)


def _objects(root: ET.Element, xml: Path) -> list[dict]:
    out = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        out.append(
            {
                "name": (obj.findtext("name") or "").strip(),
                "box": [
                    _number(box.findtext(k), xml, f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")
                ],
                "difficult": _flag(obj.findtext("difficult"), xml, "difficult"),
                "truncated": _flag(obj.findtext("truncated"), xml, "truncated"),
            }
        )
    return out


def _annotated_size(root: ET.Element, xml: Path) -> tuple[int, int]:
    """The file's <size>; 0 (or absent) means "take the image's", as several real exports write it."""
    sizes = []
    for field in ("width", "height"):
        text = root.findtext(f"size/{field}")
        value = _number(text, xml, f"size/{field}") if text not in (None, "") else 0.0
        sizes.append(int(value) if math.isfinite(value) and value > 0 else 0)
    return sizes[0], sizes[1]


def read_image_set(listing: Path) -> list[str] | None:
    """The ids an `ImageSets/.../<split>.txt` lists (first word of each line), None where there is no such
    file. Read as any annotation file (regular, bounded); an id listed twice would be scored twice, so it is
    refused with one line."""
    if not (listing.exists() or listing.is_symlink()):
        return None
    # 64 MB: ImageNet's 1.3 million ids would take 40 MB; VOC's largest list is 0.2 MB
    text = read_annotation_file(listing, "image set", 64 * 2**20).decode("utf-8", errors="replace")
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    twice = [(i, n) for i, n in Counter(ids).items() if n > 1]
    if twice:
        i, n = twice[0]
        raise UserError(
            f"image set {listing} lists id {i!r} {n} times ({len(twice)} id(s) repeated): each image is "
            "listed once; remove the repeats"
        )
    return ids


def read_voc_split(
    split_root: Path, split: str, classes: list[str] | None = None
) -> tuple[list[Sample], list[str]]:
    """One VOC folder (JPEGImages + Annotations) as samples of `split`; classes are collected if not given.
    Boxes are 0-based with exclusive ends; the annotation checks (`probebench.data.checks`) compare the
    annotated size with the image's, drop boxes that are not boxes and clip the others to the image."""
    ann_dir, img_dir = split_root / "Annotations", split_root / "JPEGImages"
    if not ann_dir.is_dir() or not img_dir.is_dir():
        raise UserError(f"{split_root} is not a Pascal VOC folder: it needs JPEGImages/ and Annotations/")
    listing = split_root / "ImageSets" / "Main" / f"{split}.txt"
    ids = read_image_set(listing)
    if ids:
        xmls = [confined(ann_dir, f"{i}.xml", f"image set {listing}") for i in ids]
        if missing := [x for x in xmls if not x.is_file()]:
            raise UserError(
                f"image set {listing} lists {len(missing)} id(s) with no annotation file, such as "
                f"{missing[0].name} in {ann_dir}; remove them from the list or add their XML"
            )
    else:
        xmls = sorted(p for p in ann_dir.glob("*.xml") if p.is_file())
    parsed = []
    for xml in xmls:
        root = _parse(xml)
        fname = root.findtext("filename") or f"{xml.stem}.jpg"
        image = img_dir / Path(fname.replace("\\", "/")).name  # the name alone: never a path elsewhere
        if not image.is_file():
            image = next(iter(sorted(img_dir.glob(f"{glob.escape(xml.stem)}.*"))), image)
        parsed.append((image, _annotated_size(root, xml), _objects(root, xml)))
    classes = classes or sorted({o["name"] for *_, objs in parsed for o in objs})
    samples = []
    for image, (w, h), objs in parsed:
        objs = [o for o in objs if o["name"] in classes]  # flags stay aligned with the boxes kept
        # 1-based inclusive -> 0-based exclusive; clipped to the image once its size is checked
        boxes = [
            [o["box"][0] - 1, o["box"][1] - 1, o["box"][2], o["box"][3], classes.index(o["name"])]
            for o in objs
        ]
        ann = {
            "boxes": boxes,
            "difficult": [o["difficult"] for o in objs],
            "truncated": [o["truncated"] for o in objs],
            "size": [w, h],
        }
        samples.append(Sample(str(image.relative_to(split_root.parent)), -1, split, ann))
    return samples, classes


def read_voc(
    root: Path, name: str = "voc", splits: tuple[str, ...] = ("train", "test", "trainval", "val")
) -> ImageDataset:
    """`root/<split>/{JPEGImages,Annotations}` per split, or one VOC folder at `root` (splits: ImageSets);
    the official tars unpack to `VOCdevkit/VOC20xx/`, which is found under `root` too. The annotations are
    checked against the images (`probebench.data.checks`) before each image gets its class label."""
    samples: list[Sample] = []
    classes: list[str] | None = None
    present = [s for s in splits if (confined(root, s, f"dataset {name!r}") / "Annotations").is_dir()]
    if present:
        found = [read_voc_split(root / s, s) for s in present]
        classes = sorted({c for _, cs in found for c in cs})
        for s in present:
            samples += read_voc_split(root / s, s, classes)[0]
        ds = ImageDataset(name, root, classes, samples, description=f"Pascal VOC layout at {root}")
        return _labelled(check_annotations(ds, clip_boxes=True))
    if not (root / "Annotations").is_dir():
        root = next(
            (d.parent for d in sorted([*root.glob("*/Annotations"), *root.glob("*/*/Annotations")])), root
        )
    for s in splits:
        listing = root / "ImageSets" / "Main" / f"{s}.txt"
        if listing.exists() or listing.is_symlink():  # anything there is read (or refused), never skipped
            part, classes = read_voc_split(root, s, classes)
            samples += part
    if not samples:
        raise UserError(f"{root}: no VOC split found (looked for {', '.join(splits)})")
    ds = ImageDataset(name, root.parent, classes or [], samples, description=f"Pascal VOC layout at {root}")
    return _labelled(check_annotations(ds, clip_boxes=True))


def _labelled(ds: ImageDataset) -> ImageDataset:
    """Each image's class label: the class with most boxes (ties: the largest total box area), for
    object-level probes on one-class images; -1 for an image without boxes."""
    samples = []
    for s in ds.samples:
        boxes = s.ann.get("boxes", [])
        counts = Counter(b[4] for b in boxes)
        area: Counter = Counter()
        for b in boxes:
            area[b[4]] += (b[2] - b[0]) * (b[3] - b[1])
        label = max(counts, key=lambda c: (counts[c], area[c])) if counts else -1
        samples.append(Sample(s.path, label, s.split, s.ann))
    ds.samples = samples
    return ds


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
        for stem in read_image_set(listing) or []:
            confined(root, stem, f"image set {listing}")
            ann = {"mask": f"SegmentationClass/{stem}.png"}
            samples.append(Sample(f"JPEGImages/{stem}.jpg", -1, split, ann))
    if not samples:
        raise UserError(
            f"{root}: no VOC segmentation split found (ImageSets/Segmentation/{{{','.join(splits)}}}.txt)"
        )
    ds = ImageDataset(
        name,
        root,
        list(VOC_CLASSES[1:]),
        samples,
        description=f"Pascal VOC segmentation split at {root}",
        extra={"mask_classes": list(VOC_CLASSES), "ignore_index": 255},
    )
    return check_annotations(ds)
