"""Fuzzing the dataset readers and the task knobs (issue 21): whatever a VOC XML, a COCO json, CUB's text
files, a mask folder or a saliency folder holds, and whatever values a task's knobs take, the result is a
valid dataset or task, or one `UserError` (one line naming the file or knob, exit 2 at the CLI): never another
exception, never a hang (each example runs under hypothesis' deadline). Inputs are structures near the real
formats, with real field names and hostile values mixed in, so the fuzzing reaches past the first check."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from probebench.data.annotations import label_map
from probebench.data.formats.coco import read_coco
from probebench.data.formats.cub import read_cub
from probebench.data.formats.masks import read_mask_folder
from probebench.data.formats.saliency import read_saliency, saliency_foreground
from probebench.data.formats.voc import read_voc
from probebench.errors import UserError
from probebench.tasks.catalog import parse_tasks
from probebench.tasks.probes import get_probe

FUZZ = settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
NUMBERS = st.one_of(
    st.integers(-10, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 7, -1, 0.5, 1e309]),
)
TEXTS = st.one_of(
    st.sampled_from(
        ["", "0", "1", "nan", "inf", "-5", "abc", "1e309", "../x.jpg", "/etc/hostname", "im0.jpg"]
    ),
    st.text(max_size=8),
)
VALUES = st.one_of(NUMBERS, TEXTS, st.none(), st.booleans(), st.lists(NUMBERS, max_size=6))


def outcome(read) -> None:
    """The reader's result is a dataset, or a one-line UserError."""
    try:
        read()
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)


def _image(path: Path, size=(32, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 30, 30)).save(path)


# -- VOC XML -----------------------------------------------------------------------------------------------
def _element(tag: str, value) -> str:
    return f"<{tag}>{value}</{tag}>" if value is not None else ""


voc_objects = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["a", "b", "", "<x>"]),
            "difficult": st.one_of(st.none(), TEXTS),
            "box": st.lists(st.one_of(TEXTS, NUMBERS.map(str)), min_size=0, max_size=4),
        }
    ),
    max_size=3,
)


@FUZZ
@given(
    width=st.one_of(st.none(), TEXTS, NUMBERS.map(str)),
    height=st.one_of(st.none(), TEXTS, NUMBERS.map(str)),
    objects=voc_objects,
    raw=st.one_of(st.none(), st.text(max_size=60)),
)
def test_any_voc_annotation_reads_or_is_one_line(width, height, objects, raw):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "voc"
        _image(root / "test" / "JPEGImages" / "im0.jpg")
        (root / "test" / "Annotations").mkdir(parents=True)
        body = "".join(
            "<object>"
            + _element("name", o["name"].replace("<", "&lt;"))
            + _element("difficult", o["difficult"])
            + "<bndbox>"
            + "".join(
                _element(k, v) for k, v in zip(("xmin", "ymin", "xmax", "ymax"), o["box"], strict=False)
            )
            + "</bndbox></object>"
            for o in objects
        )
        size = f"<size>{_element('width', width)}{_element('height', height)}</size>"
        text = (
            raw if raw is not None else f"<annotation><filename>im0.jpg</filename>{size}{body}</annotation>"
        )
        (root / "test" / "Annotations" / "im0.xml").write_text(text)
        outcome(lambda: read_voc(root, "voc", ("test",)))


# -- COCO json ---------------------------------------------------------------------------------------------
coco_images = st.lists(
    st.dictionaries(
        st.sampled_from(["id", "file_name", "width", "height", "path"]),
        st.one_of(VALUES, st.sampled_from(["im0.jpg", 1, 2, 32, 24])),
    ),
    max_size=3,
)
coco_annotations = st.lists(
    st.dictionaries(
        st.sampled_from(["id", "image_id", "category_id", "bbox", "keypoints", "segmentation", "iscrowd"]),
        st.one_of(
            VALUES,
            st.just(1),
            st.lists(st.one_of(NUMBERS, st.none()), min_size=3, max_size=9),
            st.just({"counts": "xx", "size": [24, 32]}),
        ),
    ),
    max_size=4,
)
coco_categories = st.lists(
    st.dictionaries(
        st.sampled_from(["id", "name", "keypoints"]),
        st.one_of(VALUES, st.just(1), st.just("person"), st.lists(st.sampled_from(["a", "b"]), max_size=3)),
    ),
    max_size=2,
)


@FUZZ
@given(
    images=coco_images,
    annotations=coco_annotations,
    categories=coco_categories,
    top=st.sampled_from(["object", "list", "raw"]),
    raw=st.text(max_size=40),
)
def test_any_coco_json_reads_or_is_one_line(images, annotations, categories, top, raw):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "coco"
        _image(root / "im0.jpg")
        doc = {"images": images, "annotations": annotations, "categories": categories}
        text = {"object": json.dumps(doc), "list": json.dumps([doc]), "raw": raw}[top]
        (root / "test.json").write_text(text)
        outcome(lambda: read_coco(root, "coco", {"test": "test.json"}))


