"""The papers' datasets: official layouts, expected image counts per split, and where to get each.

Expected counts are the published ones; where this catalogue could not confirm a count (the part-aware study's
own splits live on the authors' drive) it says `None`, and `probebench doctor` reports the count found without
judging it. Every dataset here needs a manual step or a licence acceptance, so `how` says exactly what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from probebench.data.base import ImageDataset
from probebench.data.formats import read_dataset
from probebench.errors import DatasetMissing, UserError
from probebench.paths import data_root as find_data_root


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    format: str
    layout: str  # the folder layout under the data root, as the reader expects it
    counts: dict[str, int | None]  # split -> expected images (None: not confirmed here)
    how: str  # how to get it
    paper: str = ""
    options: dict = field(default_factory=dict)
    # A stable direct download: (url, file name, "md5:<hex>" or "sha256:<hex>"); None: needs a manual step.
    download: tuple[str, str, str] | None = None
    folder: str | None = None  # the folder under the data root, when another entry's (the same archive)
    pairs: dict[str, int] = field(default_factory=dict)  # split -> published pair count (correspondence)

    @property
    def path(self) -> str:
        return self.folder or self.name


CATALOG: dict[str, CatalogEntry] = {
    n.name: n
    for n in [
        CatalogEntry(
            "imagenet",
            "image_folder",
            "imagenet/{train,val}/<wnid>/*.JPEG",
            {"train": 1281167, "val": 50000},
            "Register at image-net.org, download ILSVRC2012 train and val, and sort val into class folders "
            "(for example with the valprep.sh script many repositories ship).",
            "Zhu et al. Table 1",
        ),
        CatalogEntry(
            "cub200",
            "cub",
            "cub200/CUB_200_2011/{images,images.txt,...,parts/part_locs.txt}",
            {"train": 5994, "test": 5794},
            "Download CUB_200_2011.tgz from the Caltech-UCSD Birds page (data.caltech.edu, record "
            "65de6-vp158) and extract it under the data root as cub200/.",
            "Zhu et al. part retrieval and classification",
        ),
        CatalogEntry(
            "coco_keypoints",
            "coco",
            "coco/{train2017,val2017,annotations/person_keypoints_*.json}",
            {"train": 118287, "val": 5000},
            "Download train2017.zip, val2017.zip and annotations_trainval2017.zip from cocodataset.org and "
            "extract them under the data root as coco/.",
            "Zhu et al. part retrieval and classification",
            {
                "splits": {
                    "train": "annotations/person_keypoints_train2017.json",
                    "val": "annotations/person_keypoints_val2017.json",
                }
            },
        ),
        CatalogEntry(
            "pascal_part",
            "mask_folder",
            "pascal_part/{images,labels}/{train,val}/..., pascal_part/classes.txt",
            {"train": None, "val": None},
            "The 193-part split (and its 16-object counterpart) is shared by the authors of Zhu et al. on "
            "Google Drive (README of github.com/JiePKU/understand-ssl-part-aware); download and convert it "
            "to a mask folder.",
            "Zhu et al. Table 4",
        ),
        CatalogEntry(
            "ade20k_part",
            "mask_folder",
            "ade20k_part/{images,labels}/{train,val}/..., ade20k_part/classes.txt",
            {"train": None, "val": None},
            "The 209-part split (and the 59-object counterpart) is on the Zhu et al. authors' Google Drive "
            "(README of github.com/JiePKU/understand-ssl-part-aware).",
            "Zhu et al. Table 4",
        ),
        CatalogEntry(
            "pascal_object",
            "mask_folder",
            "pascal_object/{images,labels}/{train,val}/..., pascal_object/classes.txt",
            {"train": None, "val": None},
            "The 16-object counterpart of the 193-part Pascal-Part split, on the Zhu et al. authors' Google "
            "Drive (README of github.com/JiePKU/understand-ssl-part-aware).",
            "Zhu et al. Figure 6",
        ),
        CatalogEntry(
            "ade20k_object",
            "mask_folder",
            "ade20k_object/{images,labels}/{train,val}/..., ade20k_object/classes.txt",
            {"train": None, "val": None},
            "The 59-object counterpart of the 209-part ADE20K-Part split, on the Zhu et al. authors' Google "
            "Drive (README of github.com/JiePKU/understand-ssl-part-aware).",
            "Zhu et al. Figure 6",
        ),
        CatalogEntry(
            "lip",
            "mask_folder",
            "lip/{images,labels}/{train,val}/..., lip/classes.txt",
            {"train": 30462, "val": 10000},
            "Register at the LIP site (sysu-hcp.net/lip) and download the single-person parsing images and "
            "labels (19 parts plus background).",
            "Zhu et al. Table 4",
        ),
        CatalogEntry(
            "partimagenet",
            "coco",
            "partimagenet/{train,val,test}/... + <split>.json",
            # The OOD release (splits hold disjoint classes: 109/19/30), per the TACJu/PartImageNet README.
            {"train": 16540, "val": 2957, "test": 4598},
            "Download PartImageNet_OOD from the Google Drive folder linked in the README of "
            "github.com/TACJu/PartImageNet (there is no stable direct URL or published checksum); the "
            "annotations are COCO json, one per split.",
            "part segmentation",
        ),
        CatalogEntry(
            "voc07",
            "voc",
            "voc07/VOC2007/{JPEGImages,Annotations,ImageSets}",
            {"trainval": 5011},
            "Run `probebench data download voc07`, or download VOCtrainval_06-Nov-2007.tar from the PASCAL "
            "VOC 2007 page and extract it under voc07/.",
            "LOST / TokenCut CorLoc",
            {"splits": ["trainval"]},
            download=(
                "https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
                "VOCtrainval_06-Nov-2007.tar",
                "md5:c52e279531787c972589f7e41ab4ae64",
            ),
        ),
        CatalogEntry(
            "voc12",
            "voc",
            "voc12/VOC2012/{JPEGImages,Annotations,ImageSets}",
            {"trainval": 11540},
            "Run `probebench data download voc12`, or download VOCtrainval_11-May-2012.tar from the PASCAL "
            "VOC 2012 page and extract it under voc12/.",
            "LOST / TokenCut CorLoc",
            {"splits": ["trainval"]},
            download=(
                "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                "VOCtrainval_11-May-2012.tar",
                "md5:6cd6e144f989b92b3379bac3b3de84fd",
            ),
        ),
        CatalogEntry(
            "voc12_seg",
            "voc_seg",
            "voc12/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}",
            {"train": 1464, "val": 1449},
            "Run `probebench data download voc12` (the same archive holds the segmentation split), or "
            "extract VOCtrainval_11-May-2012.tar under voc12/.",
            "segmentation retrieval (FOUND, HEAP)",
            download=(
                "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                "VOCtrainval_11-May-2012.tar",
                "md5:6cd6e144f989b92b3379bac3b3de84fd",
            ),
            folder="voc12",
        ),
        CatalogEntry(
            "coco20k",
            "coco",
            "coco20k/{train2014,instances_train2014.json,coco_20k_filenames.txt}",
            {"train": 19817},
            "Download train2014 images and instances_train2014.json from cocodataset.org, and the 19,817 "
            "file list coco_20k_filenames.txt that LOST ships (github.com/valeoai/LOST, datasets/).",
            "LOST / TokenCut CorLoc",
            {"splits": {"train": "instances_train2014.json"}, "filelist": "coco_20k_filenames.txt"},
        ),
        CatalogEntry(
            "ecssd",
            "saliency",
            "ecssd/{images,ground_truth_mask}",
            {"test": 1000},
            "Download images.zip and ground_truth_mask.zip from the ECSSD page (CUHK).",
            "saliency",
            {"images": "images", "masks": "ground_truth_mask"},
        ),
        CatalogEntry(
            "duts_te",
            "saliency",
            "duts_te/{DUTS-TE-Image,DUTS-TE-Mask}",
            {"test": 5019},
            "Download DUTS-TE.zip from saliencydetection.net/duts.",
            "saliency",
            {"images": "DUTS-TE-Image", "masks": "DUTS-TE-Mask"},
        ),
        CatalogEntry(
            "duts_tr",
            "saliency",
            "duts_tr/{DUTS-TR-Image,DUTS-TR-Mask}",
            {"train": 10553},
            "Download DUTS-TR.zip from saliencydetection.net/duts.",
            "FOUND / HEAP training",
            {"images": "DUTS-TR-Image", "masks": "DUTS-TR-Mask", "split": "train"},
        ),
        CatalogEntry(
            "dut_omron",
            "saliency",
            "dut_omron/{DUT-OMRON-image,pixelwiseGT-new-PNG}",
            {"test": 5168},
            "Download DUT-OMRON-image.zip and the pixel-wise ground truth from "
            "saliencydetection.net/dut-omron.",
            "saliency",
            {"images": "DUT-OMRON-image", "masks": "pixelwiseGT-new-PNG"},
        ),
        CatalogEntry(
            "spair71k",
            "spair",
            "spair71k/SPair-71k/{JPEGImages,Layout/large,PairAnnotation}/...",
            {"test": None},
            "Download SPair-71k.tar.gz from the SPair-71k page (cvlab.postech.ac.kr/research/SPair-71k) and "
            "extract it under the data root as spair71k/ (no checksum is published).",
            "DINOv2 / DINOv3 keypoint correspondence (PCK@0.1 of the box)",
            {"splits": ["test"]},
            pairs={"test": 12234},
        ),
        CatalogEntry(
            "pf_pascal",
            "pf_pascal",
            "pf_pascal/PF-PASCAL/{JPEGImages,Annotations/<class>,test_pairs.csv}",
            {"test": None},
            "Download PF-dataset-PASCAL.zip from the Proposal Flow page (di.ens.fr/willow/research/"
            "proposalflow), extract it under the data root as pf_pascal/, and add the trn/val/test_pairs.csv "
            "split files that semantic-correspondence code ships (e.g. github.com/juhongm999/dhpf).",
            "keypoint correspondence (PCK of the image)",
            {"splits": ["test"]},
        ),
        CatalogEntry(
            "pf_willow",
            "pf_willow",
            "pf_willow/PF-WILLOW/{<category>/*.png,test_pairs.csv}",
            {"test": None},
            "Download PF-dataset.zip from the Proposal Flow page (di.ens.fr/willow/research/proposalflow) "
            "and extract it under the data root as pf_willow/PF-WILLOW, with its test_pairs.csv.",
            "keypoint correspondence (PCK of the keypoints' box)",
        ),
    ]
}


def named_root(named: CatalogEntry, data_root: Path | None = None) -> Path:
    base = find_data_root(data_root)
    if base is None:
        raise DatasetMissing(
            f"dataset {named.name!r}: no data root; set PROBEBENCH_DATA or pass --data-root to the "
            f"folder that holds {named.path}/ ({named.how})"
        )
    root = base / named.path
    if not root.is_dir():
        raise DatasetMissing(f"dataset {named.name!r} not found at {root}: {named.how}")
    return root


def read_named(named: CatalogEntry, root: Path) -> ImageDataset:
    """The named dataset through its format's reader (the same table user entries use)."""
    return read_dataset(named.format, root, named.name, named.options)


def check_counts(named: CatalogEntry, ds: ImageDataset) -> list[str]:
    """Problems with the image counts: a partial dataset is an error, never a silently smaller evaluation."""
    found = ds.describe()["splits"]
    pairs = {split: len(listed) for split, listed in (ds.extra.get("pairs") or {}).items()}
    return [
        f"split {split!r}: found {found.get(split, 0)} images, expected {expected}"
        for split, expected in named.counts.items()
        if expected is not None and found.get(split, 0) != expected
    ] + [
        f"split {split!r}: found {pairs.get(split, 0)} pairs, expected {expected}"
        for split, expected in named.pairs.items()
        if pairs.get(split, 0) != expected
    ]


def load_named(name: str, data_root: Path | None = None) -> ImageDataset:
    named = CATALOG[name]
    ds = read_named(named, named_root(named, data_root))
    problems = check_counts(named, ds)
    if problems:
        raise UserError(f"dataset {name!r} is incomplete ({'; '.join(problems)}); {named.how}")
    return ds
