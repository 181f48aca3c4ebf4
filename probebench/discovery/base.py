"""What a discovery method reads and returns, and the grid helpers every method shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from probebench.geometry import Geometry


@dataclass(frozen=True)
class ImageFeatures:
    """One image's features as discovery methods read them.

    keys:      (h, w, C) the last block's keys (heads concatenated, prefix tokens dropped), or the patch
               tokens where the encoder has no keys (`keys_are_tokens`)
    attention: (h, w, H) the class token's attention to each patch per head, None without one
    tokens:    (h, w, D) patch tokens of the last block (final-normed), for mask-pooled descriptors
    geometry:  how the image became the grid (native: own size, zero-padded to a multiple of the patch)
    """

    keys: np.ndarray
    attention: np.ndarray | None
    tokens: np.ndarray
    geometry: Geometry
    keys_are_tokens: bool = False

    @property
    def grid(self) -> tuple[int, int]:
        return self.keys.shape[0], self.keys.shape[1]


@dataclass
class Discovery:
    """One method's answer for one image.

    mask: (h, w) bool, the object the method found, on the patch grid
    soft: (h, w) float in [0, 1], a foreground probability where the method has one (else the mask is used)
    box:  (x0, y0, x1, y1) in grid cells, ends exclusive; None: the method found nothing (counts as a miss)
    clip: clip the box to the unpadded image (LOST and TokenCut do; DINO-seg's code does not)
    image_fraction: the trivial baselines' box as fractions (x0, y0, x1, y1) of the stored image's sides,
        exact in pixels (its mask is that box too), instead of `box` and `mask`
    regions, embeddings: a grouping method's (h, w) region map and (K, d) region embeddings
    logits: (h, w) where the soft map is their sigmoid: upsampled before the sigmoid, as FOUND evaluates
    why: why the method could not answer this image (then `box` is None and the mask empty), for the record
    """

    mask: np.ndarray
    box: tuple[int, int, int, int] | None
    soft: np.ndarray | None = None
    clip: bool = True
    image_fraction: tuple[float, float, float, float] | None = None
    regions: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    logits: np.ndarray | None = None
    why: str | None = None

    @property
    def foreground(self) -> np.ndarray:
        """(h, w) float foreground map: the soft map where there is one, else the mask."""
        return self.soft if self.soft is not None else self.mask.astype(np.float32)


def label_components(binary: np.ndarray) -> np.ndarray:
    """Connected components of a (h, w) bool map, 4-connected (scipy's default, as LOST and TokenCut)."""
    return ndimage.label(binary)[0]


def cells_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1) of a (h, w) bool map in cells, ends exclusive; None when it is empty."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def largest_component(binary: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a (h, w) bool map (ties: the first in raster order)."""
    labels = label_components(binary)
    if labels.max() == 0:
        return np.zeros_like(binary, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def from_mask(mask: np.ndarray, soft: np.ndarray | None = None) -> Discovery:
    """A mask method's answer: the box of its largest connected component (HEAP's and FOUND's "single")."""
    return Discovery(mask.astype(bool), cells_box(largest_component(mask)), soft)


def box_to_pixels(box: tuple[int, int, int, int], geo: Geometry, clip: bool = True) -> list[float]:
    """A box in grid cells -> [x0, y0, x1, y1] in pixels of the image as stored.

    Cells times the cell size give input pixels (LOST's `scales`); `clip` cuts the ends at the unpadded
    image as LOST and TokenCut do; a resize (native geometry with a size cap) is undone last.
    """
    x0, y0, x1, y1 = (float(v * geo.cell) for v in box)
    x0, y0 = x0 + geo.left, y0 + geo.top
    x1, y1 = x1 + geo.left, y1 + geo.top
    if clip:
        x1, y1 = min(x1, float(geo.resized_w)), min(y1, float(geo.resized_h))
    sx, sy = geo.scale
    return [x0 / sx, y0 / sy, x1 / sx, y1 / sy]


def mask_to_pixels(grid: np.ndarray, geo: Geometry, smooth: bool) -> np.ndarray:
    """A (h, w) map on the grid -> (H, W) float at the stored image size.

    Binary maps take the value of the cell under each pixel (nearest); soft maps are upsampled bilinearly
    by the cell size as FOUND does (`interpolate(scale_factor=patch, bilinear)`), cropped to the unpadded
    image, then resized to the stored size when the image was resized.
    """
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.array(grid, dtype=np.float32))[None, None]
    mode = {"mode": "bilinear", "align_corners": False} if smooth else {"mode": "nearest"}
    up = F.interpolate(t, scale_factor=geo.cell, **mode)
    up = up[..., geo.top : geo.top + geo.resized_h, geo.left : geo.left + geo.resized_w]
    if (geo.resized_h, geo.resized_w) != (geo.height, geo.width):
        up = F.interpolate(up, size=(geo.height, geo.width), **mode)
    return up[0, 0].numpy()


def to_image(d: Discovery, geo: Geometry) -> tuple[list[float] | None, np.ndarray]:
    """A discovery on the stored image: its box in pixels (None without one) and its (H, W) foreground map."""
    if d.image_fraction is not None:
        x0, y0, x1, y1 = d.image_fraction
        box = [x0 * geo.width, y0 * geo.height, x1 * geo.width, y1 * geo.height]
        full = np.zeros((geo.height, geo.width), dtype=np.float32)
        full[int(round(box[1])) : int(round(box[3])), int(round(box[0])) : int(round(box[2]))] = 1.0
        return box, full
    box = None if d.box is None else box_to_pixels(d.box, geo, d.clip)
    if d.logits is not None:  # FOUND: logits upsampled bilinearly, then the sigmoid
        return box, 1.0 / (1.0 + np.exp(-mask_to_pixels(d.logits, geo, smooth=True)))
    return box, mask_to_pixels(d.foreground, geo, smooth=d.soft is not None)
