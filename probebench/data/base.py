"""A dataset is an ordered list of samples (image file, class label, split) with a fingerprint.

The fingerprint covers every file's path, size and modification time plus the labels, so a changed dataset
never reuses stale cached features. Named datasets are looked up here; the embedded synthetic one is the
default and needs no download.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from probebench.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Sample:
    """One image. `label` is its object class (-1 where the format has none per image); `ann` holds what the
    format annotates, in pixels of the image as stored: `boxes` [[x0, y0, x1, y1, class], ...] (0-based, x1/y1
    exclusive), `keypoints` [[x, y, visibility, part], ...], `mask` (a label-map file), `polygons`/`rle`."""

    path: str  # relative to the dataset root
    label: int
    split: str
    ann: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class ImageDataset:
    name: str
    root: Path
    classes: list[str]
    samples: list[Sample]
    synthetic: bool = False
    description: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def split_indices(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.samples) if s.split == split]

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples})

    def fingerprint(self) -> str:
        """sha256 over (path, size, mtime_ns, label, split) of every sample, in order."""
        h = hashlib.sha256()
        for s in self.samples:
            try:
                st = (self.root / s.path).stat()
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                size, mtime = -1, -1  # unreadable files are fingerprinted as such and reported at extraction
            h.update(json.dumps([s.path, size, mtime, s.label, s.split]).encode())
        return h.hexdigest()

    def describe(self) -> dict:
        return {
            "name": self.name,
            "root": str(self.root),
            "num_samples": len(self),
            "splits": {sp: len(self.split_indices(sp)) for sp in self.splits},
            "num_classes": len(self.classes),
            "synthetic": self.synthetic,
            "fingerprint": self.fingerprint(),
        }


def image_folder(root: Path, name: str | None = None) -> ImageDataset:
    """`root/<split>/<class>/<image>`; splits are the sub-folders (train/, val/, test/)."""
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


def _embedded() -> ImageDataset:
    from probebench.data.embedded import embedded_dataset

    return embedded_dataset()


NAMED: dict[str, Callable[[], ImageDataset]] = {"embedded": _embedded}


def list_datasets() -> list[str]:
    return sorted(NAMED)


def get_dataset(
    name_or_path: str, datasets: Path | None = None, data_root: Path | None = None
) -> ImageDataset:
    """A built-in dataset, a user dataset from the datasets config (`datasets`, else ./datasets.yaml), or an
    image folder given by path (anything with a '/' or an existing folder)."""
    if name_or_path in NAMED:
        return NAMED[name_or_path]()
    from probebench.data.config import build_dataset, config_path, load_datasets, resolve_root

    user = load_datasets(datasets)
    if name_or_path in user:
        entry = user[name_or_path]
        return build_dataset(entry, resolve_root(entry, config_path(datasets).parent, data_root))
    from probebench.data.catalog import CATALOG, load_named

    if name_or_path in CATALOG:
        return load_named(name_or_path, data_root)
    path = Path(name_or_path).expanduser()
    if "/" in name_or_path or path.exists():
        from probebench.paths import safe_name

        ds = image_folder(path)
        ds.name = safe_name(ds.name.replace(" ", "_"), "dataset folder name")
        return ds
    known = ", ".join([*NAMED, *user, *CATALOG])
    raise UserError(f"unknown dataset {name_or_path!r}; known: {known}, or a path to an image folder")
