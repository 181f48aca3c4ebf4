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
    classes = sorted({c.name for sp in splits for c in sp.iterdir() if c.is_dir()})
    samples = [
        Sample(str(f.relative_to(root)), classes.index(c.name), sp.name)
        for sp in splits
        for c in sorted(d for d in sp.iterdir() if d.is_dir())
        for f in sorted(c.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    return ImageDataset(name or root.name.lower(), root, classes, samples, description=f"image folder {root}")
