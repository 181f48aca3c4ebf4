"""In-context dense retrieval (Hummingbird; `probebench.learners.dense_retrieval`), at object level (object
masks: VOC, ADE20K, the embedded objects) and at part level (part masks: car parts, CCP's merged human parts,
Pascal-Part, ADE20K-Part, PartImageNet): one protocol, tagged by what its labels are, so one encoder gets both
numbers from one cache.

Every setting of the published runs is a knob whose default is their value (open-hummingbird-eval's README:
k 30, temperature 0.02, a memory of 1024 x 10^4 patches; the evaluation size, 512 px for DINO and 504 px for
DINOv2, is the task's `resolution`); the embedded tasks set a CPU scale. Images are stretched to the input
size as theirs are (`framing: stretch`), features are the last block's final-normed patch tokens.

Deliberate deviations (the record's `deviations`): no augmented passes over the training images (their
default fills the memory with 2 augmented epochs; `augmentation_epochs` is 1 here until probebench has an
augmentation view), and predictions scored at each image's own size against its labels as stored (they
compare at the input size with resized labels) with no Hungarian matching of predicted classes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np

from probebench.data.annotations import ANNOTATIONS
from probebench.errors import UserError
from probebench.tasks.contract import Context, Evaluation, Metric, Needs, Probe, RoleData
from probebench.tasks.knobs import Choice, Float, Int, Knob

DEPARTURES = ["dense-retrieval-no-augmentation", "dense-retrieval-scored-at-image-size"]
BANK_IN_MEMORY_BYTES = 2**30  # a larger memory is written to a memory map on disk
QUERIES = 8192  # test patches searched together (whole images): the memory is scanned once per batch


class _DenseRetrievalProbe(Probe):
    roles = ("train", "test")
    default_splits = {"train": "train", "test": "test"}
    reads = "patch grids"
    protocol_version = "1"
    annotation: ClassVar[str] = "mask"

    def knobs(self) -> dict[str, Knob]:
        return {
            "annotation": Choice(self.annotation, ANNOTATIONS),
            "k": Int(30, ge=1, le=10_000),
            "temperature": Float(0.02, gt=0, le=100),
            "memory_size": Int(10_240_000, ge=1, le=10**10),  # patches: 1024 x 10^4
            "augmentation_epochs": Int(1, ge=1, le=1),  # theirs is 2: see the module's deviations
            "train_fraction": Float(1.0, gt=0, le=1),  # their 1/8, 1/64, 1/128 subsets
        }

    def trained(self, knobs: dict) -> bool:
        return (
            True  # nothing is fitted, but the run's seed draws the training subset and the memory's patches
        )

    def needs(self, knobs: dict) -> Needs:
        return Needs(tokens=("patches",), geometry="stretch", labels=False)

    def primary(self, knobs: dict) -> Metric:
        return Metric("miou")

    def evaluate(self, ctx: Context) -> Evaluation:
        from probebench.data.annotations import ignore_index, label_classes
        from probebench.metrics.segmentation import count_items, segmentation_metrics

        train, test = ctx.roles["train"], ctx.roles["test"]
        k = ctx.knobs
        names = label_classes(train.dataset, k["annotation"])
        rng = np.random.default_rng(ctx.training_seed)
        rows = _subset(train.rows, k["train_fraction"], rng)
        if not len(rows):
            raise UserError(
                f"dataset {train.dataset.name!r}: no training image of split {train.split!r} could be read, "
                "so the memory would be empty; fix the images or bind train to another split"
            )
        per_image = k["memory_size"] // (len(rows) * k["augmentation_epochs"])
        if per_image < 1:
            raise UserError(
                f"memory_size {k['memory_size']} holds less than one patch of each of {len(rows)} training "
                "images: give a larger memory_size"
            )
        with tempfile.TemporaryDirectory(prefix="probebench-memory-") as spill:
            bank, shares = _fill_memory(train, rows, ctx, len(names), per_image, rng, Path(spill))
            if k["k"] > len(bank):
                raise UserError(
                    f"k={k['k']} neighbours asked of a memory of {len(bank)} patches: give a smaller k, "
                    "or more training images"
                )
            conf, ids, counts = _label_test_images(test, ctx, bank, shares, len(names))
        if not conf.sum():
            why = "the test images hold no labelled pixel (none read, or all ignored)"
            undefined = dict.fromkeys(("miou", "macc", "aacc"), why)
            details = {"probe": "in-context dense retrieval"}
            return Evaluation({"n_images": len(ids)}, details, undefined=undefined)
        items = count_items(ids, counts)
        metrics = segmentation_metrics(conf, names)
        metrics |= {f"{m}_ci95": items.interval(m, ctx.resampling_seed) for m in ("miou", "macc", "aacc")}
        metrics |= {"n_images": len(ids), "classes_in_ground_truth": int((conf.sum(1) > 0).sum())}
        details = {
            "probe": "in-context dense retrieval",
            "memory_patches": int(len(bank)),
            "patches_per_image": int(min(per_image, _cells(train))),
            "training_images": len(rows),
            "num_classes": len(names),
            "ignore_index": ignore_index(train.dataset),
        }
        return Evaluation(metrics, details, deviations=DEPARTURES, items=items)


def _subset(rows: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A seeded share of the training rows (all of them at 1.0), in dataset order."""
    if fraction >= 1.0:
        return rows
    n = max(1, int(round(fraction * len(rows))))
    return np.sort(rng.choice(rows, size=n, replace=False))


def _cells(role: RoleData) -> int:
    g = role.store.load_geometry(role.rows[:1])[0]
    return g.grid_h * g.grid_w


