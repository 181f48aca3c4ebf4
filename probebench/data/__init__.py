"""Datasets: labelled, annotated image files with splits (`base`), their readers (`formats`), the named
catalogue and user configs, and `lookup.get_dataset`, which finds any of them by name."""

from probebench.data.base import ImageDataset, Sample

__all__ = ["ImageDataset", "Sample"]
