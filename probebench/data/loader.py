"""Decoding and framing in DataLoader workers. An unreadable file yields a zero image and ok=False; the
extractor counts it (or stops, with --strict) and marks the row invalid, so one bad file never loses a run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from probebench.data.base import ImageDataset
from probebench.geometry import Framing, Geometry


def read_rgb(path: str) -> Image.Image:
    """Any image file as RGB, with EXIF orientation applied (phones store rotated pixels)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")  # palette transparency is only resolved correctly through RGBA
        return im.convert("RGB")


class ImageRows(torch.utils.data.Dataset):
    """Rows `indices` of a dataset -> (input (3, H, W), row index, ok, geometry (11,) int64).

    In `resize` framing every input has the same size; in `native` framing sizes differ, so batches are lists
    (see `collate_rows`) and the extractor groups equal sizes.
    """

    def __init__(self, dataset: ImageDataset, indices: Sequence[int], framing: Framing) -> None:
        self.paths = [str(dataset.root / dataset.samples[i].path) for i in indices]
        self.crops = [dataset.samples[i].ann.get("crop") for i in indices]  # views: a region of the file
        self.indices = list(indices)
        self.framing = framing

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool, np.ndarray]:
        try:
            image = read_rgb(self.paths[i])
            if self.crops[i] is not None:
                image = image.crop(tuple(self.crops[i]))  # outside the image is black, as PIL pads it
            image, geometry = self.framing(image)
            return image, self.indices[i], True, geometry.to_row()
        except (OSError, ValueError, SyntaxError):  # PIL's errors for truncated, missing and non-image files
            f = self.framing
            side = f.input_size if f.mode == "resize" else f.multiple
            cells = -(-side // f.multiple)
            placeholder = Geometry(side, side, side, side, 0, 0, side, side, cells, cells, f.multiple)
            return torch.zeros(3, side, side), self.indices[i], False, placeholder.to_row()


def collate_rows(batch: list) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, np.ndarray]:
    """Inputs as a list (sizes may differ), rows (B,), ok (B,) bool, geometries (B, 11)."""
    images, rows, ok, geometry = zip(*batch, strict=True)
    return list(images), torch.tensor(rows), torch.tensor(ok), np.stack(geometry)


def worker_init(_: int) -> None:
    # Workers only decode and resize; one thread each leaves the cores to the forward pass.
    torch.set_num_threads(1)
