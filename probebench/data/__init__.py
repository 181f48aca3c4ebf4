"""Datasets: a list of labelled image files with splits, plus the loader that decodes them in workers."""

from probebench.data.base import ImageDataset, Sample, get_dataset, list_datasets

__all__ = ["ImageDataset", "Sample", "get_dataset", "list_datasets"]
