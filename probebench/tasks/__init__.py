"""Tasks are data: which dataset and splits, which cached features, which evaluation and its knobs.

A task reads features only from the cache (never from a model), so every probe works for every encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from probebench.cache.store import FeatureStore
from probebench.data.base import ImageDataset
from probebench.errors import UserError
from probebench.extract import Request
from probebench.tasks.knn import DEFAULT_KS, TEMPERATURE, knn_classify


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    description: str
    train_split: str = "train"
    test_split: str = "test"
    knobs: dict = field(default_factory=dict)

    def request(self, layer: int = -1) -> Request:
        return Request(layers=(layer,), tokens=("cls", "pooled"))

    def evaluate(self, store: FeatureStore, dataset: ImageDataset, feature: str) -> dict:
        raise NotImplementedError


def feature_rows(
    store: FeatureStore, dataset: ImageDataset, split: str, feature: str
) -> tuple[np.ndarray, np.ndarray]:
    """Image features (N, C) and labels (N,) of one split, without rows whose image could not be read."""
    rows = np.array(dataset.split_indices(split))
    if len(rows) == 0:
        raise UserError(f"dataset {dataset.name!r} has no {split!r} split (splits: {dataset.splits})")
    valid = store.load("valid", rows)
    rows = rows[valid]
    layer = store.manifest["layers"][-1]
    feats = store.load(f"{'cls' if feature == 'cls' else 'pooled'}.L{layer}", rows)
    if feature == "cls":
        feats = feats[:, 0]  # the class token; other prefix tokens (registers) are not image features
    labels = np.array([dataset.samples[r].label for r in rows])
    return feats.astype(np.float32), labels


@dataclass(frozen=True)
class KnnTask(Task):
    def evaluate(self, store: FeatureStore, dataset: ImageDataset, feature: str) -> dict:
        xtr, ytr = feature_rows(store, dataset, self.train_split, feature)
        xte, yte = feature_rows(store, dataset, self.test_split, feature)
        blocks = np.array_split(xtr, max(1, len(xtr) // 8192))
        return knn_classify(
            blocks, ytr, xte, yte, len(dataset.classes), self.knobs["ks"], self.knobs["temperature"]
        )


_KNN = {"ks": DEFAULT_KS, "temperature": TEMPERATURE, "similarity": "cosine"}
_KNN_DESC = "weighted kNN classification (cosine, T=0.07, k in {10, 20}), DINO's protocol"

TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        KnnTask(name="knn", dataset="embedded", description=_KNN_DESC, knobs=_KNN),
        # The papers' datasets: Zhu et al. Table 1 is on ImageNet; CUB-200 is their part-level source.
        KnnTask(name="knn_imagenet", dataset="imagenet", description=_KNN_DESC, test_split="val", knobs=_KNN),
        KnnTask(name="knn_cub200", dataset="cub200", description=_KNN_DESC, knobs=_KNN),
    ]
}

# A suite is a list of tasks run together: `probebench run --suite papers`.
SUITES: dict[str, list[str]] = {"default": ["knn"], "papers": ["knn_imagenet", "knn_cub200"]}


def get_suite(name: str) -> list[Task]:
    if name not in SUITES:
        raise UserError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}")
    return [TASKS[t] for t in SUITES[name]]


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]