def _grids(role: RoleData, rows: np.ndarray, layer: int):
    """(row, (h, w, C) grid as L2-normalised float32 tensor, Geometry) for each of `rows`."""
    import torch
    import torch.nn.functional as F

    from probebench.cache.store import array_name

    name = array_name("patches", layer)
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        for row, grid, geo in zip(
            chunk, role.store.load_grids(name, chunk), role.store.load_geometry(chunk, name), strict=True
        ):
            yield int(row), F.normalize(torch.from_numpy(np.array(grid, dtype=np.float32)), dim=-1), geo


def _fill_memory(
    train: RoleData, rows, ctx: Context, k: int, per_image: int, rng, spill: Path
) -> tuple[np.ndarray, np.ndarray]:
    """The memory: normalised patch features (M, C) and their label distributions (M, K), kept in memory or
    in memory maps under `spill` when larger than `BANK_IN_MEMORY_BYTES`."""
    from probebench.data.annotations import ignore_index, label_map
    from probebench.learners.dense_retrieval import patch_shares, sample_patches

    ignore = ignore_index(train.dataset)
    (layer,) = ctx.layers
    feats, labels, total = [], [], 0
    for row, grid, geo in _grids(train, rows, layer):
        truth = label_map(train.dataset, train.dataset.samples[row], ctx.knobs["annotation"])
        shares = patch_shares(truth, geo, k, ignore)
        keep = sample_patches(shares, per_image, rng)
        feats.append(grid.reshape(-1, grid.shape[-1])[keep].numpy().astype(np.float16))
        labels.append(shares[keep])
        total += len(keep)
    dim = feats[0].shape[1]
    if total * (dim * 2 + k * 4) <= BANK_IN_MEMORY_BYTES:
        return np.concatenate(feats), np.concatenate(labels)
    bank = np.lib.format.open_memmap(spill / "bank.npy", "w+", np.float16, (total, dim))
    shares_all = np.lib.format.open_memmap(spill / "shares.npy", "w+", np.float32, (total, k))
    at = 0
    for f, s in zip(feats, labels, strict=True):
        bank[at : at + len(f)], shares_all[at : at + len(f)] = f, s
        at += len(f)
    return bank, shares_all


def _label_test_images(
    test: RoleData, ctx: Context, bank: np.ndarray, shares: np.ndarray, k: int
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Each test image labelled from the memory, against its labels as stored: the confusion matrix (K, K)
    over all of them, and per image its name and (3, K) pixel counts. Images' patches are searched together,
    `QUERIES` at a time, so the memory is scanned once per batch of images, not once per image."""
    import torch

    from probebench.learners.dense_retrieval import transfer_labels
    from probebench.learners.neighbours import nearest_neighbours
    from probebench.metrics.segmentation import count_rows

    conf = np.zeros((k, k), dtype=np.int64)
    ids: list[str] = []
    counts: list[np.ndarray] = []
    shares_t = torch.as_tensor(np.asarray(shares))
    batch: list = []

    def flush() -> None:
        queries = torch.cat([grid.reshape(-1, grid.shape[-1]) for _, grid, _ in batch])
        sims, index = nearest_neighbours(queries, bank, ctx.knobs["k"], device=ctx.device)
        neighbours = shares_t[index.reshape(-1)].reshape(*index.shape, k)
        dist = transfer_labels(sims, neighbours, ctx.knobs["temperature"])
        at = 0
        for row, grid, geo in batch:
            h, w, _ = grid.shape
            one, name = _score_image(test, ctx, row, dist[at : at + h * w].reshape(h, w, k), geo, k)
            at += h * w
            conf[:] += one
            counts.append(count_rows(one))
            ids.append(name)
        batch.clear()

    (layer,) = ctx.layers
    queued = 0
    for item in _grids(test, test.rows, layer):
        batch.append(item)
        queued += item[1].shape[0] * item[1].shape[1]
        if queued >= QUERIES:
            flush()
            queued = 0
    if batch:
        flush()
    return conf, ids, np.stack(counts) if counts else np.zeros((0, 3, k), dtype=np.int64)


def _score_image(test: RoleData, ctx: Context, row: int, dist, geo, k: int) -> tuple[np.ndarray, str]:
    """One test image's confusion matrix (K, K) of the prediction from its grid of distributions
    (h, w, K) against its labels as stored, and its name."""
    from probebench.data.annotations import ignore_index, label_map
    from probebench.learners.dense_retrieval import grid_to_pixels
    from probebench.metrics.segmentation import confusion

    pred = grid_to_pixels(dist, geo)
    sample = test.dataset.samples[row]
    truth = label_map(test.dataset, sample, ctx.knobs["annotation"])
    if truth.shape != pred.shape:
        raise UserError(
            f"dataset {test.dataset.name!r}: the labels of {sample.path} are {truth.shape[1]} x "
            f"{truth.shape[0]} pixels, its image {pred.shape[1]} x {pred.shape[0]}: fix the mask"
        )
    return confusion(pred, truth, k, ignore_index(test.dataset)), sample.path


class ObjectDenseRetrievalProbe(_DenseRetrievalProbe):
    name = "object_dense_retrieval"
    level = "object"
    description = "in-context dense retrieval (Hummingbird) of object masks: k-NN label transfer, mIoU"
    annotation = "object_mask"


class PartDenseRetrievalProbe(_DenseRetrievalProbe):
    name = "part_dense_retrieval"
    level = "part"
    description = "in-context dense retrieval (Hummingbird) of part masks: k-NN label transfer, mIoU"
    annotation = "mask"
