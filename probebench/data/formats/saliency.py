"""Saliency sets (ECSSD, DUTS, DUT-OMRON): images plus binary ground-truth masks, paired by file stem.

How a ground-truth mask becomes foreground is a protocol choice, recorded with every result:
- "tokencut": TokenCut's metric reads the mask as greyscale 0-255 and thresholds it at > 0.5, so every nonzero
  pixel is foreground (see reference/protocols.md, section 3.3);
- "binary127": foreground = value > 127, the usual reading of anti-aliased binary masks.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image

from probebench.data.base import IMAGE_SUFFIXES, ImageDataset, Sample, confined
from probebench.data.checks import check_annotations
from probebench.errors import UserError

CONVENTIONS = ("tokencut", "binary127")


def read_saliency(root: Path, name: str, images: str, masks: str, split: str = "test") -> ImageDataset:
    img_dir, mask_dir = (
        confined(root, images, f"saliency set {root}"),
        confined(root, masks, f"saliency set {root}"),
    )
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise UserError(f"{root} is not a saliency set: it needs {images}/ and {masks}/")
    # every mask-named entry, regular or not: `saliency_foreground` refuses one that is not a file, by name
    by_stem = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()}
    samples = []
    for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        if img.stem not in by_stem:
            raise UserError(f"saliency set {root}: image {img.name} has no mask in {masks}/")
        samples.append(
            Sample(str(img.relative_to(root)), -1, split, {"mask": str(by_stem[img.stem].relative_to(root))})
        )
    ds = ImageDataset(
        name,
        root,
        ["background", "foreground"],
        samples,
        description=f"saliency set at {root}",
        # how a mask becomes foreground: TokenCut's reading, which the published numbers use
        extra={"mask_classes": ["background", "foreground"], "saliency_convention": "tokencut"},
    )
    return check_annotations(ds)


def saliency_foreground(root: Path, sample: Sample, convention: str = "tokencut") -> np.ndarray:
    """(H, W) bool foreground mask under the named ground-truth convention."""
    if convention not in CONVENTIONS:
        raise UserError(f"unknown saliency convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    path = root / sample.ann["mask"]
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open for ever
            raise OSError("not a regular file")
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"saliency mask {path} cannot be read as an image ({exc})") from None
    return grey > 0 if convention == "tokencut" else grey > 127
