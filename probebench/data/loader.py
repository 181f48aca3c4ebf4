"""Decoding and framing in DataLoader workers. An unreadable file yields a zero image and ok=False; the
extractor counts it (or stops, with --strict) and marks the row invalid, so one bad file never loses a run."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from probebench.data.base import MAX_PIXELS, ImageDataset
from probebench.geometry import SIZED_MODES, Framing, Geometry


class UnreadableImage(ValueError):
    """A file that is not read as an image on purpose: not a regular file, or more pixels than allowed."""


def _to_8bit(im: Image.Image) -> Image.Image:
    """Greyscale images deeper than 8 bits as 8-bit "L", scaled by their type's range rather than clipped
    (Pillow's `convert("RGB")` clips every 16-bit value above 255 to white).

    16-bit ("I;16*") divides by 257, so a value v * 257 becomes v exactly; 32-bit integer ("I") holds 16-bit
    data when Pillow widens a 16-bit file (values 0..65535, divided by 257), else it is scaled from its
    type's range 0..2**31-1; float ("F") is taken as 0..1, the convention for float images, and clipped.
    """
    if im.mode.startswith("I;16"):
        a, top = np.asarray(im, dtype=np.float64), 65535.0
    elif im.mode == "I":
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.size == 0 or (a.min() >= 0 and a.max() <= 65535) else 2.0**31 - 1
    elif im.mode == "F":
        a, top = np.asarray(im, dtype=np.float64), 1.0
    else:
        return im
    return Image.fromarray(np.clip(np.rint(a / top * 255.0), 0, 255).astype(np.uint8), mode="L")


def open_header(path: str | os.PathLike) -> Image.Image:
    """`Image.open` without Pillow's own pixel limit (it reads the header only): `read_rgb` applies the
    limit asked for instead. Restored at once, so other readers in this process keep Pillow's."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def read_rgb(path: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Any image file as 8-bit RGB, with EXIF orientation applied (phones store rotated pixels).

    Raises `UnreadableImage` for what is not a regular file (a FIFO named x.jpg would block forever) and for
    images of more than `max_pixels` pixels (decompression bombs), before any pixel is decoded."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise UnreadableImage(f"{path} is not a regular file")
    with open_header(path) as im:
        if im.width * im.height > max_pixels:
            raise UnreadableImage(
                f"{path} has {im.width} x {im.height} pixels, more than --max-pixels {max_pixels}"
            )
        im = ImageOps.exif_transpose(_to_8bit(im))
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")  # palette transparency is only resolved correctly through RGBA
        return im.convert("RGB")


class ImageRows(torch.utils.data.Dataset):
    """Rows `indices` of a dataset -> (input (3, H, W), row index, ok, geometry (11,) int64).

    In `resize` framing every input has the same size; in `native` framing sizes differ, so batches are lists
    (see `collate_rows`) and the extractor groups equal sizes.
    """

    def __init__(
        self, dataset: ImageDataset, indices: Sequence[int], framing: Framing, max_pixels: int = MAX_PIXELS
    ) -> None:
        self.max_pixels = max_pixels
        self.paths = [str(dataset.root / dataset.samples[i].path) for i in indices]
        self.crops = [dataset.samples[i].ann.get("crop") for i in indices]  # views: a region of the file
        self.scales = [dataset.samples[i].ann.get("scale_to") for i in indices]  # window views: rescale first
        self.indices = list(indices)
        self.framing = framing

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool, np.ndarray]:
        try:
            image = read_rgb(self.paths[i], self.max_pixels)
            if self.scales[i] is not None:
                image = image.resize(tuple(self.scales[i]), Image.Resampling.BILINEAR)
            if self.crops[i] is not None:
                image = image.crop(tuple(self.crops[i]))  # outside the image is black, as PIL pads it
            image, geometry = self.framing(image)
            return image, self.indices[i], True, geometry.to_row()
        except (OSError, ValueError, SyntaxError):  # PIL's errors for truncated, missing and non-image files
            f = self.framing
            side = f.input_size if f.mode in SIZED_MODES else f.multiple
            cells = -(-side // f.multiple)
            placeholder = Geometry(side, side, side, side, 0, 0, side, side, cells, cells, f.multiple)
            return torch.zeros(3, side, side), self.indices[i], False, placeholder.to_row()


def why_unreadable(path: str, max_pixels: int = MAX_PIXELS) -> str:
    """The reason `read_rgb` fails on `path`, as one phrase (for the line that reports a skipped image)."""
    try:
        read_rgb(path, max_pixels).load()
    except (OSError, ValueError, SyntaxError) as exc:
        return str(exc) or type(exc).__name__
    return "read failed in a worker"


def collate_rows(batch: list) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, np.ndarray]:
    """Inputs as a list (sizes may differ), rows (B,), ok (B,) bool, geometries (B, 11)."""
    images, rows, ok, geometry = zip(*batch, strict=True)
    return list(images), torch.tensor(rows), torch.tensor(ok), np.stack(geometry)


def worker_init(_: int) -> None:
    # Workers only decode and resize; one thread each leaves the cores to the forward pass.
    torch.set_num_threads(1)
