"""User datasets: one entry in a datasets config registers a dataset, the way one entry registers an encoder.

The CLI reads `--datasets PATH`, else `./datasets.yaml` when present. Roots come from the entry, `--data-root`
or `$PROBEBENCH_DATA`, in that order: an absolute root (after `${VAR}` expansion) is used as is; a relative
root (or none, meaning the entry's name) is joined to `--data-root`, else to `$PROBEBENCH_DATA`, else to the
config file's folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from probebench.data.base import ImageDataset, image_folder
from probebench.errors import UserError
from probebench.registry import NAME_RE, parse_entries

FORMATS = ("image_folder", "cub", "coco", "voc", "mask_folder")


class DatasetEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_RE.pattern)
    format: Literal[FORMATS]  # type: ignore[valid-type]
    root: str | None = None
    splits: dict[str, str] | list[str] | None = None  # coco: split -> json file; voc/folders: split names
    classes: list[str] | None = None  # overrides the format's class list (mask folders)
    merge: dict[int, int] | None = None  # mask folders: fine label -> coarse label
    ignore_index: int = 255
    tasks: list[str] = []
    description: str | None = None


def parse_datasets(text: str, origin: str) -> dict[str, DatasetEntry]:
    return parse_entries(text, origin, DatasetEntry, what="dataset")


def config_path(explicit: Path | None = None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise UserError(f"datasets config {explicit} not found; pass an existing file to --datasets")
        return explicit
    local = Path("datasets.yaml")
    return local if local.is_file() else None


def load_datasets(path: Path | None = None) -> dict[str, DatasetEntry]:
    path = config_path(path)
    return parse_datasets(path.read_text(), str(path)) if path else {}


def resolve_root(entry: DatasetEntry, config_dir: Path, data_root: Path | None = None) -> Path:
    raw = entry.root or entry.name
    unset = [v for v in re.findall(r"\$\{?(\w+)\}?", raw) if v not in os.environ]
    if unset:
        raise UserError(
            f"dataset {entry.name!r}: root {raw!r} uses ${unset[0]}, which is not set; set it or "
            "give the root with --data-root"
        )
    root = Path(os.path.expandvars(raw)).expanduser()
    if not root.is_absolute():
        base = data_root or (
            Path(os.environ["PROBEBENCH_DATA"]) if os.environ.get("PROBEBENCH_DATA") else None
        )
        root = (base or config_dir) / root
    if not root.exists():
        raise UserError(
            f"dataset {entry.name!r}: root {root} does not exist; set the entry's root, --data-root "
            "or PROBEBENCH_DATA"
        )
    return root


def build_dataset(entry: DatasetEntry, root: Path) -> ImageDataset:
    """An entry's dataset through its format's reader."""
    from probebench.data.formats import coco, cub, masks, voc

    if entry.format == "image_folder":
        ds = image_folder(root, entry.name)
    elif entry.format == "cub":
        ds = cub.read_cub(root, entry.name)
    elif entry.format == "coco":
        ds = coco.read_coco(root, entry.name, entry.splits if isinstance(entry.splits, dict) else None)
    elif entry.format == "voc":
        ds = voc.read_voc(
            root,
            entry.name,
            tuple(entry.splits) if isinstance(entry.splits, list) else ("train", "test", "trainval", "val"),
        )
    else:
        ds = masks.read_mask_folder(root, entry.name)
        ds.extra.update({"merge": entry.merge, "ignore_index": entry.ignore_index})
    if entry.classes:
        ds.classes = list(entry.classes)
    ds.description = entry.description or ds.description
    ds.extra["tasks"] = list(entry.tasks)
    return ds
