"""Views: datasets made from a dataset (part crops, sliding windows). Which view a task reads, its name and
how it is made are decided here, in one place: `view_name` names the data (planning needs the name alone, to
key the cache), `view_for` makes it."""

from __future__ import annotations

from probebench.data.base import ImageDataset
from probebench.data.views.crops import CropSpec, crop_view_name, make_crop_view
from probebench.data.views.windows import WindowSpec, window_view, window_view_name


def view_name(dataset: str, crops: CropSpec | None, windows: WindowSpec | None) -> str:
    """The name of the data read from `dataset`: its crop view, its window view, or the dataset itself."""
    if crops is not None:
        return crop_view_name(dataset, crops)
    return window_view_name(dataset, windows) if windows is not None else dataset


def view_for(dataset: ImageDataset, crops: CropSpec | None, windows: WindowSpec | None) -> ImageDataset:
    """The data `view_name(dataset.name, crops, windows)` names, made (the dataset itself without a view)."""
    if crops is not None:
        return make_crop_view(dataset, crops)
    return window_view(dataset, windows) if windows is not None else dataset
