"""Semantic-correspondence benchmarks: SPair-71k, PF-PASCAL and PF-WILLOW, each read as images of categories
with named keypoints plus the benchmark's own pair lists (`extra["pairs"][split]`: (source row, target row,
the pair's keypoint ids) per listed pair; the probe's `pairs: listed`).

Layouts, as the datasets' releases (and the loaders that reproduce their published numbers, e.g.
juhongm999/dhpf `data/spair.py`, `pfpascal.py`, `pfwillow.py`) lay them out:

- SPair-71k (Min et al. 2019): `JPEGImages/<category>/<image>.jpg`, `Layout/large/{trn,val,test}.txt` (one
  pair per line, `<id>-<source>-<target>:<category>`), `PairAnnotation/<split>/<line>.json` with
  `src_imname`, `trg_imname`, `category`, `src_kps` and `trg_kps` (lists of [x, y], aligned), `kps_ids` (the
  category's keypoint ids of those points), `src_bndbox` and `trg_bndbox` ([x1, y1, x2, y2]); optionally
  `src_imsize`/`trg_imsize` ([width, height, channels]). PCK by the target's box.
- PF-PASCAL (Ham et al. 2018): `JPEGImages/<image>.jpg`, `Annotations/<class>/<image>.mat` (MATLAB files
  with `kps`, K x 2 with NaN rows for keypoints the image lacks, and `bbox`), `{trn,val,test}_pairs.csv`
  (`source_image, target_image, class[, flip]`, class 1-based over the 20 VOC classes; images named by a path
  whose last part is the file). PCK by the image.
- PF-WILLOW (Ham et al. 2016): `test_pairs.csv` with `imageA, imageB` (paths whose first part, the release's
  folder, is dropped: `<category>/<image>.png`), then the 10 x and 10 y coordinates of A's keypoints and of
  B's; every keypoint is visible; the category is the image's folder. PCK by the box of the keypoints.

Images are one sample per (split, image); a keypoint is [x, y, 1, part] with part the category's keypoint id
offset into one list of names (`"<category> <id>"`). A point given twice for one image (by two pairs) must be
the same point. Keypoints and boxes are then checked against their images (`probebench.data.checks`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from probebench.data.base import ImageDataset, Sample, confined, read_annotation_file
from probebench.data.checks import check_annotations
from probebench.errors import UserError

SPAIR_SPLITS = {"trn": "train", "val": "val", "test": "test"}
PF_PASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
MAX_KEYPOINTS = 1000  # per category; SPair's most is 30, PF's 20


class _Builder:
    """Samples of (split, image) with their keypoints by id, boxes and sizes, and each split's pairs."""

    def __init__(self, root: Path, what: str) -> None:
        self.root, self.what = root, what
        self.rows: dict[tuple[str, str], int] = {}
        self.samples: list[dict] = []
        self.categories: dict[str, int] = {}
        self.pairs: dict[str, list] = {}

    def image(self, split: str, category: str, path: str, where: str) -> int:
        if not (self.root / path).is_file():
            raise UserError(f"{where}: image {path} is not in {self.root}; fix the pair or add the image")
        key = (split, path)
        if key not in self.rows:
            self.rows[key] = len(self.samples)
            self.samples.append({"path": path, "split": split, "category": category, "points": {}})
        row = self.rows[key]
        if self.samples[row]["category"] != category:
            raise UserError(f"{where}: image {path} is named under two categories; fix the file")
        self.categories.setdefault(category, len(self.categories))
        return row

    def point(self, row: int, kp: int, xy, where: str) -> None:
        if not 0 <= kp < MAX_KEYPOINTS:
            raise UserError(
                f"{where}: keypoint id {kp} is not between 0 and {MAX_KEYPOINTS - 1}; fix the file"
            )
        x, y = (_number(v, where) for v in xy)
        seen = self.samples[row]["points"].setdefault(kp, (x, y))
        if abs(seen[0] - x) > 0.5 or abs(seen[1] - y) > 0.5:
            raise UserError(
                f"{where}: keypoint {kp} of {self.samples[row]['path']} is at ({x:g}, {y:g}) here and at "
                f"({seen[0]:g}, {seen[1]:g}) in another pair; fix the annotation"
            )

    def box(self, row: int, box, where: str) -> None:
        if not isinstance(box, list) or len(box) != 4:
            raise UserError(f"{where}: a box is [x1, y1, x2, y2], not {str(box)[:40]}; fix the file")
        values = [_number(v, where) for v in box]
        seen = self.samples[row].setdefault("box", values)
        if max(abs(a - b) for a, b in zip(seen, values, strict=True)) > 0.5:
            raise UserError(
                f"{where}: {self.samples[row]['path']} has two different boxes; fix the annotation"
            )

    def dataset(self, name: str, description: str, threshold: str) -> ImageDataset:
        classes = sorted(self.categories)
        ids = {
            c: sorted({k for s in self.samples if s["category"] == c for k in s["points"]}) for c in classes
        }
        offset, names = {}, []
        for c in classes:
            offset[c] = len(names)
            names += [f"{c} {k}" for k in range(max(ids[c], default=-1) + 1)]
        samples = []
        for s in self.samples:
            label = classes.index(s["category"])
            ann: dict = {
                "keypoints": [
                    [x, y, 1, offset[s["category"]] + k] for k, (x, y) in sorted(s["points"].items())
                ]
            }
            if "box" in s:
                ann["boxes"] = [[*s["box"], label]]
            samples.append(Sample(s["path"], label, s["split"], ann))
        pairs = {
            split: [
                [src, trg, [offset[self.samples[src]["category"]] + k for k in kps]]
                for src, trg, kps in listed
            ]
            for split, listed in self.pairs.items()
        }
        extra = {"keypoint_names": names, "pairs": pairs, "pck_threshold": threshold}
        ds = ImageDataset(name, self.root, classes, samples, description=description, extra=extra)
        return check_annotations(ds)


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{where}: {str(value)[:40]!r} is not a finite number; fix the file")
    return float(value)


