"""Annotations checked against their images when a dataset is read (issue 21): the readers refuse what is
broken with one line naming the file, drop and count what cannot be a box or a keypoint, and never read a
file outside the dataset's folder. Reader-level, no model: each case takes milliseconds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tiny_data
from conftest import SHARED_DATA
from PIL import Image

from probebench.data.annotations import label_map
from probebench.data.formats.coco import read_coco
from probebench.data.formats.cub import read_cub
from probebench.data.formats.masks import read_mask_folder
from probebench.data.formats.saliency import read_saliency
from probebench.data.formats.voc import read_voc
from probebench.data.views.crops import CropSpec, make_crop_view
from probebench.errors import UserError


@pytest.fixture
def data(tmp_path) -> Path:
    return tiny_data.make(tmp_path / "data")


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def read_tiny_coco(data: Path):
    return read_coco(data / "coco", "coco", {"test": "test.json"})


# -- nothing outside the dataset's folder ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["/etc/hostname", "../../outside.jpg", "a/../../../x.jpg", "C:\\x\\y.jpg"])
def test_a_coco_file_name_that_leaves_the_folder_is_refused(data, name):
    (data.parent / "outside.jpg").write_bytes((data / "coco" / "im0.jpg").read_bytes())
    tiny_data.edit_coco(data, lambda d: d["images"][0].update(file_name=name))
    with pytest.raises(UserError, match="leaves the dataset's folder") as exc:
        read_tiny_coco(data)
    assert "images[0]" in one_line(exc) and "test.json" in str(exc.value)


def test_an_absolute_annotator_path_is_not_read_and_the_file_name_finds_the_image(data):
    tiny_data.edit_coco(data, lambda d: d["images"][0].update(path="/datasets/server/im0.jpg"))
    ds = read_tiny_coco(data)
    assert ds.samples[0].path == "im0.jpg"


def test_names_from_lists_and_configs_stay_inside(data):
    sets = data / "v" / "VOC2007"
    (sets / "ImageSets" / "Main").mkdir(parents=True)
    for sub in ("JPEGImages", "Annotations"):
        os.symlink(data / "voc" / "test" / sub, sets / sub)  # links under the root are fine
    (sets / "ImageSets" / "Main" / "test.txt").write_text("im0\n../../../../etc/passwd\n")
    with pytest.raises(UserError, match="leaves the dataset's folder"):
        read_voc(data / "v", "v", ("test",))
    (sets / "ImageSets" / "Main" / "test.txt").write_text("im0\nim1\nmissing_id\n")
    with pytest.raises(UserError, match="1 id.* with no annotation file, such as missing_id.xml") as exc:
        read_voc(data / "v", "v", ("test",))
    one_line(exc)
    (sets / "ImageSets" / "Main" / "test.txt").write_text("im0\nim1\nim0\nim0\n")
    with pytest.raises(UserError, match="lists id 'im0' 3 times") as exc:
        read_voc(data / "v", "v", ("test",))  # it would be scored three times
    one_line(exc)
    (sets / "ImageSets" / "Main" / "test.txt").unlink()
    os.mkfifo(sets / "ImageSets" / "Main" / "test.txt")
    with pytest.raises(UserError, match="test.txt is not a regular file"):
        read_voc(data / "v", "v", ("test",))  # not skipped as absent, nor read for ever
    (sets / "ImageSets" / "Main" / "test.txt").unlink()
    (sets / "ImageSets" / "Main" / "test.txt").write_text("im0\nim1\n")
    assert len(read_voc(data / "v", "v", ("test",))) == 2
    with pytest.raises(UserError, match="leaves the dataset's folder"):
        read_mask_folder(data / "masks", "m", images="../sal/images")
    with pytest.raises(UserError, match="leaves the dataset's folder"):
        read_saliency(data / "sal", "s", "/tmp", "masks")
    with pytest.raises(UserError, match="leaves the dataset's folder"):
        read_coco(data / "coco", "c", {"test": "../coco/test.json"})


# -- COCO: broken files are one line; quirks are read -----------------------------------------------------
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.clear() or d.update(images=5), "'images' is a int, not a list"),
        (lambda d: d.update(categories={"1": "person"}), "'categories' is a dict"),
        (lambda d: d["annotations"][0].pop("image_id"), r"annotations\[0\] has no 'image_id'"),
        (lambda d: d["images"][0].pop("id"), r"images\[0\] has no 'id'"),
        (lambda d: d["images"][1].update(id=1), r"images\[1\] has id 1, as images\[0\] does"),
        (
            lambda d: d["images"][1].update(file_name="im0.jpg"),
            r"images\[1\] names image file im0.jpg, as images",
        ),
        (lambda d: d["annotations"][0].update(bbox="1,2,3,4"), r"annotations\[0\].bbox is '1,2,3,4'"),
        (lambda d: d["annotations"][0].pop("bbox"), r"annotations\[0\].bbox is None"),
        (lambda d: d["annotations"][0]["keypoints"].pop(), "not a list of x, y, visibility triples"),
        (lambda d: d["annotations"][0].update(keypoints=[0] * 12), "holds 4 keypoints; its category names 3"),
        (lambda d: d["annotations"][0].update(keypoints=[None] * 9), "holds None, not a number"),
        (lambda d: d["annotations"][0]["keypoints"].__setitem__(2, 7), "has visibility 7"),
        (lambda d: d["annotations"][0]["keypoints"].__setitem__(2, 1.9), "has visibility 1.9"),
        (lambda d: d["annotations"][0].update(iscrowd="yes"), "iscrowd is 'yes', not 0 or 1"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2]]), "not 3 or more x, y pairs"),
        (
            lambda d: d["annotations"][0].update(segmentation={"counts": "x", "size": [10, 10]}),
            "is an RLE of 10 x 10 on a 200 x 160 image",
        ),
        (lambda d: [a.update(image_id=str(a["image_id"])) for a in d["annotations"]], "name no image"),
        (lambda d: d["categories"].append({"id": 1, "name": "dog"}), "has id 1 twice"),
    ],
)
def test_a_coco_file_of_the_wrong_shape_is_one_line_naming_the_entry(data, change, expected):
    tiny_data.edit_coco(data, change)
    with pytest.raises(UserError, match=expected) as exc:
        read_tiny_coco(data)
    assert "test.json" in one_line(exc)


def test_coco_quirks_are_read(data):
    def quirks(d):
        d["images"][0]["width"] = "200"  # a string size
        d["images"][1]["width"] = d["images"][1]["height"] = 0  # no size: the image's
        d["annotations"][0]["iscrowd"] = False  # COCO Annotator's boolean
        d["annotations"][1]["keypoints"][2] = "2"  # a string visibility
        d["annotations"].append({"id": 99, "image_id": 77, "category_id": 1, "bbox": [0, 0, 1, 1]})

    tiny_data.edit_coco(data, quirks)
    ds = read_tiny_coco(data)
    assert [s.ann["size"] for s in ds.samples] == [[200, 160]] * 4
    assert ds.warnings == ["test.json: 1 annotation(s) name an image the file does not list"]


def test_an_image_without_annotations_is_kept_as_all_background(data):
    tiny_data.edit_coco(
        data, lambda d: d.update(annotations=[a for a in d["annotations"] if a["image_id"] != 1])
    )
    ds = read_tiny_coco(data)
    labels = label_map(ds, ds.samples[0], "mask")
    assert labels.shape == (160, 200) and not labels.any()
    assert label_map(ds, ds.samples[1], "mask").any()


def test_keypoints_are_named_per_category(data):
    def two(d):
        d["categories"] = [
            {"id": 1, "name": "person", "keypoints": ["a", "b", "c"]},
            {"id": 2, "name": "dog", "keypoints": ["tail", "a"]},
        ]
        d["categories"].reverse()  # the dog listed first must not name the person's keypoints
        d["annotations"][0]["category_id"] = 2
        d["annotations"][0]["keypoints"] = [50, 40, 2, 60, 80, 2]

    tiny_data.edit_coco(data, two)
    ds = read_tiny_coco(data)
    assert ds.extra["keypoint_names"] == ["a", "b", "c", "tail"]
    first = ds.samples[0].ann["keypoints"]
    assert [kp[3] for kp in first[:2]] == [3, 0], "the dog's tail is 'tail', its second keypoint is 'a'"
    view = make_crop_view(ds, CropSpec(source="keypoints", keypoints=["b", "c"], min_visibility=2))
    assert view.classes == ["b", "c"] and len(view.samples) == 14  # the dog has neither


def test_an_annotated_size_that_differs_from_the_image_is_refused(data):
    tiny_data.edit_coco(data, lambda d: d["images"][0].update(width=100, height=80))
    with pytest.raises(UserError, match=r"im0.jpg is 200 x 160, its annotation says 100 x 80") as exc:
        read_tiny_coco(data)
    one_line(exc)
    xml = data / "voc" / "test" / "Annotations" / "im0.xml"
    xml.write_text(xml.read_text().replace("<width>128</width>", "<width>64</width>"))
    with pytest.raises(UserError, match=r"im0.jpg is 128 x 96, its annotation says 64 x 96"):
        read_voc(data / "voc", "voc", ("train", "test"))
    xml.write_text(xml.read_text().replace("<width>64</width>", "<width>0</width>"))
    assert read_voc(data / "voc", "voc", ("train", "test")).samples[3].ann["size"] == [128, 96]


def test_label_maps_and_masks_of_another_size_are_refused(data):
    lab = data / "masks" / "labels" / "0001.png"
    Image.open(lab).resize((48, 32), Image.NEAREST).save(lab)
    with pytest.raises(
        UserError, match=r"label map labels/0001.png is 48 x 32, its image images/0001.jpg is"
    ):
        read_mask_folder(data / "masks", "m", test_fraction=0.5)
    mask = data / "sal" / "masks" / "0002.png"
    Image.open(mask).resize((48, 32)).save(mask)
    with pytest.raises(UserError, match=r"saliency mask masks/0002.png is 48 x 32"):
        read_saliency(data / "sal", "s", "images", "masks")


# -- what cannot be a box or a keypoint is dropped and counted ----------------------------------------------
def test_voc_boxes_outside_inverted_or_not_finite_are_dropped_and_counted(data):
    ann = data / "voc" / "test" / "Annotations"
    for name, box in (
        ("im0", (5000, 5000, 6000, 6000)),
        ("im1", ("nan", "inf", "nan", "inf")),
        ("im2", (60, 10, 20, 50)),
    ):
        text = (ann / f"{name}.xml").read_text()
        start, end = text.index("<bndbox>"), text.index("</bndbox>")
        coords = "".join(
            f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
        )
        (ann / f"{name}.xml").write_text(text[:start] + f"<bndbox>{coords}" + text[end:])
    ds = read_voc(data / "voc", "voc", ("train", "test"))
    test = [s for s in ds.samples if s.split == "test"]
    assert all(s.ann["boxes"] == [] and s.label == -1 for s in test)
    assert all(len(s.ann["difficult"]) == len(s.ann["boxes"]) for s in ds.samples), "flags stay aligned"
    (warning,) = ds.warnings
    for said in ("1 box(es) inverted", "1 box(es) not finite", "1 box(es) outside their image"):
        assert said in warning
    json.dumps([s.ann for s in ds.samples], allow_nan=False)  # no NaN or Infinity left to write


def test_boxes_partly_outside_are_clipped_as_voc_does(data):
    xml = data / "voc" / "test" / "Annotations" / "im0.xml"
    text = (
        xml.read_text()
        .replace("<xmin>11</xmin>", "<xmin>-20</xmin>")
        .replace("<xmax>80</xmax>", "<xmax>500</xmax>")
    )
    xml.write_text(text)
    (sample,) = [s for s in read_voc(data / "voc", "voc", ("test",)).samples if s.path.endswith("im0.jpg")]
    assert sample.ann["boxes"][0][:4] == [0.0, 12.0, 128.0, 70.0]


def test_keypoints_outside_the_image_are_dropped_and_counted(data):
    def move(d):
        for a in d["annotations"][:2]:
            a["keypoints"] = [v + (5000 if i % 3 == 1 else 0) for i, v in enumerate(a["keypoints"])]

    tiny_data.edit_coco(data, move)
    ds = read_tiny_coco(data)
    assert len(ds.samples[0].ann["keypoints"]) == 0 and len(ds.samples[1].ann["keypoints"]) == 6
    assert "6 keypoint(s) outside their image (first in im0.jpg)" in ds.warnings[0]
    view = make_crop_view(ds, CropSpec(source="keypoints", keypoints=["a", "b", "c"], min_visibility=2))
    assert {tuple(s.ann["crop"]) for s in view.samples if s.path == "im0.jpg"} == set()


def test_a_coco_instance_with_a_broken_box_goes_with_its_keypoints_and_polygon(data):
    tiny_data.edit_coco(data, lambda d: d["annotations"][0].update(bbox=[10, 10, -5, 20]))
    first = read_tiny_coco(data).samples[0].ann
    assert len(first["boxes"]) == len(first["segmentation"]) == len(first["iscrowd"]) == 1
    assert {kp[4] for kp in first["keypoints"]} == {0}, "the other person's keypoints renumbered"


# -- keypoint ids ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("keypoints", "expected"),
    [
        ([99, "a", "c"], "has no keypoint id 99: its ids are 1 to 3"),
        (["a", "a", "c"], "a keypoint is named twice"),
        ([1, "a", "c"], "ask for keypoint 'a' twice"),
        ([0, 1], "id 0 is not a keypoint; ids count from 1"),
        (["tail"], "has no keypoint 'tail' .its keypoints: a, b, c."),
    ],
)
def test_keypoint_ids_out_of_range_or_repeated_are_one_line(data, keypoints, expected):
    ds = read_tiny_coco(data)
    with pytest.raises((UserError, ValueError), match=expected):
        make_crop_view(ds, CropSpec(source="keypoints", keypoints=keypoints))


def test_the_crop_filters_count_what_they_leave_out(data):
    ds = read_tiny_coco(data)
    view = make_crop_view(ds, CropSpec(source="keypoints", keypoints=["a", "b", "c"], min_visibility=2))
    counts = view.describe()["crop_counts"]
    assert counts["keypoints"] == 24 and counts["crops"] == len(view.samples)
    assert counts["crops"] + counts["outside_distance_filter"] + counts["too_few_in_group"] == 24


# -- mask folders and class lists ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "is empty"), (b"\xff\xfe\x00\x01", "not UTF-8"), (b"0 bg\n0 again\n", "gives index 0 twice")],
)
def test_a_bad_class_list_is_one_line(data, content, expected):
    (data / "masks" / "classes.txt").write_bytes(content)
    with pytest.raises(UserError, match=expected) as exc:
        read_mask_folder(data / "masks", "m")
    assert "classes.txt" in one_line(exc)


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda p: p.write_bytes(b"not a png"), "cannot be read as an image"),
        (lambda p: Image.new("RGB", (96, 64), (1, 2, 3)).save(p), "is a RGB image"),
        (
            lambda p: Image.fromarray(np.full((64, 96), 200, np.uint8)).save(p),
            r"holds label\(s\) 200: not one of its 3",
        ),
    ],
)
def test_a_label_map_that_is_not_one_of_the_class_list_is_one_line(data, write, expected):
    write(data / "masks" / "labels" / "0000.png")
    ds = read_mask_folder(data / "masks", "m")
    with pytest.raises(UserError, match=expected) as exc:
        label_map(ds, ds.samples[0], "mask")
    assert "0000.png" in one_line(exc)


def test_sixteen_bit_labels_are_read_whole(data):
    (data / "masks" / "classes.txt").write_text("0 background\n257 top\n258 bottom\n")
    for p in (data / "masks" / "labels").glob("*.png"):
        a = np.array(Image.open(p)).astype(np.uint16)
        a[a > 0] += 256
        Image.fromarray(a).save(p)
    ds = read_mask_folder(data / "masks", "m")
    assert set(np.unique(label_map(ds, ds.samples[0], "mask"))) == {0, 257, 258}


# -- CUB ---------------------------------------------------------------------------------------------------
def test_cub_part_ids_are_the_files_and_named(tmp_path):
    root = SHARED_DATA / "cub10parts"
    if not root.is_dir():
        pytest.skip(f"{root} is absent (real CUB files with part locations)")
    ds = read_cub(root, "cub")
    assert ds.extra["keypoint_names"][10] == "right eye"
    first = ds.samples[0]
    locs = {}
    for line in (root / "parts" / "part_locs.txt").read_text().splitlines():
        img, part, x, y, vis = line.split()
        if img == "1" and vis == "1":
            locs[int(part)] = (float(x), float(y))
    view = make_crop_view(ds, CropSpec(source="keypoints", keypoints=[2, "right eye"]))
    assert view.classes == ["beak", "right eye"]
    for crop in (s for s in view.samples if s.path == first.path):
        part_id = [2, 11][crop.label]  # the file's 1-based ids
        assert tuple(crop.ann["centre"]) == locs[part_id], "a crop sits on the keypoint its id names"


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        ("images.txt", "1 001.A/x.jpg\n1 001.A/y.jpg\n", "id 1 is listed twice"),
        ("images.txt", "1 ../../x.jpg\n", "leaves the dataset's folder"),
        ("images.txt", "1 /etc/x.jpg\n", "leaves the dataset's folder"),
        ("image_class_labels.txt", "1 seven\n", "'seven' is not a whole number"),
        ("image_class_labels.txt", "1 5\n", "has class 5, and classes.txt lists 1"),
        ("train_test_split.txt", "1 2\n", "has split '2'"),
        ("train_test_split.txt", "", "has no line for image 1"),
        ("parts/part_locs.txt", "1 1 4.0 5.0 3\n", "visibility 3"),
        ("parts/part_locs.txt", "1 1 4.0\n", "expected image id, part id, x, y, visible"),
        ("bounding_boxes.txt", "1 2.0 3.0 x 5.0\n", "'x' is not a number"),
    ],
)
def test_a_broken_cub_file_is_one_line_naming_file_and_line(tmp_path, file, content, expected):
    root = tmp_path / "cub"
    (root / "images" / "001.A").mkdir(parents=True)
    (root / "parts").mkdir()
    Image.new("RGB", (30, 20)).save(root / "images" / "001.A" / "x.jpg")
    files = {
        "images.txt": "1 001.A/x.jpg\n",
        "image_class_labels.txt": "1 1\n",
        "train_test_split.txt": "1 0\n",
        "classes.txt": "1 001.A\n",
        "bounding_boxes.txt": "1 2.0 3.0 10.0 5.0\n",
        "parts/part_locs.txt": "1 1 4.0 5.0 1\n",
    }
    for name, text in {**files, file: content}.items():
        (root / name).write_text(text)
    with pytest.raises(UserError, match=expected) as exc:
        read_cub(root)
    one_line(exc)


# -- VOC files that do not parse ---------------------------------------------------------------------------
def _bomb() -> str:
    """A billion-laughs DTD: ten levels of entities, each ten of the one below."""
    levels = ['<!ENTITY l0 "lol">'] + [f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)]
    return f'<?xml version="1.0"?><!DOCTYPE a [{"".join(levels)}]>'


BOX = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
XXE = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/hostname">]>'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_bomb() + "<annotation><object><name>&l9;</name></object></annotation>", "not valid XML"),
        (XXE + "<annotation><object><name>&x;</name></object></annotation>", "not valid XML"),
        ("<annotation><object><name>a</name>", "not valid XML"),
        (
            "<annotation><object><name>a</name><bndbox><xmin>abc</xmin></bndbox></object></annotation>",
            "<bndbox/xmin> is 'abc', not a number",
        ),
        (
            "<annotation><object><name>a</name><bndbox><ymin>1</ymin></bndbox></object></annotation>",
            "<bndbox/xmin> is None",
        ),
        (
            f"<annotation><object><name>a</name><difficult>yes</difficult>{BOX}</object></annotation>",
            "<difficult> is 'yes'",
        ),
        ("<annotation><size><width>wide</width></size></annotation>", "<size/width> is 'wide'"),
    ],
)
def test_a_voc_annotation_that_does_not_parse_is_one_line_naming_it(data, text, expected):
    (data / "voc" / "test" / "Annotations" / "im0.xml").write_text(text)
    with pytest.raises(UserError, match=expected) as exc:
        read_voc(data / "voc", "voc", ("train", "test"))
    assert "im0.xml" in one_line(exc)


def test_a_fifo_named_like_an_annotation_file_never_blocks(data):
    path = data / "coco" / "test.json"
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(UserError, match="is not a regular file"):
        read_tiny_coco(data)
