"""User datasets: one entry in a datasets config registers a dataset, the way one entry registers an encoder.

The CLI reads `--datasets PATH`, else `./datasets.yaml` when present. Roots come from the entry, `--data-root`
or `$PROBEBENCH_DATA`, in that order: an absolute root (after `${VAR}` expansion) is used as is; a relative
root (or none, meaning the entry's name) is joined to the data root (`paths.data_root`), else to the config
file's folder. Formats and the fields each reads come from the one table in `formats/`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from probebench.config import NAME_RE, parse_entries, read_config
from probebench.data.base import ImageDataset
from probebench.data.formats import FORMATS, read_dataset
from probebench.errors import UserError
from probebench.paths import data_root as find_data_root
from probebench.paths import user_file

_OPTIONS = sorted({o for f in FORMATS.values() for o in f.options})


Label = Annotated[StrictInt, Field(ge=0, le=65535)]  # a value a 16-bit label map can hold


class DatasetEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_RE.pattern)
    format: Literal[tuple(FORMATS)]  # type: ignore[valid-type]
    root: str | None = None
    splits: dict[str, str] | list[str] | None = None  # coco: split -> json file; voc and folders: names
    classes: list[str] | None = None  # overrides the format's class list (mask folders)
    merge: dict[Label, Label] | None = None  # mask folders: fine label -> coarse label
    ignore_index: Label = 255  # mask folders: the label no pixel is scored on (mmseg's 255)
    images: str | None = None  # mask folders and saliency sets: the image sub-folder
    labels: str | None = None  # mask folders: the label-map sub-folder
    masks: str | None = None  # saliency sets: the ground-truth sub-folder
    split: str | None = None  # mask folders and saliency sets: the split their images belong to
    test_fraction: float | None = Field(default=None, gt=0, lt=1)  # mask folders: a stable train/test split
    filelist: str | None = None  # coco: keep only the images named in this file
    tasks: list[str] = []
    description: str | None = None

    @model_validator(mode="after")
    def _options_fit_format(self) -> DatasetEntry:
        given = set(self.model_fields_set) & set(_OPTIONS)
        unused = sorted(given - set(FORMATS[self.format].options))
        if unused:
            raise ValueError(
                f"{', '.join(unused)} do(es) not apply to format {self.format!r} (it reads: "
                f"{', '.join(FORMATS[self.format].options) or 'no options'})"
            )
        return self

    def options(self) -> dict:
        return {o: getattr(self, o) for o in FORMATS[self.format].options}


def parse_datasets(text: str, origin: str) -> dict[str, DatasetEntry]:
    return parse_entries(text, origin, DatasetEntry, what="dataset")


def config_path(explicit: Path | None = None) -> Path | None:
    return user_file(explicit, "datasets.yaml", "datasets config", "--datasets")


def load_datasets(path: Path | None = None) -> dict[str, DatasetEntry]:
    path = config_path(path)
    return parse_datasets(read_config(path), str(path)) if path else {}


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
        root = (find_data_root(data_root) or config_dir) / root
    if not root.exists():
        raise UserError(
            f"dataset {entry.name!r}: root {root} does not exist; set the entry's root, --data-root "
            "or PROBEBENCH_DATA"
        )
    return root


def build_dataset(entry: DatasetEntry, root: Path) -> ImageDataset:
    """An entry's dataset through its format's reader."""
    ds = read_dataset(entry.format, root, entry.name, entry.options())
    if entry.classes:
        ds.classes = list(entry.classes)
        if "mask_classes" in ds.extra:
            ds.extra["mask_classes"] = list(entry.classes)
    classes = ds.extra.get("mask_classes") or []
    if entry.merge and classes and (bad := sorted(v for v in entry.merge.values() if v >= len(classes))):
        raise UserError(
            f"dataset {entry.name!r}: merge maps labels to {bad[0]}, outside its {len(classes)} classes "
            f"(0 to {len(classes) - 1}); map to a listed class"
        )
    ds.description = entry.description or ds.description
    ds.extra["tasks"] = list(entry.tasks)
    return ds
