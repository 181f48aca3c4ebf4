"""A dataset is an ordered list of samples (image file, class label, split, annotations) with a fingerprint.

The fingerprint covers every file's path, size and modification time plus the labels, so a changed dataset
never reuses stale cached features. Readers live in `formats/`; finding a dataset by name is `lookup.py`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from probebench.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# Pillow's own decompression-bomb threshold (about 89 megapixels, a 9459 x 9459 image); larger images are
# skipped as unreadable unless `--max-pixels` raises it.
MAX_PIXELS = 89_478_485


def confined(root: Path, name: str, what: str) -> Path:
    """`root / name` for a file name read from an annotation file, refused (one line naming `what`, the
    file it came from) when it is absolute or climbs out with `..`: a downloaded annotation file must not
    make probebench read, record or draw a file from elsewhere. Windows separators are read as '/'. The
    check is on the name alone, so a root that is a symlink to shared storage, or links under it, work."""
    text = name.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text) or ".." in text.split("/") or "\0" in text:
        raise UserError(
            f"{what}: file name {name!r} leaves the dataset's folder (absolute, or with '..'); give it "
            "relative to the dataset's root"
        )
    return root / text


_DRIVE = re.compile(r"^[A-Za-z]:/")
MAX_ANNOTATION_BYTES = 4 * 2**30  # COCO's largest file, instances_train2017.json, is under 0.5 GB


def read_annotation_file(path: Path, what: str, limit: int = MAX_ANNOTATION_BYTES) -> bytes:
    """An annotation file's bytes: a regular file (a FIFO would block the read for ever), not larger than
    any real one of its kind (`limit` bytes); else one line naming it."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UserError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} {path} is not a regular file")
    if st.st_size > limit:
        raise UserError(f"{what} {path} has {st.st_size} bytes, more than any annotation file should")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class Sample:
    """One image. `label` is its object class (-1 where the format has none per image); `ann` holds what the
    format annotates, in pixels of the image as stored: `boxes` [[x0, y0, x1, y1, class], ...] (0-based, x1/y1
    exclusive), `keypoints` [[x, y, visibility, part], ...], `mask` (a label-map file relative to the root,
    values indexing the dataset's `extra["mask_classes"]`), `object_mask`, `segmentation` (COCO polygons/RLE),
    `size` [width, height], and for views `crop` [x0, y0, x1, y1]: the region of the file the sample is."""

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
    warnings: list[str] = field(default_factory=list)  # found when reading it; logged and recorded

    def warn(self, message: str) -> None:
        """A fact about the data that a reader of any number on it must know: one log line, and every
        record made on this dataset (through `describe`)."""
        log.warning("dataset %r: %s", self.name, message)
        self.warnings.append(message)

    def __len__(self) -> int:
        return len(self.samples)

    def split_indices(self, split: str) -> list[int]:
        """Rows of `split`; the split name `all` is every row (part retrieval searches a whole dataset)."""
        return [i for i, s in enumerate(self.samples) if split in (s.split, "all")]

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples})

    def fingerprint(self) -> str:
        """sha256 over (path, size, mtime_ns, label, split[, crop]) of every sample, in order."""
        h = hashlib.sha256()
        for s in self.samples:
            try:
                st = (self.root / s.path).stat()
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                size, mtime = -1, -1  # unreadable files are fingerprinted as such and reported at extraction
            # A view's region of the file (part crops, windows of a rescaled image) is part of what the
            # encoder sees.
            region = [s.ann[k] for k in ("scale_to", "crop") if k in s.ann]
            h.update(json.dumps([s.path, size, mtime, s.label, s.split, *region]).encode())
        return h.hexdigest()

    def annotation_fingerprint(self) -> str:
        """sha256 over every sample's annotations (with the size and mtime of mask files they name) and the
        dataset-level annotation settings (mask classes, merge map, ignore index): a changed mask or box
        re-runs the tasks that read it. Not part of the feature cache key: features do not depend on it."""
        h = hashlib.sha256()
        for s in self.samples:
            stats = []
            for key in ("mask", "object_mask"):
                if key in s.ann:
                    try:
                        st = (self.root / s.ann[key]).stat()
                        stats.append([st.st_size, st.st_mtime_ns])
                    except OSError:
                        stats.append(None)
            h.update(json.dumps([s.ann, stats], sort_keys=True, default=str).encode())
        settings = {k: self.extra.get(k) for k in ("mask_classes", "merge", "ignore_index", "part_of")}
        h.update(json.dumps([self.classes, settings], sort_keys=True, default=str).encode())
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
            **({"warnings": list(self.warnings)} if self.warnings else {}),
            # a view (part crops, sliding windows): the dataset it was made from and how
            **{k: self.extra[k] for k in ("view_of", "crops", "crop_counts", "windows") if k in self.extra},
        }
