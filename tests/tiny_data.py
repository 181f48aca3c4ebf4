"""Tiny datasets of every format, written fresh for each test that breaks one of them on purpose: a VOC set,
a COCO keypoints-and-polygons file, a mask folder, a saliency set and an image folder, with a datasets
config and a tasks file binding each to a probe. Images are noise with a red object where the boxes,
keypoints and masks say it is, so every annotation fits its image until a test says otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

TASKS = """\
disc:
  probe: discovery
  dataset: sal
  splits: {train: test, reference: test, test: test}
  knobs:
    methods: [heap, lost, tokencut, centre]
    heap_iterations: 2
    heap_batch: 4
    retrieval_annotation: none
    outputs: false
kp_ret:
  probe: part_retrieval
  dataset: coco
  split: test
  crops: {source: keypoints, keypoints: [a, b, c], min_visibility: 2}
box_ret: {probe: part_retrieval, dataset: voc, split: test, crops: {source: boxes, min_side: 4}}
mask_ret: {probe: part_retrieval, dataset: masks, split: test, crops: {source: masks, min_side: 4}}
seg:
  probe: part_segmentation
  dataset: masks
  knobs: {crop: 64, stride: 64, short: 64, long: 256, iterations: 3, warmup_iters: 1, batch_size: 4}
knn2: {probe: knn, dataset: folder, knobs: {ks: [1, 3]}}
"""


def picture(rng: np.random.Generator, width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    pixels = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = (220, 60, 60)
    return Image.fromarray(pixels)


def voc(root: Path, rng: np.random.Generator) -> None:
    for split in ("train", "test"):
        d = root / "voc" / split
        (d / "JPEGImages").mkdir(parents=True)
        (d / "Annotations").mkdir()
        for i in range(3):
            box = (10 + 5 * i, 12, 80 + 5 * i, 70)
            picture(rng, 128, 96, box).save(d / "JPEGImages" / f"im{i}.jpg")
            name = "thing" if i % 2 else "other"
            (d / "Annotations" / f"im{i}.xml").write_text(
                f"<annotation><filename>im{i}.jpg</filename><size><width>128</width><height>96</height>"
                f"</size><object><name>{name}</name><difficult>0</difficult><truncated>0</truncated><bndbox>"
                f"<xmin>{box[0] + 1}</xmin><ymin>{box[1] + 1}</ymin>"
                f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object></annotation>"
            )


def coco(root: Path, rng: np.random.Generator) -> None:
    """4 images of 200 x 160, two people each with keypoints a, b, c about 60 px apart, and polygons."""
    d = root / "coco"
    d.mkdir()
    images, anns = [], []
    for i in range(4):
        picture(rng, 200, 160, (20, 20, 180, 140)).save(d / f"im{i}.jpg")
        images.append({"id": i + 1, "file_name": f"im{i}.jpg", "width": 200, "height": 160})
        for p in range(2):
            x = 40 + 90 * p
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [x - 10, 20, 60, 100],
                    "area": 6000,
                    "keypoints": [x, 30, 2, x + 40, 70, 2, x, 110, 2],
                    "num_keypoints": 3,
                    "segmentation": [[x - 10, 20, x + 50, 20, x + 50, 120, x - 10, 120]],
                }
            )
    cats = [{"id": 1, "name": "person", "keypoints": ["a", "b", "c"]}]
    (d / "test.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))


def masks(root: Path, rng: np.random.Generator) -> None:
    """6 images of 96 x 64, labels 0 background, 1 top, 2 bottom."""
    d = root / "masks"
    (d / "images").mkdir(parents=True)
    (d / "labels").mkdir()
    (d / "classes.txt").write_text("0 background\n1 top\n2 bottom\n")
    for i in range(6):
        picture(rng, 96, 64, (20, 10, 76, 54)).save(d / "images" / f"{i:04d}.jpg")
        labels = np.zeros((64, 96), np.uint8)
        labels[10:32, 20:76], labels[32:54, 20:76] = 1, 2
        Image.fromarray(labels).save(d / "labels" / f"{i:04d}.png")


def saliency(root: Path, rng: np.random.Generator) -> None:
    d = root / "sal"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    for i in range(6):
        picture(rng, 96, 64, (20, 10, 76, 54)).save(d / "images" / f"{i:04d}.jpg")
        mask = np.zeros((64, 96), np.uint8)
        mask[10:54, 20:76] = 255
        Image.fromarray(mask).save(d / "masks" / f"{i:04d}.png")


def folder(root: Path, rng: np.random.Generator) -> None:
    for split, n in (("train", 3), ("test", 2)):
        for c in ("a", "b"):
            (root / "folder" / split / c).mkdir(parents=True)
            for i in range(n):
                box = (10, 10, 40 if c == "a" else 60, 50)
                picture(rng, 64, 64, box).save(root / "folder" / split / c / f"{i}.png")


def make(root: Path) -> Path:
    """Every tiny dataset under `root`, with `datasets.yaml` and `tasks.yaml` beside them; returns root."""
    rng = np.random.default_rng(0)
    for write in (voc, coco, masks, saliency, folder):
        write(root, rng)
    (root / "datasets.yaml").write_text(
        f"voc: {{format: voc, root: {root}/voc, splits: [train, test]}}\n"
        f"coco: {{format: coco, root: {root}/coco, splits: {{test: test.json}}}}\n"
        f"masks: {{format: mask_folder, root: {root}/masks, test_fraction: 0.5}}\n"
        f"sal: {{format: saliency, root: {root}/sal}}\n"
        f"folder: {{format: image_folder, root: {root}/folder}}\n"
    )
    (root / "tasks.yaml").write_text(TASKS)
    return root


def edit_coco(root: Path, change) -> None:
    """Rewrite the COCO file through `change(data)`."""
    path = root / "coco" / "test.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