# -- CUB's text files --------------------------------------------------------------------------------------
cub_lines = st.lists(st.lists(st.one_of(TEXTS, NUMBERS.map(str)), max_size=6).map(" ".join), max_size=3)


@FUZZ
@given(
    which=st.sampled_from(
        [
            "images.txt",
            "image_class_labels.txt",
            "train_test_split.txt",
            "classes.txt",
            "bounding_boxes.txt",
            "parts/part_locs.txt",
            "parts/parts.txt",
        ]  # fmt: skip
    ),
    lines=cub_lines,
)
def test_any_cub_file_reads_or_is_one_line(which, lines):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cub"
        _image(root / "images" / "001.A" / "x.jpg")
        files = {
            "images.txt": "1 001.A/x.jpg",
            "image_class_labels.txt": "1 1",
            "train_test_split.txt": "1 0",
            "classes.txt": "1 001.A",
            "bounding_boxes.txt": "1 2.0 3.0 10.0 5.0",
            "parts/part_locs.txt": "1 1 4.0 5.0 1",
            "parts/parts.txt": "1 back",
        }
        files[which] = "\n".join(lines)
        (root / "parts").mkdir()
        for name, text in files.items():
            (root / name).write_text(text)
        outcome(lambda: read_cub(root))


# -- mask folders and saliency sets ------------------------------------------------------------------------
def _picture(kind: str, size: tuple[int, int], value: int) -> Image.Image:
    w, h = size
    if kind == "rgb":
        return Image.new("RGB", size, (value % 256, 0, 0))
    if kind == "16bit":
        return Image.fromarray(np.full((h, w), value % 65536, np.uint16))
    if kind == "palette":
        return Image.new("P", size, value % 256)
    return Image.fromarray(np.full((h, w), value % 256, np.uint8))


label_files = st.tuples(
    st.sampled_from(["grey", "rgb", "16bit", "palette", "junk", "empty"]),
    st.sampled_from([(32, 24), (16, 12), (24, 32)]),
    st.integers(0, 70000),
)


@FUZZ
@given(
    classes=st.one_of(
        st.binary(max_size=30), st.sampled_from([b"0 bg\n1 a\n", b"bg\na\nb\n", b"0 bg\n0 a\n"])
    ),
    label=label_files,
    ignore=st.sampled_from([255, 0, 1000]),
)
def test_any_mask_folder_reads_or_is_one_line(classes, label, ignore):
    kind, size, value = label
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "masks"
        _image(root / "images" / "0.jpg")
        (root / "labels").mkdir()
        (root / "classes.txt").write_bytes(classes)
        if kind in ("junk", "empty"):
            (root / "labels" / "0.png").write_bytes(b"not a png" if kind == "junk" else b"")
        else:
            _picture(kind, size, value).save(root / "labels" / "0.png")

        def read():
            ds = read_mask_folder(root, "m")
            ds.extra["ignore_index"] = ignore
            for s in ds.samples:
                label_map(ds, s, "mask")
                label_map(ds, s, "object_mask")

        outcome(read)


@FUZZ
@given(mask=label_files)
def test_any_saliency_set_reads_or_is_one_line(mask):
    kind, size, value = mask
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sal"
        _image(root / "images" / "0.jpg")
        (root / "masks").mkdir()
        if kind in ("junk", "empty"):
            (root / "masks" / "0.png").write_bytes(b"not a png" if kind == "junk" else b"")
        else:
            _picture(kind, size, value).save(root / "masks" / "0.png")

        def read():
            ds = read_saliency(root, "s", "images", "masks")
            for s in ds.samples:
                saliency_foreground(ds.root, s)

        outcome(read)


# -- task knobs --------------------------------------------------------------------------------------------
PROBES = ["knn", "linear", "attentive", "part_retrieval", "part_segmentation", "discovery"]


@st.composite
def knob_sets(draw):
    probe = draw(st.sampled_from(PROBES))
    names = sorted(get_probe(probe).knobs())
    knobs = draw(
        st.dictionaries(
            st.sampled_from(names),
            st.one_of(VALUES, st.lists(st.one_of(NUMBERS, TEXTS, st.booleans()), max_size=4)),
            max_size=4,
        )
    )
    return probe, knobs


@FUZZ
@given(case=knob_sets())
def test_any_knob_values_parse_or_are_one_line_per_knob(case):
    probe, knobs = case
    text = json.dumps({"t": {"probe": probe, "dataset": "embedded", "knobs": knobs}})
    try:
        (task,) = parse_tasks(text, "fuzz.yaml").values()
    except UserError as exc:
        lines = str(exc).splitlines()
        assert lines and all(line.startswith("fuzz.yaml: task 't'") for line in lines), str(exc)
        return
    assert task.needs is not None and task.primary.name  # a task that parsed can say what it reads
