"""Finding a dataset by name: built-in, user config, the named catalogue, or an image folder given by path.

The one entry point (`get_dataset`) that the pipeline, the CLI and the API use. It sits above the readers,
the user config and the catalogue, none of which import it, so `data/` has no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from probebench.data.base import ImageDataset
from probebench.data.catalog import CATALOG, load_named
from probebench.data.config import build_dataset, config_path, load_datasets, resolve_root
from probebench.data.embedded import embedded_dataset
from probebench.data.formats.folder import read_image_folder
from probebench.errors import UserError
from probebench.paths import safe_name

BUILTIN: dict[str, Callable[[], ImageDataset]] = {"embedded": embedded_dataset}


def all_datasets(datasets: Path | None = None, builtin: bool = True) -> Iterator[tuple[str, str, Any]]:
    """Every dataset a name finds, once each, in lookup order: (name, source, entry), source "built-in",
    "user" (entry: its `DatasetEntry`) or "named" (entry: its `CatalogEntry`); a user entry hides a named
    one of the same name."""
    user = load_datasets(datasets)
    for name in BUILTIN if builtin else ():
        yield name, "built-in", None
    for name, entry in user.items():
        if name not in BUILTIN:
            yield name, "user", entry
    for name, entry in CATALOG.items():
        if name not in user and name not in BUILTIN:
            yield name, "named", entry


def dataset_folder(name_or_path: str, datasets: Path | None = None) -> Path | None:
    """The absolute image folder `name_or_path` names when it is a folder rather than a dataset's name (a
    built-in, configured or catalogued name wins over a folder of that name, as in `get_dataset`)."""
    if name_or_path in BUILTIN or name_or_path in load_datasets(datasets) or name_or_path in CATALOG:
        return None
    path = Path(name_or_path).expanduser()
    return path.resolve() if path.exists() else None


def get_dataset(
    name_or_path: str, datasets: Path | None = None, data_root: Path | None = None
) -> ImageDataset:
    """A built-in dataset, a user dataset from the datasets config (`datasets`, else ./datasets.yaml), a
    named dataset under the data root, or an image folder given by path (anything with a '/' or an existing
    folder)."""
    user = load_datasets(datasets)
    if name_or_path in BUILTIN:
        ds = BUILTIN[name_or_path]()
        if name_or_path in user:
            ds.warn(f"the datasets config's entry {name_or_path!r} is ignored (a built-in name); rename it")
        return ds
    if name_or_path in user:
        entry = user[name_or_path]
        return build_dataset(entry, resolve_root(entry, config_path(datasets).parent, data_root))
    if name_or_path in CATALOG:
        return load_named(name_or_path, data_root)
    path = Path(name_or_path).expanduser()
    if "/" in name_or_path or path.exists():
        ds = read_image_folder(path)
        ds.name = safe_name(ds.name.replace(" ", "_"), "dataset folder name")
        return ds
    known = ", ".join([*BUILTIN, *user, *CATALOG])
    raise UserError(f"unknown dataset {name_or_path!r}; known: {known}, or a path to an image folder")
