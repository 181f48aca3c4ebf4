"""Tasks are data: which dataset and splits, which cached features, which probe and its knobs.

A task reads features only from the cache (never from a model), so every probe works for every encoder.
Task names are what `--task` takes; a group name (`object`) stands for several tasks, and a suite is a group
that also fixes the datasets (`--suite papers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from probebench.cache.store import FeatureStore
from probebench.data.base import ImageDataset
from probebench.errors import UserError
from probebench.probes.attentive import attentive_probe
from probebench.probes.knn import DEFAULT_KS, TEMPERATURE, knn_classify
from probebench.probes.linear import linear_probe
from probebench.tasks.features import check_feature, feature_blocks, image_features, split_rows, token_reader


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    description: str
    train_split: str = "train"
    test_split: str = "test"
    knobs: dict = field(default_factory=dict)
    tokens: tuple[str, ...] = ("cls", "pooled")  # what the task reads from the cache

    def evaluate(
        self,
        store: FeatureStore,
        dataset: ImageDataset,
        layer: int,
        feature: str,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> tuple[dict, dict]:
        """(metrics, details) of this task's probe on the cached features of `layer`."""
        raise NotImplementedError

    def splits(self, store: FeatureStore, dataset: ImageDataset):
        """Readable rows and labels of the train and test splits: (train_rows, y_train, test_rows, y_test)."""
        return (*split_rows(store, dataset, self.train_split), *split_rows(store, dataset, self.test_split))


@dataclass(frozen=True)
class KnnTask(Task):
    def evaluate(self, store, dataset, layer, feature, *, seed=0, device="cpu"):
        check_feature(store, feature)
        tr, ytr, te, yte = self.splits(store, dataset)
        metrics = knn_classify(
            feature_blocks(store, tr, layer, feature),
            ytr,
            image_features(store, te, layer, feature),
            yte,
            len(dataset.classes),
            self.knobs["ks"],
            self.knobs["temperature"],
            seed=seed,
        )
        return metrics, {"probe": "knn", "n_train": len(tr)}


@dataclass(frozen=True)
class LinearTask(Task):
    def evaluate(self, store, dataset, layer, feature, *, seed=0, device="cpu"):
        check_feature(store, feature)
        tr, ytr, te, yte = self.splits(store, dataset)
        metrics, details = linear_probe(
            image_features(store, tr, layer, feature),
            ytr,
            image_features(store, te, layer, feature),
            yte,
            len(dataset.classes),
            variant=self.knobs["variant"],
            seed=seed,
            device=device,
        )
        return metrics, {**details, "n_train": len(tr)}


@dataclass(frozen=True)
class AttentiveTask(Task):
    tokens: tuple[str, ...] = ("cls", "patches")

    def evaluate(self, store, dataset, layer, feature, *, seed=0, device="cpu"):
        tr, ytr, te, yte = self.splits(store, dataset)
        dim = int(store.manifest["encoder"]["feature_dim"])
        metrics, details = attentive_probe(
            token_reader(store, tr, layer),
            ytr,
            token_reader(store, te, layer),
            yte,
            len(dataset.classes),
            dim,
            seed=seed,
            device=device,
        )
        return metrics, {**details, "n_train": len(tr), "tokens": "all (prefix + patches)"}


_KNN = {"ks": DEFAULT_KS, "temperature": TEMPERATURE, "similarity": "cosine"}
_PROBES = {
    "knn": lambda **kw: KnnTask(
        description="weighted kNN (cosine, T = 0.07, k in {10, 20, 100, 200}), DINO's protocol",
        knobs=_KNN,
        **kw,
    ),
    "linear": lambda **kw: LinearTask(
        description="logistic regression, C from 10^linspace(-6, 5, 45) chosen on val, refit on train+val",
        knobs={"variant": "plain"},
        **kw,
    ),
    "linear_bn": lambda **kw: LinearTask(
        description="MAE-style linear probe: BatchNorm without affine, then the same logistic regression",
        knobs={"variant": "bn"},
        **kw,
    ),
    "attentive": lambda **kw: AttentiveTask(
        description="CAE's attentive probe: cross-attention block, BatchNorm, linear; epoch chosen on val",
        knobs={"variant": "cae"},
        **kw,
    ),
}
# Zhu et al. Table 1 is on ImageNet (tested on val); CUB-200 is their part-level source.
_DATASETS = {"": ("embedded", "test"), "_imagenet": ("imagenet", "val"), "_cub200": ("cub200", "test")}

TASKS: dict[str, Task] = {
    probe + suffix: make(name=probe + suffix, dataset=ds, test_split=test)
    for suffix, (ds, test) in _DATASETS.items()
    for probe, make in _PROBES.items()
}
GROUPS: dict[str, list[str]] = {"object": ["linear", "linear_bn", "attentive", "knn"]}
SUITES: dict[str, list[str]] = {
    "default": GROUPS["object"],
    "papers": [p + s for s in ("_imagenet", "_cub200") for p in GROUPS["object"]],
}


def get_suite(name: str) -> list[Task]:
    if name not in SUITES:
        raise UserError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}")
    return [TASKS[t] for t in SUITES[name]]


def get_tasks(name: str) -> list[Task]:
    """A task by name, or every task of a group (`object`)."""
    if name in GROUPS:
        return [TASKS[t] for t in GROUPS[name]]
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join([*GROUPS, *TASKS])}")
    return [TASKS[name]]


def get_task(name: str) -> Task:
    """One task by name (not a group)."""
    if name in GROUPS:
        raise UserError(f"{name!r} is a group of tasks; name one of {', '.join(GROUPS[name])}")
    return get_tasks(name)[0]
