"""Sliding windows for segmentation (mmseg's test-time `slide` mode, as Zhu et al.'s segmentation configs use
it).

Each image is first rescaled keeping its aspect ratio to fit `(long, short)` (mmseg's `Resize(scale=(2048,
512), keep_ratio=True)`: factor min(long / longer side, short / shorter side)), then covered by `crop` x
`crop` windows `stride` apart, the last one of each row and column moved back to end at the border (mmseg's
`slide_inference` grid). An image whose rescaled size fits one crop is one window: the whole image, one
resize.

The windows are a dataset view (`window_view`): one sample per window, with `ann["scale_to"]` (the rescaled
size)
and `ann["crop"]` (the window in rescaled pixels; the loader rescales then crops), `ann["source_row"]` (the
image), and the image's own annotations, so the features of every window are cached like any dataset's and a
segmentation probe can stitch window logits back onto the image.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

from probebench.data.base import ImageDataset, Sample
from probebench.data.sizes import file_sizes
from probebench.errors import UserError


@dataclass(frozen=True)
class WindowSpec:
    """`crop`, `stride`, `short`, `long` in pixels of the rescaled image (mmseg: crop_size, stride, scale)."""

    crop: int
    stride: int
    short: int
    long: int

    def __post_init__(self) -> None:
        if min(self.crop, self.stride, self.short, self.long) < 1 or self.stride > self.crop:
            raise UserError(f"windows {self}: give positive sizes with stride <= crop")


def rescaled_size(width: int, height: int, spec: WindowSpec) -> tuple[int, int]:
    """(width, height) after mmseg's keep-ratio resize to fit (long, short), rounded half up as mmcv does."""
    factor = min(spec.long / max(width, height), spec.short / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def window_boxes(width: int, height: int, spec: WindowSpec) -> list[tuple[int, int, int, int]]:
    """The windows [x0, y0, x1, y1) over a (rescaled) image, row by row, as mmseg's `slide_inference` lays
    them out: max(size - crop + stride - 1, 0) // stride + 1 per axis, each clipped to the image and moved
    back to keep `crop` pixels where the image has them."""
    rows = max(height - spec.crop + spec.stride - 1, 0) // spec.stride + 1
    cols = max(width - spec.crop + spec.stride - 1, 0) // spec.stride + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * spec.stride + spec.crop, height), min(c * spec.stride + spec.crop, width)
            out.append((max(x1 - spec.crop, 0), max(y1 - spec.crop, 0), x1, y1))
    return out


def window_view_name(dataset: str, spec: WindowSpec) -> str:
    digest = hashlib.sha256(json.dumps(spec.__dict__, sort_keys=True).encode()).hexdigest()[:8]
    return f"{dataset}.windows-{spec.crop}-{digest}"


def _image_sizes(dataset: ImageDataset) -> list[tuple[int, int]]:
    """Each stored image's (width, height) as the loader reads it (EXIF orientation applied): the checked
    annotation's size where it has one, else the file's header (cached); (0, 0) where unreadable."""
    sizes = [tuple(int(v) for v in s.ann.get("size") or (0, 0)) for s in dataset.samples]
    unknown = [i for i, (w, h) in enumerate(sizes) if not (w > 0 and h > 0)]
    headers = file_sizes([dataset.root / dataset.samples[i].path for i in unknown])
    for i, (w, h, _) in zip(unknown, headers.tolist(), strict=True):
        sizes[i] = (w, h)
    return sizes


def window_view(dataset: ImageDataset, spec: WindowSpec) -> ImageDataset:
    """The windows of every image of `dataset` as a dataset of their own, rows grouped by image in order."""
    samples = []
    for row, (s, (width, height)) in enumerate(zip(dataset.samples, _image_sizes(dataset), strict=True)):
        scaled = rescaled_size(width, height, spec) if width and height else (spec.crop, spec.crop)
        for k, box in enumerate(window_boxes(*scaled, spec)):
            ann = {**s.ann, "scale_to": list(scaled), "crop": list(box), "source_row": row, "window": k}
            samples.append(Sample(s.path, s.label, s.split, ann))
    if not samples:
        raise UserError(f"dataset {dataset.name!r} has no images to cut into windows")
    return replace(
        dataset,
        name=window_view_name(dataset.name, spec),
        samples=samples,
        description=f"sliding windows ({spec}) of {dataset.name}",
        extra={**dataset.extra, "view_of": dataset.name, "windows": spec.__dict__},
        warnings=list(dataset.warnings),
    )
