"""The real photos in ../shared/data load through the generic readers via the example datasets config:
counts, classes, masks aligned with images, boxes and keypoints inside images. Skipped where absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image

from probebench.data.formats.coco import instance_masks
from probebench.data.formats.masks import load_label_map
from probebench.data.lookup import get_dataset

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "datasets.yaml"
pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} is absent")


@pytest.fixture
def load(monkeypatch):
    monkeypatch.setenv("PROBEBENCH_DATA", str(SHARED_DATA))
    return lambda name: get_dataset(name, EXAMPLE)


def _size(ds, s) -> tuple[int, int]:
    with Image.open(ds.root / s.path) as im:
        return im.size


def test_cub100_counts_and_classes(load):
    ds = load("cub100")
    assert len(ds) == 5902 and ds.describe()["splits"] == {"train": 2903, "test": 2999}
    assert len(ds.classes) == 100 and ds.classes[0] == "Black_footed_Albatross"
    assert {s.label for s in ds.samples} == set(range(100))
    assert all((ds.root / s.path).is_file() for s in ds.samples[::97])


def test_carparts_polygons_become_masks_inside_the_image(load):
    ds = load("carparts")
    assert ds.describe()["splits"] == {"train": 400, "test": 100}
    boxes = [b for s in ds.samples for b in s.ann["boxes"]]
    assert len(boxes) == 3884
    used = {ds.classes[b[4]] for b in boxes}
    assert len(used) == 18 and "_background_" not in used and "wheel" in used
    for s in ds.samples[::25]:
        w, h = _size(ds, s)
        assert s.ann["size"] == [w, h]
        masks = instance_masks(s, h, w)
        assert masks.shape == (len(s.ann["boxes"]), h, w) and masks.any(axis=(1, 2)).all()
        for box, mask in zip(s.ann["boxes"], masks, strict=True):
            x0, y0, x1, y1 = box[:4]
            assert 0 <= x0 < x1 <= w + 1 and 0 <= y0 < y1 <= h + 1, "boxes inside the image"
            ys, xs = np.nonzero(mask)
            assert xs.min() >= int(x0) - 1 and xs.max() <= x1 + 1, "mask inside its box"


def test_ccp_label_maps_aligned_with_images(load):
    ds = load("ccp")
    assert len(ds) == 1004 and len(ds.classes) == 59 and ds.classes[0] == "null"
    for s in ds.samples[::50]:
        labels = load_label_map(ds.root, s)
        assert labels.shape == _size(ds, s)[::-1], "label map has the image's size"
        assert 0 < labels.max() < len(ds.classes) and (labels > 0).mean() > 0.05


def test_fruit_voc_boxes_inside_images_with_sizes_from_images(load):
    ds = load("fruit")
    assert ds.describe()["splits"] == {"train": 240, "test": 60} and ds.classes == [
        "apple",
        "banana",
        "orange",
    ]
    for s in ds.samples:
        w, h = s.ann["size"]
        assert w > 0 and h > 0, "sizes of 0 in the XML are taken from the image"
        for x0, y0, x1, y1, _ in s.ann["boxes"]:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert {s.label for s in ds.samples} == {0, 1, 2}


def test_coco_keypoints_inside_images(load):
    ds = load("coco_keypoint_fixtures")
    assert len(ds) == 4 and ds.classes == ["person"]
    n = 0
    for s in ds.samples:
        w, h = _size(ds, s)
        for x, y, v, part, _ in s.ann["keypoints"]:
            assert 0 <= part < 17
            if v > 0:
                assert 0 <= x <= w and 0 <= y <= h
                n += 1
    assert n > 20


def test_every_real_image_decodes(load):  # about 40 s: kept in `make test`, it guards the real data
    from probebench.data.loader import read_rgb

    for name in ("cub100", "carparts", "ccp", "fruit"):
        ds = load(name)
        for s in ds.samples:
            assert read_rgb(str(ds.root / s.path)).mode == "RGB"
