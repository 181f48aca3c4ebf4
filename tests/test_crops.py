"""Keypoint-centred part crops: the authors' d/2 side (and the paper's d), the distance filter, visibility and
per-person rules, and a crop that keeps its keypoint at the centre through the encoder's resize."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image

from probebench.data.views.crops import keypoint_crops
from probebench.geometry import Framing


def test_side_is_half_the_nearest_distance_as_the_code_crops_it():
    kps = [[100, 100, 1, 0], [100, 220, 1, 1], [180, 100, 1, 2], [400, 400, 0, 3]]  # the last is not visible
    code = {c.part: c for c in keypoint_crops(kps, [0, 1, 2, 3])}
    assert set(code) == {0, 1, 2}
    assert code[0].box == (80, 80, 120, 120)  # d = 80 (to part 2): half = round(80 / 4) = 20
    assert code[1].box == (70, 190, 130, 250)  # d = 120 (to part 0): half 30
    text = {c.part: c for c in keypoint_crops(kps, [0, 1, 2], side="text")}
    assert text[0].box == (60, 60, 140, 140)  # the paper's d x d
    near = [[10, 10, 1, 0], [40, 10, 1, 1]]  # d = 30: d / 2 = 15 is not above 20, so no crop
    assert keypoint_crops(near, [0, 1]) == []
    assert keypoint_crops(kps, [0]) == [], "a lone target keypoint has no distance to take"


def test_coco_rules_per_person_and_visibility_two():
    kps = [
        [50, 50, 2, 0, 0],
        [150, 50, 2, 10, 0],  # person 0: two visible targets
        [300, 300, 2, 0, 1],
        [380, 300, 1, 15, 1],  # person 1: the second is labelled but not visible
    ]
    crops = keypoint_crops(kps, [0, 10, 15], min_visibility=2)
    assert {(c.group, c.part) for c in crops} == {(0, 0), (0, 10)}


@pytest.mark.parametrize("where", [(60, 45), (5, 90)])
def test_the_keypoint_is_at_the_centre_of_the_resized_crop(where):
    """Draw a dot at the keypoint, crop (PIL fills outside the image with black) and resize as an encoder
    does: the dot lands on the centre of the 224 px input."""
    x, y = where
    arr = np.zeros((120, 160, 3), np.uint8)
    arr[y - 1 : y + 2, x - 1 : x + 2] = 255
    (crop,) = [c for c in keypoint_crops([[x, y, 1, 0], [x + 60, y, 1, 1]], [0, 1]) if c.part == 0]
    patch = Image.fromarray(arr).crop(crop.box)
    tensor, _ = Framing("resize", 224, 1.0, "bicubic", (0, 0, 0), (1, 1, 1), 16)(patch)
    iy, ix = np.unravel_index(np.argmax(tensor.mean(0).numpy()), (224, 224))
    assert abs(ix - 112) <= 6 and abs(iy - 112) <= 6


def test_crops_on_real_coco_keypoints():
    folder = SHARED_DATA / "keypoint-fixtures" / "coco"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (the real COCO keypoint fixtures)")
    from probebench.data.formats.coco import read_coco

    ds = read_coco(folder, "kp", {"test": "test_coco.json"})
    targets = [0, 10, 15]  # nose, right_wrist, left_ankle: the protocol's 1-based ids 1, 11, 16
    crops = [
        (s, c) for s in ds.samples for c in keypoint_crops(s.ann["keypoints"], targets, min_visibility=2)
    ]
    assert crops, "the fixtures hold people with at least two visible target keypoints"
    for sample, crop in crops:
        w, h = Image.open(ds.root / sample.path).size
        assert 0 <= crop.centre[0] < w and 0 <= crop.centre[1] < h
        assert crop.box[2] - crop.box[0] > 20 and crop.part in targets


def test_a_crop_view_is_a_dataset_the_loader_crops_and_the_cache_keys(tmp_path):
    from probebench.data.base import ImageDataset, Sample
    from probebench.data.loader import ImageRows, read_rgb
    from probebench.data.views.crops import crop_view

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    kps = [[40, 50, 1, 0], [120, 50, 1, 1], [40, 110, 1, 2]]
    source = ImageDataset("birds", tmp_path, ["bird"], [Sample("a.png", 0, "test", {"keypoints": kps})])
    view = crop_view(source, [0, 1], ["eye", "tail"])
    assert view.name == "birds_parts" and view.classes == ["eye", "tail"]
    assert [(s.label, s.ann["crop"]) for s in view.samples] == [
        (0, [20, 30, 60, 70]),
        (1, [100, 30, 140, 70]),
    ]
    framing = Framing("resize", 32, 1.0, "bilinear", (0, 0, 0), (1, 1, 1), 16)
    x, row, ok, _ = ImageRows(view, [1], framing)[0]
    expect, _ = framing(read_rgb(str(tmp_path / "a.png")).crop((100, 30, 140, 70)))
    assert ok and row == 1 and np.array_equal(x.numpy(), expect.numpy())
    assert view.fingerprint() != crop_view(source, [0, 1], ["eye", "tail"], side="text").fingerprint()
    assert (
        source.fingerprint() == ImageDataset("birds", tmp_path, ["bird"], list(source.samples)).fingerprint()
    )


# -- crops as a task's view of its data -------------------------------------------------------------------
def _coco(tmp_path):
    """Two images with two part boxes each (one crowd, one tiny) and named person keypoints."""
    import json

    from probebench.data.formats.coco import read_coco

    for i in (1, 2):
        Image.fromarray(np.full((100, 120, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.jpg")
    names = ["nose", "left_eye", "right_eye"]
    cats = [{"id": 1, "name": "wheel", "keypoints": names}, {"id": 2, "name": "door", "keypoints": names}]
    kps = [20, 20, 2, 70, 20, 2, 0, 0, 0]  # nose and left eye 50 px apart: d / 2 = 25, half = round(12.5)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "keypoints": kps},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 40, 4, 4]},  # under min_side
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0, 0, 50, 50], "iscrowd": True},
        {"id": 4, "image_id": 2, "category_id": 2, "bbox": [60, 30, 40, 40]},
    ]  # fmt: skip
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 120, "height": 100} for i in (1, 2)]
    (tmp_path / "test.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    return read_coco(tmp_path, "toy")


def test_box_crops_keep_each_part_box_and_leave_out_crowds_and_tiny_ones(tmp_path):
    from probebench.data.views.crops import CropSpec, make_crop_view

    view = make_crop_view(_coco(tmp_path), CropSpec(source="boxes"))
    assert view.name.startswith("toy.crops-boxes-") and view.extra["view_of"] == "toy"
    assert view.classes == ["wheel", "door"]
    assert [(s.path, s.label, s.ann["crop"]) for s in view.samples] == [
        ("1.jpg", 0, [10, 10, 40, 30]),
        ("2.jpg", 1, [60, 30, 100, 70]),
    ]
    assert make_crop_view(_coco(tmp_path), CropSpec(source="boxes", min_side=2)).name != view.name


def test_keypoint_crops_by_name_and_unknown_names_are_one_line(tmp_path):
    from probebench.data.views.crops import CropSpec, make_crop_view
    from probebench.errors import UserError

    ds = _coco(tmp_path)
    view = make_crop_view(ds, CropSpec(source="keypoints", keypoints=["nose", "left_eye"], min_visibility=2))
    assert view.classes == ["nose", "left_eye"]
    assert [(s.label, s.ann["crop"]) for s in view.samples] == [(0, [8, 8, 32, 32]), (1, [58, 8, 82, 32])]
    by_id = make_crop_view(ds, CropSpec(source="keypoints", keypoints=[1, 2], min_visibility=2))
    assert [s.ann["crop"] for s in by_id.samples] == [s.ann["crop"] for s in view.samples], "1-based ids"
    with pytest.raises(UserError, match="no keypoint 'tail' \\(its keypoints: nose, left_eye, right_eye\\)"):
        make_crop_view(ds, CropSpec(source="keypoints", keypoints=["tail"]))


def test_mask_crops_are_the_boxes_of_each_part(tiny_embedded):
    from probebench.data.formats.masks import load_label_map
    from probebench.data.views.crops import CropSpec, make_crop_view

    view = make_crop_view(tiny_embedded, CropSpec(source="masks"))
    assert view.classes == tiny_embedded.extra["mask_classes"][1:] and view.synthetic
    assert {s.split for s in view.samples} == {"train", "test"} and len(view) > len(tiny_embedded)
    for s in view.samples[::7]:
        source = tiny_embedded.samples[s.ann["source_row"]]
        labels = load_label_map(tiny_embedded.root, source)
        x0, y0, x1, y1 = s.ann["crop"]
        part = labels == s.label + 1
        assert part[y0:y1, x0:x1].sum() == part.sum(), "the whole part is inside its crop"
        assert part[y0, x0:x1].any() and part[y1 - 1, x0:x1].any(), "and the crop is tight"


def test_part_tasks_run_on_a_cached_view_and_are_filed_under_their_dataset(tiny_embedded):
    import json

    from conftest import TINY_REGISTRY

    from probebench.cache.entries import list_stores
    from probebench.encoders.load import resolve_encoder
    from probebench.encoders.registry import parse_registry
    from probebench.pipeline.config import RunConfig
    from probebench.pipeline.runner import run_encoder
    from probebench.tasks import get_task, get_tasks

    spec = resolve_encoder(parse_registry(TINY_REGISTRY)["tiny_random"])
    cfg = RunConfig(batch_size=16, workers=0)
    assert [t.name for t in get_tasks("part")] == [
        "part_retrieval",
        "part_linear",
        "part_attentive",
        "keypoint_correspondence",
        "part_dense_retrieval",
        "part_segmentation",
    ]
    out = run_encoder(spec, [get_task("part_retrieval"), get_task("part_linear")], cfg)
    assert [o.status for o in out] == ["done", "done"]
    (store,) = list_stores()
    assert store.root.parent.name.startswith("embedded.crops-masks-"), "one cache entry, for the view"
    record = json.loads(out[0].path.read_text())
    assert out[0].path.name == "tiny_random__embedded__part_retrieval.json"
    assert record["task"]["level"] == "part" and record["dataset"]["view_of"] == "embedded"
    assert record["knobs"]["feature"] == "encoded" and record["primary"]["name"] == "ap"
    assert 0 < record["metrics"]["ap"] <= 100 and set(record["metrics"]["per_class_ap"]) <= set(
        tiny_embedded.extra["mask_classes"][1:]
    )
    assert record["metrics"]["n_queries"] == record["roles"]["test"]["n_images"]
    assert json.loads(out[1].path.read_text())["task"]["level"] == "part"
    again = run_encoder(spec, [get_task("part_retrieval"), get_task("part_linear")], cfg)
    assert [o.status for o in again] == ["skipped", "skipped"]


def test_a_crops_task_bound_to_every_split_finds_its_crops(tiny_embedded):
    """`split: all` (the authors retrieve over every CUB image) is every crop of the view, not a split the
    view lacks: it once stopped the papers' CUB retrieval with "no crop in its 'all' images"."""
    from probebench.pipeline.data import with_views
    from probebench.tasks.catalog import parse_tasks

    text = "everything: {probe: part_retrieval, dataset: embedded, split: all, crops: {source: masks}}"
    (task,) = parse_tasks(text, "test").values()
    views = with_views([task], {tiny_embedded.name: tiny_embedded})
    view = views[task.fed(tiny_embedded.name)]
    assert len(view.split_indices("all")) == len(view) > len(view.split_indices("test"))
