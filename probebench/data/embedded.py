"""The embedded default dataset: procedurally generated objects made of parts, generated on first use.

It needs no download, takes seconds to generate into the data cache, and is labelled synthetic wherever its
results appear. The generator lives in `synthetic.py`; this module only registers its output as a dataset.
"""

from __future__ import annotations

import json

from probebench.data import synthetic
from probebench.data.base import ImageDataset, Sample
from probebench.paths import data_cache_dir

DEFAULTS = {"per_class_train": 40, "per_class_test": 20, "image_size": 160, "seed": 0}


def embedded_dataset(**overrides: int) -> ImageDataset:
    """Generate (once) and load the embedded dataset; `overrides` shrink it for fast tests."""
    params = {**DEFAULTS, **overrides}
    tag = "-".join(f"{v}" for v in params.values())
    root = data_cache_dir() / f"embedded-v{synthetic.GENERATOR_VERSION}-{tag}"
    synthetic.generate(root, **params)
    ann = json.loads((root / "annotations.json").read_text())
    size = int(ann["image_size"])
    # Annotations in the fields every format uses: `mask` is the part label map (values index
    # extra["mask_classes"]: 0 background, then the parts), `object_mask` the object's, `boxes` its box.
    samples = [
        Sample(
            s["file"],
            int(s["label"]),
            s["split"],
            {
                "mask": s["parts"],
                "object_mask": s["objects"],
                "boxes": [[*s["box"], int(s["label"])]],
                "keypoints": s["keypoints"],  # each visible part's centre, named by extra["keypoint_names"]
                "size": [size, size],
            },
        )
        for s in ann["samples"]
    ]
    name = "embedded" if params == DEFAULTS else f"embedded_{tag.replace('-', '_')}"
    return ImageDataset(
        name=name,
        root=root,
        classes=list(ann["classes"]),
        samples=samples,
        synthetic=True,
        description=f"procedural objects with parts (generator v{synthetic.GENERATOR_VERSION}, {params})",
        extra={
            "mask_classes": ["background", *ann["parts"]],
            "part_of": ann["part_of"],
            "keypoint_names": list(ann["parts"]),
        },
    )
