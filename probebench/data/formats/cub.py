"""CUB-200-2011: `images.txt`, `image_class_labels.txt`, `train_test_split.txt`, `classes.txt` (1-based ids,
space separated, split 1 = train), and when present `bounding_boxes.txt` and `parts/part_locs.txt`."""

from __future__ import annotations

from pathlib import Path

from probebench.data.base import ImageDataset, Sample
from probebench.errors import UserError

REQUIRED = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def _table(path: Path) -> dict[int, list[str]]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            first, *rest = line.split()
            rows[int(first)] = rest
    return rows


def read_cub(root: Path, name: str = "cub") -> ImageDataset:
    """`root` is the CUB_200_2011 folder itself or the folder the official tarball was extracted into."""
    if (root / "CUB_200_2011").is_dir():
        root = root / "CUB_200_2011"
    missing = [f for f in REQUIRED if not (root / f).is_file()]
    if missing:
        raise UserError(f"{root} is not a CUB-200-2011 folder: missing {', '.join(missing)}")
    images = _table(root / "images.txt")
    labels = _table(root / "image_class_labels.txt")
    split = _table(root / "train_test_split.txt")
    classes = [" ".join(v) for _, v in sorted(_table(root / "classes.txt").items())]
    boxes = _table(root / "bounding_boxes.txt") if (root / "bounding_boxes.txt").is_file() else {}
    parts: dict[int, list] = {}
    if (root / "parts" / "part_locs.txt").is_file():
        for line in (root / "parts" / "part_locs.txt").read_text().splitlines():
            img, part, x, y, visible = line.split()
            parts.setdefault(int(img), []).append([float(x), float(y), int(visible), int(part)])
    samples = []
    for img_id, (rel,) in sorted(images.items()):
        label = int(labels[img_id][0]) - 1
        ann: dict = {}
        if img_id in boxes:
            x, y, w, h = map(float, boxes[img_id])
            ann["boxes"] = [[x, y, x + w, y + h, label]]
        if img_id in parts:
            ann["keypoints"] = parts[img_id]
        samples.append(Sample(f"images/{rel}", label, "train" if split[img_id][0] == "1" else "test", ann))
    return ImageDataset(name, root, classes, samples, description=f"CUB-200-2011 layout at {root}")
