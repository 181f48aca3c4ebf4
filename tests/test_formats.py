"""Format readers on small fixtures that reproduce real-world quirks: VOC sizes of 0 and Windows paths, COCO
Annotator exports (boolean iscrowd, `path` beside `file_name`, RLE), palette masks and class merging, and the
datasets config with its root resolution order."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from probebench.data.config import build_dataset, parse_datasets, resolve_root
from probebench.data.formats.coco import instance_masks, read_coco
from probebench.data.formats.cub import read_cub
from probebench.data.formats.masks import load_label_map, read_mask_folder
from probebench.data.formats.voc import read_voc
from probebench.errors import UserError

VOC_XML = """<annotation><filename>{name}.jpg</filename><path>C:\\data\\train\\{name}.jpg</path>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
VOC_OBJ = (
    "<object><name>{cls}</name><truncated>{t}</truncated><difficult>{d}</difficult><bndbox><xmin>{x0}"
    "</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
)


def test_voc_sizes_from_images_zero_based_boxes_and_majority_label(tmp_path):
    split = tmp_path / "voc" / "train"
    (split / "JPEGImages").mkdir(parents=True)
    (split / "Annotations").mkdir()
    Image.new("RGB", (50, 40)).save(split / "JPEGImages" / "a.jpg")
    objs = (
        VOC_OBJ.format(cls="pear", t=0, d=1, x0=1, y0=1, x1=50, y1=40)
        + VOC_OBJ.format(cls="fig", t=1, d=0, x0=11, y0=6, x1=20, y1=15) * 2
    )
    (split / "Annotations" / "a.xml").write_text(VOC_XML.format(name="a", w=0, h=0, objects=objs))
    ds = read_voc(tmp_path / "voc", "v")
    (s,) = ds.samples
    assert ds.classes == ["fig", "pear"] and s.split == "train"
    assert s.ann["size"] == [50, 40], "an XML size of 0 is taken from the image"
    assert s.ann["boxes"][0] == [0.0, 0.0, 50.0, 40.0, 1], "1-based inclusive -> 0-based, end exclusive"
    assert s.ann["difficult"] == [1, 0, 0] and s.ann["truncated"] == [0, 1, 1]
    assert s.label == 0, "two fig boxes outvote one (larger) pear box"
    assert (ds.root / s.path).is_file()


def test_coco_annotator_export_and_masks(tmp_path):
    root = tmp_path / "cars"
    (root / "train" / "JPEGImages").mkdir(parents=True)
    Image.new("RGB", (20, 10)).save(root / "train" / "JPEGImages" / "c1.jpg")
    from pycocotools import mask as mask_utils

    block = np.zeros((10, 20), dtype=np.uint8, order="F")
    block[2:5, 10:16] = 1
    rle = mask_utils.encode(block)
    rle["counts"] = rle["counts"].decode()
    data = {
        "images": [
            {
                "id": 7,
                "path": "JPEGImages/c1.jpg",
                "file_name": "c1.jpg",
                "width": 20,
                "height": 10,
                "annotated": True,
                "metadata": {},
            }
        ],
        "categories": [
            {"id": 1, "name": "_background_", "supercategory": ""},
            {"id": 5, "name": "wheel", "supercategory": "car", "color": "#fff"},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 5,
                "bbox": [0, 0, 5, 5],
                "iscrowd": False,
                "isbbox": False,
                "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]],
                "area": 25,
                "color": "#000",
                "metadata": {},
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 5,
                "bbox": [10, 2, 6, 3],
                "iscrowd": True,
                "segmentation": rle,
                "area": 18,
            },
        ],
    }
    (root / "train" / "annotations.json").write_text(json.dumps(data))
    ds = read_coco(root, "cars")
    (s,) = ds.samples
    assert s.path == "train/JPEGImages/c1.jpg" and ds.classes == ["_background_", "wheel"]
    assert s.ann["boxes"] == [[0, 0, 5, 5, 1], [10, 2, 16, 5, 1]] and s.ann["iscrowd"] == [0, 1]
    masks = instance_masks(s, 10, 20)
    assert masks.shape == (2, 10, 20)
    assert masks[1].sum() == 18 and masks[1][2:5, 10:16].all()
    assert masks[0][1:4, 1:4].all() and not masks[0][7:, :].any()


def test_mask_folder_palette_merge_and_ignore(tmp_path):
    root = tmp_path / "m"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.new("RGB", (4, 2)).save(root / "images" / "0001.jpg")
    lab = Image.fromarray(np.array([[0, 1, 2, 3], [255, 2, 2, 1]], dtype=np.uint8), mode="P")
    lab.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [9, 9, 9] * 252)
    lab.save(root / "labels" / "0001.png")
    (root / "classes.txt").write_text("0 null\n1 hair\n2 shirt\n3 coat\n")
    ds = read_mask_folder(root, "m")
    assert ds.classes == ["null", "hair", "shirt", "coat"]
    raw = load_label_map(root, ds.samples[0])
    assert raw.tolist() == [[0, 1, 2, 3], [255, 2, 2, 1]], "palette PNGs are read as indices, not colours"
    merged = load_label_map(root, ds.samples[0], merge={2: 2, 3: 2}, ignore_index=255)
    assert merged.tolist() == [[0, 1, 2, 2], [255, 2, 2, 1]]


