"""How an image becomes an encoder input, and the maps between image pixels and the token grid.

Three framings (recorded in the cache key):
- `resize`: the encoder's own eval preprocessing: shorter side to `round(input_size / crop_pct)`, centre crop
  `input_size` x `input_size`, normalise (timm's and the papers' `Resize(256) + CenterCrop(224)`);
- `stretch`: the whole image resized to `input_size` x `input_size` (each side scaled on its own, no crop),
  normalised: what keypoint correspondence reads (SPair evaluations resize both images to a square), since a
  centre crop would drop keypoints near the border. Points map back with a scale per axis;
- `native`: the image at its own size (optionally scaled down so its longer side is at most `max_side`),
  normalised, then zero-padded at the bottom and right to a multiple of the patch size, as LOST and TokenCut
  do, so every patch sees real pixels and boxes can be scored in original pixels.

A `Geometry` records, per image, every number of that journey:

    image (width x height) --scale--> resized (resized_w x resized_h) --crop at (left, top) or pad-->
    input (input_w x input_h) --/ cell--> token grid (grid_w x grid_h)

where `cell` is the input pixels per grid cell (the patch size; a CNN stage's total stride, whose map is
ceil(input / stride) cells when the input is not a multiple of it).

and maps points both ways (`image_to_grid`, `grid_to_image`, `cell_of`: where a keypoint falls on the grid,
where a patch centre lies in the image). Pixel coordinates are continuous with (0, 0) the top-left corner of
the top-left pixel, so pixel (i, j) has its centre at (i + 0.5, j + 0.5). Discovery's boxes and masks reach
the image by the discovery methods' own conventions (LOST's clipping, FOUND's upsampling), in
`probebench.discovery.base`.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING

import numpy as np

from probebench.errors import UserError

if TYPE_CHECKING:  # the task catalogue reads the modes below and must not import torch
    import torch
    from PIL import Image

GEOMETRY_MODES = ("resize", "stretch", "native")
SIZED_MODES = ("resize", "stretch")  # every input has the framing's one size (`input_size`)


@dataclass(frozen=True)
class Geometry:
    width: int  # the image as stored
    height: int
    resized_w: int  # after the resize (native: the capped size, or the image's own)
    resized_h: int
    left: int  # crop offset inside the resized image (resize mode; 0 in stretch and native modes)
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
        import torch
        import torch.nn.functional as F
        from torchvision.transforms import v2 as T
        from torchvision.transforms.functional import InterpolationMode

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
        elif self.mode == "stretch":
            rw = rh = in_w = in_h = self.input_size
            x = T.functional.resize(x, [rh, rw], interpolation=interp, antialias=True)
            top = left = 0
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
