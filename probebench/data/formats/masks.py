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
from pathlib import Path

import numpy as np
from PIL import Image

from probebench.data.base import IMAGE_SUFFIXES, ImageDataset, Sample
from probebench.errors import UserError


def read_classes(path: Path) -> list[str]:
    lines = [line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip()]
    if all(len(x) == 2 and x[0].isdigit() for x in lines):
        table = {int(i): n.strip() for i, n in lines}
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
    img_dir, lab_dir = root / images, root / labels
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise UserError(f"{root} is not a mask folder: it needs {images}/ and {labels}/")
    classes = read_classes(root / classes_file) if (root / classes_file).is_file() else []
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
    return ds


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _hashed(stem: str) -> float:
    """A stem's stable place in [0, 1)."""
    return int(hashlib.sha256(stem.encode()).hexdigest()[:12], 16) / 16**12


def load_label_map(
    root: Path, sample: Sample, merge: dict[int, int] | None = None, ignore_index: int = 255
) -> np.ndarray:
    """(H, W) int64 class indices; labels outside `merge` keep their value, merged ones take the target."""
    with Image.open(root / sample.ann["mask"]) as im:
        arr = np.array(im if im.mode in ("P", "L", "I", "I;16") else im.convert("L"), dtype=np.int64)
    if merge:
        lut = np.arange(max(int(arr.max()), max(merge)) + 1)
        for src, dst in merge.items():
            lut[src] = dst
        keep = arr != ignore_index
        arr[keep] = lut[arr[keep]]
    return arr
