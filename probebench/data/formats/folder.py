"""Image folders: `root/<split>/<class>/<image>`; splits are the sub-folders train/, val/ and test/."""

from __future__ import annotations

from pathlib import Path

from probebench.data.base import IMAGE_SUFFIXES, ImageDataset, Sample
from probebench.errors import UserError


def read_image_folder(root: Path, name: str | None = None) -> ImageDataset:
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist; pass an existing path to --dataset")
    splits = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name in {"train", "val", "test"}]
    if not splits:
        raise UserError(f"dataset folder {root} has no train/ or test/ sub-folder with one folder per class")
    # Regular files only: a FIFO or socket named x.jpg would block the reader forever.
    found = {
        (sp.name, c.name): sorted(
            f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
        )
        for sp in splits
        for c in sorted(d for d in sp.iterdir() if d.is_dir())
    }
    folders = sorted({c for _, c in found})
    classes = sorted({c for key, files in found.items() if files for c in [key[1]]})
    samples = [
        Sample(str(f.relative_to(root)), classes.index(c), sp)
        for (sp, c), files in found.items()
        for f in files
    ]
    ds = ImageDataset(name or root.name.lower(), root, classes, samples, description=f"image folder {root}")
    if empty := [c for c in folders if c not in classes]:
        ds.warn(f"class folder(s) {', '.join(empty)} hold no images in any split and are not classes")
    return ds
