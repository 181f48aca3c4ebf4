"""CUB-200-2011: `images.txt`, `image_class_labels.txt`, `train_test_split.txt`, `classes.txt` (1-based ids,
space separated, split 1 = train), and when present `bounding_boxes.txt` and `parts/part_locs.txt`.

Image ids come from `images.txt`: the other files may list more (a subset keeps the full files), never fewer.
A line that does not parse, an image path that leaves the folder, an id without its class or split, a class
or split value the format does not have, and a part visibility other than 0 or 1 are one line naming the file
and line. Boxes and part locations are then checked against the images (`probebench.data.checks`).
"""

from __future__ import annotations

from pathlib import Path

from probebench.data.base import ImageDataset, Sample, confined, read_annotation_file
from probebench.data.checks import check_annotations
from probebench.errors import UserError

REQUIRED = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def _lines(path: Path):
    """(line number, fields) of each non-empty line; a file that is not text is one line naming it."""
    try:
        text = read_annotation_file(path, "CUB file").decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"CUB file {path} is not UTF-8 text") from None
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield n, line.split()


def _bad(path: Path, n: int, what: str) -> UserError:
    return UserError(f"CUB file {path}, line {n}: {what}; fix the file")


def _int(value: str, path: Path, n: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise _bad(path, n, f"{value!r} is not a whole number") from None


def _float(value: str, path: Path, n: int) -> float:
    try:
        return float(value)
    except ValueError:
        raise _bad(path, n, f"{value!r} is not a number") from None


def _table(path: Path, fields: int) -> dict[int, list[str]]:
    """id -> the `fields` values after it (the last one may hold spaces, as class and file names can)."""
    rows = {}
    for n, parts in _lines(path):
        if len(parts) < fields + 1:
            raise _bad(path, n, f"expected an id and {fields} value(s), got {' '.join(parts)!r}")
        key = _int(parts[0], path, n)
        if key in rows:
            raise _bad(path, n, f"id {key} is listed twice")
        rows[key] = [*parts[1:fields], " ".join(parts[fields:])]
    return rows


def read_cub(root: Path, name: str = "cub") -> ImageDataset:
    """`root` is the CUB_200_2011 folder itself or the folder the official tarball was extracted into."""
    if (root / "CUB_200_2011").is_dir():
        root = root / "CUB_200_2011"
    missing = [f for f in REQUIRED if not (root / f).is_file()]
    if missing:
        raise UserError(f"{root} is not a CUB-200-2011 folder: missing {', '.join(missing)}")
    images = _table(root / "images.txt", 1)
    labels = _table(root / "image_class_labels.txt", 1)
    split = _table(root / "train_test_split.txt", 1)
    classes = [v for _, (v,) in sorted(_table(root / "classes.txt", 1).items())]
    boxes = _boxes(root / "bounding_boxes.txt") if (root / "bounding_boxes.txt").is_file() else {}
    parts = _parts(root / "parts" / "part_locs.txt") if (root / "parts" / "part_locs.txt").is_file() else {}
    samples = []
    for img_id, (rel,) in sorted(images.items()):
        for table, file in ((labels, "image_class_labels.txt"), (split, "train_test_split.txt")):
            if img_id not in table:
                raise UserError(f"CUB file {root / file} has no line for image {img_id} of images.txt")
        try:  # the table keeps values, not line numbers: name the image instead
            label = int(labels[img_id][0]) - 1
        except ValueError:
            raise UserError(
                f"CUB file {root / 'image_class_labels.txt'}: image {img_id}: {labels[img_id][0]!r} is not a "
                "whole number; fix the file"
            ) from None
        if not 0 <= label < len(classes):
            raise UserError(
                f"CUB file {root / 'image_class_labels.txt'}: image {img_id} has class {label + 1}, and "
                f"classes.txt lists {len(classes)}"
            )
        if split[img_id][0] not in ("0", "1"):
            raise UserError(
                f"CUB file {root / 'train_test_split.txt'}: image {img_id} has split {split[img_id][0]!r}; "
                "CUB's are 1 (train) and 0 (test)"
            )
        # confined under images/ as the name is written: a prefix first would hide a leading '/'
        path = confined(root / "images", rel, f"CUB file {root / 'images.txt'}").relative_to(root).as_posix()
        ann: dict = {}
        if img_id in boxes:
            x, y, w, h = boxes[img_id]
            ann["boxes"] = [[x, y, x + w, y + h, label]]
        if img_id in parts:
            ann["keypoints"] = parts[img_id]
        samples.append(Sample(path, label, "train" if split[img_id][0] == "1" else "test", ann))
    ds = ImageDataset(name, root, classes, samples, description=f"CUB-200-2011 layout at {root}")
    if (root / "parts" / "parts.txt").is_file():  # part names, so crops may name them ("right eye")
        named = _table(root / "parts" / "parts.txt", 1)
        if sorted(named) != list(range(1, len(named) + 1)):
            raise UserError(f"CUB file {root / 'parts' / 'parts.txt'}: part ids are not 1 to {len(named)}")
        ds.extra["keypoint_names"] = [v for _, (v,) in sorted(named.items())]
    return check_annotations(ds)


def _boxes(path: Path) -> dict[int, list[float]]:
    out = {}
    for n, parts in _lines(path):
        if len(parts) != 5:
            raise _bad(path, n, "expected an id and x, y, width, height")
        out[_int(parts[0], path, n)] = [_float(v, path, n) for v in parts[1:]]
    return out


def _parts(path: Path) -> dict[int, list[list]]:
    """Image id -> [x, y, visibility, part index (the file's 1-based part id - 1)] rows."""
    out: dict[int, list] = {}
    for n, parts in _lines(path):
        if len(parts) != 5:
            raise _bad(path, n, "expected image id, part id, x, y, visible")
        img, part = _int(parts[0], path, n), _int(parts[1], path, n)
        x, y, visible = _float(parts[2], path, n), _float(parts[3], path, n), _int(parts[4], path, n)
        if visible not in (0, 1) or part < 1:
            raise _bad(path, n, f"part {part}, visibility {visible}: parts count from 1; visible is 0 or 1")
        out.setdefault(img, []).append([x, y, visible, part - 1])
    return out
