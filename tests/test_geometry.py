"""Geometry: the framings match the encoders' preprocessing, and points, boxes and masks map between image
pixels and the token grid both ways."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T
from torchvision.transforms.functional import InterpolationMode

from probebench.geometry import Framing, Geometry

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def framing(mode: str, size: int = 64, crop_pct: float = 0.875, multiple: int = 16, max_side=None) -> Framing:
    return Framing(mode, size, crop_pct, "bicubic", MEAN, STD, multiple, max_side)


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(97, 61), (61, 97), (80, 80), (300, 73)])
def test_resize_framing_is_the_torchvision_pipeline_it_replaced(size):
    old = T.Compose(
        [
            T.PILToTensor(),
            T.Resize(73, interpolation=InterpolationMode("bicubic"), antialias=True),
            T.CenterCrop(64),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(MEAN, STD),
        ]
    )
    image = photo(*size)
    x, geo = framing("resize")(image)
    assert torch.equal(x, old(image)), "bit-identical inputs keep every cached number"
    assert (geo.input_w, geo.input_h, geo.grid_w, geo.grid_h) == (64, 64, 4, 4)
    assert min(geo.resized_w, geo.resized_h) == 73


@pytest.mark.parametrize("mode", ["resize", "native"])
def test_a_marked_pixel_lands_where_the_geometry_says(mode):
    """Paint one bright block in a dark image; the geometry must put its centre in the cell that lights up."""
    w, h = 150, 90
    arr = np.zeros((h, w, 3), np.uint8)
    arr[40:52, 100:112] = 255  # centre (106, 46)
    x, geo = framing(mode, multiple=16)(Image.fromarray(arr))
    bright = x.mean(0).numpy()
    # The input pixel with the most light, mapped to the grid, and the point's own mapping must agree.
    iy, ix = np.unravel_index(np.argmax(bright), bright.shape)
    (u, v) = geo.image_to_grid([[106, 46]])[0]
    assert abs(ix / geo.stride[0] - u) < 0.5 and abs(iy / geo.stride[1] - v) < 0.5
    (r, c) = geo.cell_of([[106, 46]])[0]
    assert (r, c) == (int(v), int(u))


def test_native_framing_pads_bottom_right_with_zeros_and_keeps_pixels():
    image = photo(70, 50)
    x, geo = framing("native", multiple=16)(image)
    assert x.shape == (3, 64, 80) and (geo.grid_h, geo.grid_w) == (4, 5)
    assert (geo.width, geo.height, geo.resized_w, geo.resized_h, geo.left, geo.top) == (70, 50, 70, 50, 0, 0)
    assert torch.count_nonzero(x[:, 50:, :]) == 0 and torch.count_nonzero(x[:, :, 70:]) == 0
    expect = T.functional.to_dtype(T.functional.pil_to_tensor(image), torch.float32, scale=True)
    expect = T.functional.normalize(expect, MEAN, STD)
    assert torch.equal(x[:, :50, :70], expect)
    capped, geo2 = framing("native", multiple=16, max_side=35)(image)
    assert (geo2.resized_w, geo2.resized_h) == (35, 25) and capped.shape == (3, 32, 48)


GEOS = {
    "resize": Geometry(97, 61, 116, 73, 26, 4, 64, 64, 4, 4, 16),
    "native": Geometry(70, 50, 70, 50, 0, 0, 80, 64, 5, 4, 16),
    "native_capped": Geometry(700, 500, 70, 50, 0, 0, 80, 64, 5, 4, 16),
    # A CNN's 32-px stage on an 80 px input: ceil(80 / 32) = 3 cells, the last one partly outside the input.
    "cnn_partial_cell": Geometry(97, 61, 136, 85, 28, 2, 80, 80, 3, 3, 32),
}


@pytest.mark.parametrize("name", list(GEOS))
def test_points_round_trip(name):
    geo = GEOS[name]
    pts = np.random.default_rng(1).uniform(0, 1, (50, 2)) * [geo.width, geo.height]
    assert np.allclose(geo.grid_to_image(geo.image_to_grid(pts)), pts)


def test_a_point_in_the_padding_is_off_the_grid_and_a_cell_centre_maps_back():
    geo = GEOS["native"]  # 70x50 image, 16 px cells, grid 4x5: the last column and row are partly padding
    assert geo.cell_of([[40.0, 24.0], [69.9, 49.9], [-1.0, 3.0]]).tolist() == [[1, 2], [3, 4], [-1, -1]]
    assert geo.grid_to_image([[2.5, 1.5]]).tolist() == [[40.0, 24.0]]


def test_geometry_rows_round_trip_and_regrid():
    geo = GEOS["resize"]
    assert Geometry.from_row(geo.to_row()) == geo
    assert geo.with_grid(8, 8, 8).stride == (8.0, 8.0)


def test_a_partial_cell_at_the_edge_keeps_the_stage_stride():
    """A CNN stage of stride 32 on an 80 px input has ceil(80 / 32) = 3 cells of 32 px, not 3 of 26.7 px:
    the last input pixel falls in the last cell, and a cell's centre maps back by the stride."""
    geo = GEOS["cnn_partial_cell"]
    assert geo.stride == (32.0, 32.0)
    last_input_px = np.array([[(79.5 + geo.left) / geo.scale[0], (79.5 + geo.top) / geo.scale[1]]])
    assert geo.cell_of(last_input_px).tolist() == [[2, 2]]
    assert geo.image_to_grid(geo.grid_to_image([[1.5, 1.5]])).tolist() == [[1.5, 1.5]]
    centre = geo.grid_to_image([[0.5, 0.5]])[0]
    assert centre[0] == pytest.approx((16 + geo.left) / geo.scale[0])