def _json(path: Path, what: str) -> dict:
    try:
        data = json.loads(read_annotation_file(path, what, 2**24))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{what} {path} is not valid JSON ({str(exc)[:60]}); fix or re-download it") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} is not a JSON object; fix or re-download it")
    return data


def read_spair(
    root: Path, name: str = "spair71k", splits: tuple[str, ...] = tuple(SPAIR_SPLITS)
) -> ImageDataset:
    """SPair-71k at `root` (the SPair-71k folder or the folder holding it); `splits` of trn, val, test (read
    as train, val, test). Only the splits asked are read: the test split is 12,234 pair files."""
    if (root / "SPair-71k").is_dir():
        root = root / "SPair-71k"
    bad = [s for s in splits if s not in SPAIR_SPLITS]
    if bad:
        raise UserError(f"SPair-71k split {bad[0]!r}: its splits are trn, val and test")
    build = _Builder(root, "SPair-71k")
    for split in splits:
        layout = root / "Layout" / "large" / f"{split}.txt"
        if not layout.is_file():
            raise UserError(f"{root} is not a SPair-71k folder: {layout} is missing")
        listed = build.pairs.setdefault(SPAIR_SPLITS[split], [])
        for n, line in enumerate(read_annotation_file(layout, "SPair-71k layout").decode().splitlines(), 1):
            if not line.strip():
                continue
            where = f"SPair-71k layout {layout}, line {n}"
            file = confined(root / "PairAnnotation" / split, f"{line.strip()}.json", where)
            if not file.is_file():
                raise UserError(f"{where}: pair file {file} is missing; re-download SPair-71k")
            listed.append(_spair_pair(build, SPAIR_SPLITS[split], file))
    return build.dataset(name, f"SPair-71k at {root} ({', '.join(splits)})", "box")


def _spair_pair(build: _Builder, split: str, file: Path) -> list:
    pair = _json(file, "SPair-71k pair file")
    where = f"SPair-71k pair file {file}"
    missing = [
        k for k in ("src_imname", "trg_imname", "category", "src_kps", "trg_kps", "kps_ids") if k not in pair
    ]
    if missing:
        raise UserError(f"{where} has no {missing[0]!r}; re-download SPair-71k")
    category = str(pair["category"])
    kps = [pair["src_kps"], pair["trg_kps"], pair["kps_ids"]]
    if not all(isinstance(v, list) for v in kps) or len({len(v) for v in kps}) != 1:
        raise UserError(f"{where}: src_kps, trg_kps and kps_ids are not lists of one length; fix the file")
    rows = []
    for side in ("src", "trg"):
        path = confined(build.root / "JPEGImages" / category, str(pair[f"{side}_imname"]), where)
        row = build.image(split, category, path.relative_to(build.root).as_posix(), where)
        for kp, xy in zip(pair["kps_ids"], pair[f"{side}_kps"], strict=True):
            if not isinstance(xy, list) or len(xy) != 2:
                raise UserError(f"{where}: a keypoint is [x, y], not {str(xy)[:40]}; fix the file")
            build.point(row, _int_id(kp, where), xy, where)
        if f"{side}_bndbox" in pair:
            build.box(row, pair[f"{side}_bndbox"], where)
        rows.append(row)
    return [rows[0], rows[1], [_int_id(k, where) for k in pair["kps_ids"]]]


