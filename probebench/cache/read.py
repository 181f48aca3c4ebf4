"""What a task reads from the feature cache: image features, token sequences and labels of one split.

Reads go through the store's memory-mapped shards; rows whose image could not be read are left out (and
counted in the record), so a probe never trains or tests on the zeros written for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, get_args

import numpy as np

from probebench.cache.store import FeatureStore
from probebench.data.base import ImageDataset
from probebench.data.views.crops import no_crops_in
from probebench.errors import UserError

# cls: the class token; pooled: the mean of the patch tokens; both: the two concatenated; head: the model's
# own pooling (SigLIP's attention pooler, a global average with its norm), where it has one
ImageFeature = Literal["cls", "pooled", "both", "head"]
FEATURE_KINDS: tuple[ImageFeature, ...] = get_args(ImageFeature)


def split_rows(
    store: FeatureStore, dataset: ImageDataset, split: str, need_labels: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Dataset rows (N,) of `split` whose images were read, in dataset order, and their labels (N,)."""
    rows = np.array(dataset.split_indices(split), dtype=np.int64)
    if len(rows) == 0:
        if "crops" in dataset.extra:  # a view of crops: its name is internal, what is missing is crops
            raise UserError(no_crops_in(dataset, split))
        raise UserError(f"dataset {dataset.name!r} has no {split!r} split (splits: {dataset.splits})")
    rows = rows[store.load("valid", rows)]
    labels = np.array([dataset.samples[r].label for r in rows], dtype=np.int64)
    if need_labels and (labels < 0).any():
        raise UserError(
            f"dataset {dataset.name!r} split {split!r} has unlabelled images; a probe needs labels"
        )
    return rows, labels


def check_feature(store: FeatureStore, feature: str) -> None:
    if feature not in FEATURE_KINDS:
        raise UserError(f"unknown feature {feature!r}; choose from {', '.join(FEATURE_KINDS)}")
    if feature == "head":
        if store.manifest["encoder"].get("pooling", "none") == "none":
            raise UserError(
                "this encoder has no pooling head of its own, so feature 'head' does not exist; use "
                "--feature pooled"
            )
        return
    if feature != "pooled" and not store.manifest["encoder"].get("class_token"):
        raise UserError(
            f"this encoder has no class token (registers are not one), so feature {feature!r} does not "
            "exist; use --feature pooled"
        )


def image_features(store: FeatureStore, rows: np.ndarray, layer: int, feature: str) -> np.ndarray:
    """One vector per image (N, C) (or (N, 2C) for "both": class token then pooled patches), float32. The
    head's output is of the last block whatever `layer` is (`check_feature` refuses it elsewhere)."""
    if feature == "head":
        if layer != store.manifest["encoder"]["num_blocks"] - 1:
            raise UserError(
                f"feature 'head' is the model's own pooling of its last block, not of block {layer}; drop "
                "--layer, or use --feature pooled"
            )
        return store.load("head", rows).astype(np.float32)
    parts = []
    if feature in ("cls", "both"):
        parts.append(store.load(f"cls.L{layer}", rows)[:, 0])  # the class token; registers are not features
    if feature in ("pooled", "both"):
        parts.append(store.load(f"pooled.L{layer}", rows))
    return np.concatenate(parts, axis=1).astype(np.float32)


def feature_blocks(store: FeatureStore, rows: np.ndarray, layer: int, feature: str) -> Iterator[np.ndarray]:
    """`image_features` of sorted `rows`, one cache shard at a time (for streaming probes such as kNN)."""
    shard_of = rows // store.shard_size
    for shard in np.unique(shard_of):
        yield image_features(store, rows[shard_of == shard], layer, feature)


def token_reader(store: FeatureStore, rows: np.ndarray, layer: int):
    """A reader: positions into `rows` (n,) -> all tokens (n, P + h*w, C), prefix tokens first, float32."""
    prefix = store.manifest["encoder"]["num_prefix_tokens"]

    def read(positions: np.ndarray) -> np.ndarray:
        picked = rows[np.asarray(positions)]
        tokens = _float32(store.load_tokens(f"patches.L{layer}", picked))
        if prefix:
            tokens = np.concatenate([_float32(store.load(f"cls.L{layer}", picked)), tokens], axis=1)
        return tokens

    return read


def _float32(a: np.ndarray) -> np.ndarray:
    """The cache's float16 as float32, cast by torch: numpy's half-precision cast took 26 ms per batch of
    256 x 49 x 1280 tokens, torch's about 3 ms, and on the attentive probe's every step. Every float16 is
    exact in float32, so the values are the same. (torch is imported here, not with the module: what the
    record schema and the task catalogue read from this module must not import it.)"""
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).float().numpy()
