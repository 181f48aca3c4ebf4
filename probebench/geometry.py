"""How an image becomes an encoder input, and the maps between image pixels and the token grid.

Two framings (recorded in the cache key):
- `resize`: the encoder's own eval preprocessing: shorter side to `round(input_size / crop_pct)`, centre crop
  `input_size` x `input_size`, normalise (timm's and the papers' `Resize(256) + CenterCrop(224)`);
- `native`: the image at its own size (optionally scaled down so its longer side is at most `max_side`),
  normalised, then zero-padded at the bottom and right to a multiple of the patch size, as LOST and TokenCut
  do, so every patch sees real pixels and boxes can be scored in original pixels.

A `Geometry` records, per image, every number of that journey:

    image (width x height) --scale--> resized (resized_w x resized_h) --crop at (left, top) or pad-->
    input (input_w x input_h) --/ cell--> token grid (grid_w x grid_h)

where `cell` is the input pixels per grid cell (the patch size; a CNN stage's total stride, whose map is
ceil(input / stride) cells when the input is not a multiple of it).

and maps points, boxes and masks both ways. Pixel coordinates are continuous with (0, 0) the top-left corner
of the top-left pixel, so pixel (i, j) has its centre at (i + 0.5, j + 0.5); boxes are [x0, y0, x1, y1) in
pixels, grid boxes [c0, r0, c1, r1) in cells.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2 as T
from torchvision.transforms.functional import InterpolationMode

from probebench.errors import UserError

GEOMETRY_MODES = ("resize", "native")


@dataclass(frozen=True)
class Geometry:
    width: int  # the image as stored
    height: int
    resized_w: int  # after the resize (native: the capped size, or the image's own)
    resized_h: int
    left: int  # crop offset inside the resized image (resize mode; 0 in native mode)
    top: int
    input_w: int  # what the network saw: the crop, or the padded image
    input_h: int
    grid_w: int  # tokens per row and column of the grid
    grid_h: int
    cell: int  # input pixels per grid cell (patch size, or a CNN stage's total stride)

    # -- storage: one int64 row per image in the cache ------------------------------------------------
    def to_row(self) -> np.ndarray:
        return np.array(astuple(self), dtype=np.int64)

    @classmethod
    def from_row(cls, row: np.ndarray) -> Geometry:
        return cls(*(int(v) for v in row))

    def with_grid(self, grid_h: int, grid_w: int, cell: int) -> Geometry:
        """The same framing seen through another grid (CNN stages have their own strides)."""
        return Geometry(*astuple(self)[:8], grid_w, grid_h, cell)

    # -- scales -----------------------------------------------------------------------------------------
    @property
    def scale(self) -> tuple[float, float]:
        """Resized pixels per image pixel, (x, y)."""
        return self.resized_w / self.width, self.resized_h / self.height

    @property
    def stride(self) -> tuple[float, float]:
        """Input pixels per grid cell, (x, y)."""
        return float(self.cell), float(self.cell)

    # -- points -----------------------------------------------------------------------------------------
    def image_to_grid(self, xy: np.ndarray) -> np.ndarray:
        """Points (N, 2) in image pixels -> continuous grid coordinates (N, 2) (x in cells, y in cells)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        (sx, sy), (gx, gy) = self.scale, self.stride
        return np.stack([(xy[:, 0] * sx - self.left) / gx, (xy[:, 1] * sy - self.top) / gy], axis=1)

    def grid_to_image(self, uv: np.ndarray) -> np.ndarray:
        """Continuous grid coordinates (N, 2) -> image pixels (N, 2); the inverse of `image_to_grid`."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        (sx, sy), (gx, gy) = self.scale, self.stride
        return np.stack([(uv[:, 0] * gx + self.left) / sx, (uv[:, 1] * gy + self.top) / sy], axis=1)

    def cell_of(self, xy: np.ndarray) -> np.ndarray:
        """The (row, col) cell each image point (N, 2) falls in, (N, 2) int; -1 where it is off the grid."""
        uv = np.floor(self.image_to_grid(xy)).astype(np.int64)
        rc = uv[:, ::-1].copy()
        off = (rc[:, 0] < 0) | (rc[:, 0] >= self.grid_h) | (rc[:, 1] < 0) | (rc[:, 1] >= self.grid_w)
        rc[off] = -1
        return rc

    # -- boxes ------------------------------------------------------------------------------------------
    def boxes_to_grid(self, boxes: np.ndarray) -> np.ndarray:
        """Image boxes (N, 4) [x0, y0, x1, y1) -> continuous grid boxes (N, 4), clipped to the grid."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        lo, hi = self.image_to_grid(b[:, :2]), self.image_to_grid(b[:, 2:])
        out = np.concatenate([lo, hi], axis=1)
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.grid_w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.grid_h)
        return out

    def grid_boxes_to_image(self, boxes: np.ndarray) -> np.ndarray:
        """Grid boxes (N, 4) [c0, r0, c1, r1) in cells -> image boxes (N, 4) in pixels, clipped to the image
        (LOST's rule: cell indices times the patch size, then clipped to the unpadded image)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = np.concatenate([self.grid_to_image(b[:, :2]), self.grid_to_image(b[:, 2:])], axis=1)
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out

    # -- masks ------------------------------------------------------------------------------------------
    def mask_to_grid(self, mask: np.ndarray, fill: int = 255) -> np.ndarray:
        """A label map (H, W) at image size -> (grid_h, grid_w): the label under each cell's centre (nearest),
        `fill` for cells whose centre lies outside the image (padding)."""
        mask = np.asarray(mask)
        if mask.shape[:2] != (self.height, self.width):
            raise ValueError(f"mask of shape {mask.shape} for an image of {self.width}x{self.height}")
        centres_u = (np.arange(self.grid_w) + 0.5)[:, None].repeat(2, 1)
        centres_v = (np.arange(self.grid_h) + 0.5)[:, None].repeat(2, 1)
        xs = np.floor(self.grid_to_image(centres_u)[:, 0]).astype(np.int64)
        ys = np.floor(self.grid_to_image(centres_v)[:, 1]).astype(np.int64)
        out = np.full((self.grid_h, self.grid_w), fill, dtype=mask.dtype)
        okx, oky = (xs >= 0) & (xs < self.width), (ys >= 0) & (ys < self.height)
        out[np.ix_(oky, okx)] = mask[np.ix_(ys[oky], xs[okx])]
        return out

    def grid_to_mask(self, grid: np.ndarray, fill: float = 0, mode: str = "nearest") -> np.ndarray:
        """Values on the grid (grid_h, grid_w) -> (H, W) at image size: each pixel centre takes the cell it
        falls in (`nearest`) or a bilinear blend of the cell centres (`bilinear`, for scores); pixels that
        the crop cut away take `fill`."""
        grid = np.asarray(grid)
        px = np.stack([np.arange(self.width) + 0.5, np.zeros(self.width)], 1)
        py = np.stack([np.zeros(self.height), np.arange(self.height) + 0.5], 1)
        u, v = self.image_to_grid(px)[:, 0], self.image_to_grid(py)[:, 1]
        inside = (
            (u[None, :] >= 0) & (u[None, :] < self.grid_w) & (v[:, None] >= 0) & (v[:, None] < self.grid_h)
        )
        if mode == "nearest":
            cu = np.clip(np.floor(u).astype(np.int64), 0, self.grid_w - 1)
            cv = np.clip(np.floor(v).astype(np.int64), 0, self.grid_h - 1)
            out = grid[np.ix_(cv, cu)]
        elif mode == "bilinear":
            # grid_sample's align_corners=False places cell centres at (i + 0.5) / n in [0, 1].
            gu = torch.as_tensor(u / self.grid_w * 2 - 1, dtype=torch.float32)
            gv = torch.as_tensor(v / self.grid_h * 2 - 1, dtype=torch.float32)
            where = torch.stack(torch.meshgrid(gu, gv, indexing="xy"), -1)[None]  # (1, H, W, 2)
            src = torch.as_tensor(grid, dtype=torch.float32)[None, None]
            out = F.grid_sample(src, where, mode="bilinear", padding_mode="border", align_corners=False)
            out = out[0, 0].numpy()
        else:
            raise ValueError(f"unknown mode {mode!r}; use nearest or bilinear")
        return np.where(inside, out, np.asarray(fill, dtype=out.dtype))


# -- framings: PIL image -> (input tensor, Geometry) ------------------------------------------------------
@dataclass(frozen=True)
class Framing:
    """A geometry mode with its parameters: turns a PIL image into a normalised input tensor (3, H, W) and
    the `Geometry` of that step. `multiple` is the encoder's patch size (its total stride for CNNs)."""

    mode: str
    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    multiple: int
    max_side: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in GEOMETRY_MODES:
            raise UserError(f"unknown geometry {self.mode!r}; choose from {', '.join(GEOMETRY_MODES)}")

    @property
    def resize(self) -> int:
        return int(round(self.input_size / self.crop_pct))

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, Geometry]:
        width, height = image.size
        x = T.functional.pil_to_tensor(image)
        interp = InterpolationMode(self.interpolation)
        if self.mode == "resize":
            rw, rh = _shorter_side_to(width, height, self.resize)
            x = T.functional.resize(x, [rh, rw], interpolation=interp, antialias=True)
            # torchvision's centre crop: offsets rounded half to even of (size - crop) / 2.
            top, left = int(round((rh - self.input_size) / 2.0)), int(round((rw - self.input_size) / 2.0))
            x = T.functional.center_crop(x, [self.input_size, self.input_size])
            in_w = in_h = self.input_size
        else:
            rw, rh = width, height
            if self.max_side and max(width, height) > self.max_side:
                s = self.max_side / max(width, height)
                rw, rh = max(1, round(width * s)), max(1, round(height * s))
                x = T.functional.resize(x, [rh, rw], interpolation=interp, antialias=True)
            top = left = 0
            in_w, in_h = _ceil_to(rw, self.multiple), _ceil_to(rh, self.multiple)
        x = T.functional.normalize(T.functional.to_dtype(x, torch.float32, scale=True), self.mean, self.std)
        if self.mode == "native" and (in_w, in_h) != (rw, rh):
            x = F.pad(x, (0, in_w - rw, 0, in_h - rh))  # zeros after normalising, as LOST and TokenCut pad
        grid = (-(-in_w // self.multiple), -(-in_h // self.multiple))  # a partial cell still gives a token
        return x, Geometry(width, height, rw, rh, left, top, in_w, in_h, *grid, self.multiple)


def _shorter_side_to(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's `Resize(size)` output (width, height): the shorter side becomes `size`, the longer
    `int(size * long / short)` (truncated, as torchvision does)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _ceil_to(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)