def _int_id(value, where: str) -> int:
    """A keypoint id or class number: an int, or text or a float holding one (SPair writes ids as text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise UserError(f"{where}: {str(value)[:20]!r} is not a whole number; fix the file")


def _csv_rows(path: Path, what: str) -> list[list[str]]:
    text = read_annotation_file(path, what, 2**26)
    try:
        return [row for row in csv.reader(io.StringIO(text.decode("utf-8-sig"))) if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(
            f"{what} {path} is not a CSV text file ({str(exc)[:60]}); fix or re-download it"
        ) from None


def read_pf_pascal(root: Path, name: str = "pf_pascal", splits: tuple[str, ...] = ("test",)) -> ImageDataset:
    """PF-PASCAL at `root` (the PF-PASCAL folder or the folder holding it); `splits` of trn, val, test (read
    as train, val, test). The `flip` column of trn pairs (a training augmentation) is not applied."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    if (root / "PF-PASCAL").is_dir():
        root = root / "PF-PASCAL"
    build = _Builder(root, "PF-PASCAL")
    for split in splits:
        if split not in SPAIR_SPLITS:
            raise UserError(f"PF-PASCAL split {split!r}: its splits are trn, val and test")
        file = root / f"{split}_pairs.csv"
        if not file.is_file():
            raise UserError(f"{root} is not a PF-PASCAL folder: {file} is missing")
        listed = build.pairs.setdefault(SPAIR_SPLITS[split], [])
        for n, row in enumerate(_csv_rows(file, "PF-PASCAL pair list")[1:], 2):
            where = f"PF-PASCAL pair list {file}, line {n}"
            if len(row) < 3:
                raise UserError(f"{where}: expected source_image, target_image, class; fix the file")
            cls = _int_id(row[2], where)
            if not 1 <= cls <= len(PF_PASCAL_CLASSES):
                raise UserError(f"{where}: class {cls} is not 1 to {len(PF_PASCAL_CLASSES)}; fix the file")
            category = PF_PASCAL_CLASSES[cls - 1]
            rows = []
            for image in row[:2]:
                base = image.replace("\\", "/").rsplit("/", 1)[-1]
                path = confined(root / "JPEGImages", base, where).relative_to(root).as_posix()
                r = build.image(SPAIR_SPLITS[split], category, path, where)
                mat = confined(root / "Annotations" / category, Path(base).with_suffix(".mat").name, where)
                kps, box = _pf_mat(mat, loadmat, MatReadError)
                for k, xy in enumerate(kps):
                    if not any(math.isnan(v) for v in xy):
                        build.point(r, k, xy, f"PF-PASCAL annotation {mat}")
                build.box(r, box, f"PF-PASCAL annotation {mat}")
                rows.append(r)
            both = sorted(set(build.samples[rows[0]]["points"]) & set(build.samples[rows[1]]["points"]))
            listed.append([rows[0], rows[1], both])
    return build.dataset(name, f"PF-PASCAL at {root} ({', '.join(splits)})", "image")


def _pf_mat(path: Path, loadmat, mat_error: type[Exception]) -> tuple[list[list[float]], list[float]]:
    """`kps` (K x 2, NaN rows where absent) and `bbox` of a PF-PASCAL annotation file."""
    if not path.is_file():
        raise UserError(f"PF-PASCAL annotation {path} is missing; re-download PF-PASCAL")
    try:
        mat = loadmat(io.BytesIO(read_annotation_file(path, "PF-PASCAL annotation", 2**24)))
        kps, box = mat["kps"], mat["bbox"]
    except (ValueError, KeyError, TypeError, NotImplementedError, OSError, mat_error) as exc:
        raise UserError(
            f"PF-PASCAL annotation {path} cannot be read ({str(exc)[:60]}); re-download it"
        ) from None
    if getattr(kps, "ndim", 0) != 2 or kps.shape[1] != 2 or box.size != 4:
        raise UserError(
            f"PF-PASCAL annotation {path}: kps is not K x 2 or bbox not 4 numbers; re-download it"
        )
    return [[float(x), float(y)] for x, y in kps], [float(v) for v in box.ravel()]


def read_pf_willow(root: Path, name: str = "pf_willow") -> ImageDataset:
    """PF-WILLOW at `root` (the PF-WILLOW folder or the folder holding it): its one test split."""
    if (root / "PF-WILLOW").is_dir():
        root = root / "PF-WILLOW"
    file = root / "test_pairs.csv"
    if not file.is_file():
        raise UserError(f"{root} is not a PF-WILLOW folder: {file} is missing")
    build = _Builder(root, "PF-WILLOW")
    listed = build.pairs.setdefault("test", [])
    for n, row in enumerate(_csv_rows(file, "PF-WILLOW pair list")[1:], 2):
        where = f"PF-WILLOW pair list {file}, line {n}"
        if len(row) != 42:
            raise UserError(f"{where}: expected imageA, imageB and 40 coordinates, got {len(row)} fields")
        try:
            coords = [float(v) for v in row[2:]]
        except ValueError:
            raise UserError(f"{where}: a coordinate is not a number; fix the file") from None
        rows = []
        for side, image in enumerate(row[:2]):
            parts = image.replace("\\", "/").split("/")
            rel = "/".join(parts[1:]) if len(parts) > 2 else "/".join(parts)
            path = confined(root, rel, where).relative_to(root).as_posix()
            r = build.image("test", Path(rel).parent.as_posix(), path, where)
            xs, ys = coords[side * 20 : side * 20 + 10], coords[side * 20 + 10 : side * 20 + 20]
            for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
                build.point(r, k, [x, y], where)
            rows.append(r)
        listed.append([rows[0], rows[1], list(range(10))])
    return build.dataset(name, f"PF-WILLOW at {root}", "keypoints")
