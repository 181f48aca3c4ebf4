"""Mask folders: images plus label maps (one class index per pixel, or palette PNGs as VOC ships them), a
class list, an ignore index, and an optional merge map that groups fine labels into coarser ones.

Default layout: `images/<stem>.<ext>`, `labels/<stem>.png`, `classes.txt` (`index name` per line, or one name
per line in index order), every image in one split (`split`); or mmseg's `images/<split>/...` and
`labels/<split>/...`, one split per sub-folder. Palette PNGs are read as their indices, not their colours.

A folder without splits (CCP) can be split by `test_fraction`: an image is in test when the sha256 of its
stem, read as a number in [0, 1), is below the fraction. The split is stable: adding or removing images moves
no other image, and it does not depend on the order files are listed in.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image

from probebench.data.base import IMAGE_SUFFIXES, ImageDataset, Sample, confined, read_annotation_file
from probebench.data.checks import check_annotations
from probebench.errors import UserError

MAX_CLASSES = 65_536  # label maps are at most 16-bit in the formats read here


def read_classes(path: Path) -> list[str]:
    """`index name` per line (gaps named `class_<i>`), or one name per line in index order. A file that is
    not text, is empty, repeats an index or numbers past 16-bit labels is one line naming it."""
    try:
        text = read_annotation_file(path, "class list").decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"class list {path} is not UTF-8 text; write one class per line") from None
    lines = [line.split(maxsplit=1) for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"class list {path} is empty; write one class per line (`index name` or `name`)")
    if all(len(x) == 2 and x[0].isdigit() for x in lines):
        table: dict[int, str] = {}
        for i, n in lines:
            if int(i) in table:
                raise UserError(f"class list {path} gives index {int(i)} twice")
            table[int(i)] = n.strip()
        if max(table) >= MAX_CLASSES:
            raise UserError(f"class list {path} numbers a class {max(table)}; label maps hold 0 to 65535")
        return [table.get(i, f"class_{i}") for i in range(max(table) + 1)]
    return [" ".join(x) for x in lines]


def read_mask_folder(
    root: Path,
    name: str = "masks",
    images: str = "images",
    labels: str = "labels",
    classes_file: str = "classes.txt",
    split: str = "test",
    test_fraction: float | None = None,
) -> ImageDataset:
    what = f"mask folder {root}"
    img_dir, lab_dir = confined(root, images, what), confined(root, labels, what)
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise UserError(f"{root} is not a mask folder: it needs {images}/ and {labels}/")
    classes_path = confined(root, classes_file, what)
    # anything there is read (a FIFO or folder is refused by `read_classes`), never taken for "no list"
    classes = read_classes(classes_path) if classes_path.exists() or classes_path.is_symlink() else []
    # mmseg's layout: one sub-folder per split under both folders (images/train, labels/train, ...)
    folders = {split: (img_dir, lab_dir)}
    if not _images_in(img_dir):
        folders = {d.name: (d, lab_dir / d.name) for d in sorted(img_dir.iterdir()) if d.is_dir()}
    samples = []
    for where, (images_at, labels_at) in folders.items():
        for img in _images_in(images_at):
            label = labels_at / f"{img.stem}.png"
            if not label.is_file():
                raise UserError(
                    f"mask folder {root}: image {img.name} has no label map {label.relative_to(root)}"
                )
            if test_fraction is not None:
                where = "test" if _hashed(img.stem) < test_fraction else "train"
            samples.append(
                Sample(str(img.relative_to(root)), -1, where, {"mask": str(label.relative_to(root))})
            )
    ds = ImageDataset(name, root, classes, samples, description=f"mask folder at {root}")
    ds.extra["mask_classes"] = classes
    return check_annotations(ds)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _hashed(stem: str) -> float:
    """A stem's stable place in [0, 1)."""
    return int(hashlib.sha256(stem.encode()).hexdigest()[:12], 16) / 16**12


# Modes that hold one class index per pixel: palette indices (VOC), 8-bit, 16-bit and 32-bit greyscale, and
# 1-bit masks. A colour label map (RGB) encodes classes as colours, which are not indices.
INDEX_MODES = ("P", "L", "1", "I", "I;16", "I;16L", "I;16B", "I;16N")


def read_label_file(path: Path) -> np.ndarray:
    """(H, W) int64 values of a label-map file, or one line naming it: not an image, or a colour image."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open for ever
            raise UserError(f"label map {path} is not a regular file")
        with Image.open(path) as im:
            if im.mode not in INDEX_MODES:
                raise UserError(
                    f"label map {path} is a {im.mode} image: probebench reads one class index per pixel "
                    "(a greyscale or palette PNG); convert the colours to indices"
                )
            return np.array(im, dtype=np.int64)
    except UserError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise UserError(f"label map {path} cannot be read as an image ({exc})") from None


def load_label_map(
    root: Path, sample: Sample, merge: dict[int, int] | None = None, ignore_index: int = 255
) -> np.ndarray:
    """(H, W) int64 class indices; labels outside `merge` keep their value, merged ones take the target."""
    arr = read_label_file(root / sample.ann["mask"])
    if merge:
        lut = np.arange(max(int(arr.max(initial=0)), max(merge)) + 1)
        for src, dst in merge.items():
            lut[src] = dst
        keep = (arr != ignore_index) & (arr >= 0)
        arr[keep] = lut[arr[keep]]
    return arr
