"""The one table of dataset formats, shared by the named catalogue and by user `datasets.yaml` entries.

A format is a reader `(root, name, options) -> ImageDataset` plus the options it accepts. Adding a format is
one row here; `datasets.yaml` validation and the catalogue both read this table, so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from probebench.data.base import ImageDataset


@dataclass(frozen=True)
class Format:
    read: Callable[[Path, str, dict], ImageDataset]
    options: tuple[str, ...]  # the entry fields this format reads, besides root and name
    layout: str  # what it expects on disk, for error lines and `list datasets`


def _image_folder(root: Path, name: str, opts: dict) -> ImageDataset:
    from probebench.data.formats.folder import read_image_folder

    return read_image_folder(root, name)


def _cub(root: Path, name: str, opts: dict) -> ImageDataset:
    from probebench.data.formats.cub import read_cub

    return read_cub(root, name)


def _coco(root: Path, name: str, opts: dict) -> ImageDataset:
    from probebench.data.formats.coco import read_coco

    splits = opts.get("splits")
    return read_coco(root, name, splits if isinstance(splits, dict) else None, opts.get("filelist"))


def _voc(root: Path, name: str, opts: dict) -> ImageDataset:
    from probebench.data.formats.voc import read_voc

    splits = opts.get("splits")
    return read_voc(root, name, tuple(splits) if splits else ("train", "test", "trainval", "val"))


def _voc_seg(root: Path, name: str, opts: dict) -> ImageDataset:
    from probebench.data.formats.voc import read_voc_segmentation

    splits = opts.get("splits")
    return read_voc_segmentation(root, name, tuple(splits) if splits else ("train", "val"))


def _mask_folder(root: Path, name: str, opts: dict) -> ImageDataset:
    from probebench.data.formats.masks import read_mask_folder

    given = {k: opts[k] for k in ("images", "labels", "split", "test_fraction") if opts.get(k)}
    ds = read_mask_folder(root, name, **given)
    ds.extra.update({"merge": opts.get("merge"), "ignore_index": opts.get("ignore_index", 255)})
    return ds


def _saliency(root: Path, name: str, opts: dict) -> ImageDataset:
    from probebench.data.formats.saliency import read_saliency

    return read_saliency(
        root, name, opts.get("images") or "images", opts.get("masks") or "masks", opts.get("split") or "test"
    )


def _spair(root: Path, name: str, opts: dict) -> ImageDataset:
    from probebench.data.formats.correspondence import SPAIR_SPLITS, read_spair

    return read_spair(root, name, tuple(opts.get("splits") or SPAIR_SPLITS))


def _pf_pascal(root: Path, name: str, opts: dict) -> ImageDataset:
    from probebench.data.formats.correspondence import read_pf_pascal

    return read_pf_pascal(root, name, tuple(opts.get("splits") or ("trn", "val", "test")))


def _pf_willow(root: Path, name: str, opts: dict) -> ImageDataset:
    from probebench.data.formats.correspondence import read_pf_willow

    return read_pf_willow(root, name)


FORMATS: dict[str, Format] = {
    "image_folder": Format(_image_folder, (), "<split>/<class>/<image>"),
    "cub": Format(_cub, (), "CUB-200-2011: images/, images.txt, image_class_labels.txt, ..."),
    "coco": Format(_coco, ("splits", "filelist"), "COCO json per split ({split: json file})"),
    "voc": Format(_voc, ("splits",), "Pascal VOC: JPEGImages/, Annotations/ (per split or ImageSets)"),
    "voc_seg": Format(
        _voc_seg, ("splits",), "Pascal VOC: JPEGImages/, SegmentationClass/, ImageSets/Segmentation/"
    ),
    "mask_folder": Format(
        _mask_folder,
        ("images", "labels", "split", "merge", "ignore_index", "test_fraction"),
        "images/<stem>.*, labels/<stem>.png, classes.txt",
    ),
    "saliency": Format(_saliency, ("images", "masks", "split"), "<images>/<stem>.*, <masks>/<stem>.png"),
    "spair": Format(
        _spair,
        ("splits",),
        "SPair-71k: JPEGImages/<category>/, Layout/large/<split>.txt, PairAnnotation/<split>/",
    ),
    "pf_pascal": Format(
        _pf_pascal, ("splits",), "PF-PASCAL: JPEGImages/, Annotations/<class>/*.mat, {trn,val,test}_pairs.csv"
    ),
    "pf_willow": Format(_pf_willow, (), "PF-WILLOW: <category>/<image>.png, test_pairs.csv"),
}


def read_dataset(fmt: str, root: Path, name: str, options: dict | None = None) -> ImageDataset:
    """A dataset in format `fmt` at `root` (the catalogue and user entries both come through here)."""
    return FORMATS[fmt].read(root, name, options or {})