def test_mask_folder_splits_by_sub_folder_or_by_a_stable_hash(tmp_path):
    root = tmp_path / "mm"
    for split, stems in (("train", ["a", "b"]), ("val", ["c"])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for stem in stems:
            Image.new("RGB", (4, 2)).save(root / "images" / split / f"{stem}.jpg")
            Image.new("L", (4, 2)).save(root / "labels" / split / f"{stem}.png")
    ds = read_mask_folder(root, "mm")
    assert {s.path: s.split for s in ds.samples} == {
        "images/train/a.jpg": "train",
        "images/train/b.jpg": "train",
        "images/val/c.jpg": "val",
    }
    assert ds.samples[2].ann["mask"] == "labels/val/c.png"

    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    (flat / "labels").mkdir()
    for i in range(200):
        Image.new("RGB", (2, 2)).save(flat / "images" / f"{i:04d}.png")
        Image.new("L", (2, 2)).save(flat / "labels" / f"{i:04d}.png")
    split = {s.path: s.split for s in read_mask_folder(flat, "f", test_fraction=0.2).samples}
    assert 25 <= list(split.values()).count("test") <= 55
    (flat / "images" / "0007.png").unlink()  # removing an image moves no other one
    again = {s.path: s.split for s in read_mask_folder(flat, "f", test_fraction=0.2).samples}
    assert again == {k: v for k, v in split.items() if k != "images/0007.png"}


def test_cub_with_boxes_and_part_locations(tmp_path):
    root = tmp_path / "cub"
    (root / "images" / "001.A").mkdir(parents=True)
    (root / "parts").mkdir()
    Image.new("RGB", (30, 20)).save(root / "images" / "001.A" / "x.jpg")
    (root / "images.txt").write_text("1 001.A/x.jpg\n")
    (root / "image_class_labels.txt").write_text("1 1\n")
    (root / "train_test_split.txt").write_text("1 0\n")
    (root / "classes.txt").write_text("1 001.A\n")
    (root / "bounding_boxes.txt").write_text("1 2.0 3.0 10.0 5.0\n")
    (root / "parts" / "part_locs.txt").write_text("1 1 4.0 5.0 1\n1 2 0.0 0.0 0\n")
    (s,) = read_cub(root).samples
    assert s.split == "test" and s.label == 0
    assert s.ann["boxes"] == [[2.0, 3.0, 12.0, 8.0, 0]]
    assert s.ann["keypoints"] == [[4.0, 5.0, 1, 0], [0.0, 0.0, 0, 1]], "1-based in the file, 0-based here"
    with pytest.raises(UserError, match="missing classes.txt"):
        (root / "classes.txt").unlink()
        read_cub(root)


def test_datasets_config_validation_and_root_order(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="dataset 'x', field 'format'"):
        parse_datasets("x: {format: tfrecord}", "d.yaml")
    with pytest.raises(UserError, match="dataset 'x', field 'colour': unknown field"):
        parse_datasets("x: {format: cub, colour: red}", "d.yaml")
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "b" / "x").mkdir(parents=True)
    (entry,) = parse_datasets("x: {format: image_folder}", "d.yaml").values()
    monkeypatch.setenv("PROBEBENCH_DATA", str(tmp_path / "b"))
    assert (
        resolve_root(entry, tmp_path, data_root=tmp_path / "a") == tmp_path / "a" / "x"
    )  # --data-root first
    assert resolve_root(entry, tmp_path) == tmp_path / "b" / "x"  # then $PROBEBENCH_DATA
    (absolute,) = parse_datasets(f"x: {{format: image_folder, root: {tmp_path / 'a' / 'x'}}}", "d").values()
    assert (
        resolve_root(absolute, tmp_path, data_root=tmp_path / "b") == tmp_path / "a" / "x"
    )  # the entry wins
    (env,) = parse_datasets("x: {format: image_folder, root: '${NOPE_VAR}/x'}", "d").values()
    with pytest.raises(UserError, match="NOPE_VAR"):
        resolve_root(env, tmp_path)
    monkeypatch.delenv("PROBEBENCH_DATA")
    (gone,) = parse_datasets("y: {format: cub}", "d").values()
    with pytest.raises(
        UserError, match="does not exist; set the entry's root, --data-root or PROBEBENCH_DATA"
    ):
        resolve_root(gone, tmp_path)


def test_build_dataset_applies_class_override(tmp_path):
    root = tmp_path / "f"
    for split in ("train", "test"):
        (root / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / split / "cat" / "1.png")
    (entry,) = parse_datasets("f: {format: image_folder, classes: [feline], tasks: [knn]}", "d").values()
    ds = build_dataset(entry, root)
    assert ds.classes == ["feline"] and ds.extra["tasks"] == ["knn"] and len(ds) == 2


def test_one_format_table_serves_user_entries_including_saliency(tmp_path):
    """The named catalogue and datasets.yaml read the same table: a user saliency set works, and a field the
    format does not read is one line naming the format's own fields."""
    from PIL import Image

    for sub in ("imgs", "gt"):
        (tmp_path / "sal" / sub).mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(tmp_path / "sal" / "imgs" / "a.jpg")
    Image.new("L", (8, 6), 255).save(tmp_path / "sal" / "gt" / "a.png")
    (entry,) = parse_datasets(
        f"s: {{format: saliency, root: {tmp_path / 'sal'}, images: imgs, masks: gt}}", "d"
    ).values()
    ds = build_dataset(entry, tmp_path / "sal")
    assert (
        len(ds) == 1
        and ds.samples[0].ann["mask"] == "gt/a.png"
        and ds.extra["mask_classes"][1] == "foreground"
    )
    with pytest.raises(UserError, match=r"masks do\(es\) not apply to format 'voc' \(it reads: splits\)"):
        parse_datasets("v: {format: voc, masks: gt}", "d")
