"""Decoding and resizing in DataLoader workers. An unreadable file yields a zero image and ok=False; the
extractor counts it (or stops, with --strict) and marks the row invalid, so one bad file never loses a run."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageOps

from probebench.data.base import ImageDataset


def read_rgb(path: str) -> Image.Image:
    """Any image file as RGB, with EXIF orientation applied (phones store rotated pixels)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")  # palette transparency is only resolved correctly through RGBA
        return im.convert("RGB")


class ImageRows(torch.utils.data.Dataset):
    """Rows `indices` of a dataset -> (image (3, S, S), row index, ok)."""

    def __init__(self, dataset: ImageDataset, indices: Sequence[int], transform: Callable, size: int) -> None:
        self.paths = [str(dataset.root / dataset.samples[i].path) for i in indices]
        self.indices = list(indices)
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool]:
        try:
            return self.transform(read_rgb(self.paths[i])), self.indices[i], True
        except (OSError, ValueError, SyntaxError):  # PIL's errors for truncated, missing and non-image files
            return torch.zeros(3, self.size, self.size), self.indices[i], False


def worker_init(_: int) -> None:
    # Workers only decode and resize; one thread each leaves the cores to the forward pass.
    torch.set_num_threads(1)
