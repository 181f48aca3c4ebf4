"""Per-item outcomes: what each test item contributed to a record's metrics, kept beside the record so that a
paired comparison, a rank or a claim needs no re-run.

A record's metric is a function of its items' outcomes; `ItemScores` holds those outcomes as arrays and says,
per metric, how the metric is made from them (`ItemMetric.kind`):
- `mean`: 100 x the mean of per-item values (a top-1 hit, a query's AP, a CorLoc hit, a saliency IoU);
- `class_mean`: 100 x the mean, over the classes present, of each class's mean value (mean per-class
  accuracy, mAP over part classes);
- `miou`, `macc`, `aacc`: from per-item, per-class pixel counts (intersection, ground truth, prediction)
  summed over the items and only then divided, as mmseg's confusion matrix does (never a mean of per-image
  IoUs);
- `max_f`: the maximum over thresholds of the items' mean F curve (TokenCut's max F-beta).

Every kind is evaluated under item weights (B, N): a bootstrap resample's multiplicities, or ones for the
estimate itself. Items are named (`ids`: the image's path, a crop's path and box), so two records are paired
on the items they share and never by position. The arrays are written as one `.npz` beside the record, whose
sha256 the record keeps (`ItemsInfo`); reading checks it, and a file that does not match is named.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from probebench.io import BadFile, read_bytes

ITEMS_FILE = "items.npz"
MAX_ITEMS_BYTES = 2**30  # a million images' hits are a few MB; a million saliency curves, 500 MB
ItemKind = Literal["mean", "class_mean", "miou", "macc", "aacc", "max_f"]
COUNTS = ("intersection", "ground truth", "prediction")  # the (N, 3, K) counts' middle axis


class ItemMetric(BaseModel):
    """How one metric is made from the items: its kind, the item set (`group`, which names the ids), the
    array of outcomes, and for `class_mean` the labels array; `classes` restricts a count metric to a subset
    of classes (segmentation retrieval's subset mIoU)."""

    model_config = ConfigDict(extra="forbid")

    kind: ItemKind
    group: str = Field(pattern=r"^[a-z0-9_]+$")
    array: str = Field(pattern=r"^[a-z0-9_]+$")
    labels: str | None = Field(default=None, pattern=r"^[a-z0-9_]+$")
    classes: list[int] | None = None
    # each item's outcome depends on the whole item set (a query's AP ranks it against every other crop):
    # two records compare only on identical item sets, never on the items they happen to share
    whole_set: bool = False


class BadItems(ValueError):
    """An items file that is missing, damaged or does not fit its record: the message says which and why."""


@dataclass
class ItemScores:
    """A record's per-item outcomes. `ids[group]` names the items of a group (N,); `arrays[name]` holds
    (N,) values, (N,) int labels, (N, 3, K) counts or (N, T) curves; `metrics` says how each metric is
    made from them."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, ItemMetric] = field(default_factory=dict)

    def add(
        self,
        metric: str,
        kind: ItemKind,
        group: str,
        ids: Sequence[str],
        values: np.ndarray,
        labels: np.ndarray | None = None,
        classes: list[int] | None = None,
        array: str | None = None,
        whole_set: bool = False,
    ) -> None:
        """Add one metric's outcomes over the items `ids` of `group` (a group added twice must name the same
        items). `array` shares one array between metrics (mIoU, mAcc and aAcc read the same counts)."""
        ids = unique_ids(ids)
        if group in self.ids and self.ids[group] != ids:
            raise ValueError(f"item group {group!r} added twice with different items")
        self.ids[group] = ids
        array = array or metric
        self.arrays[array] = np.asarray(values)
        label_name = None
        if labels is not None:
            label_name = f"{array}_labels"
            self.arrays[label_name] = np.asarray(labels, dtype=np.int64)
        self.metrics[metric] = ItemMetric(
            kind=kind, group=group, array=array, labels=label_name, classes=classes, whole_set=whole_set
        )

    def estimate(self, metric: str) -> float:
        """The metric over every item, as the probe computed it."""
        n = len(self.ids[self.metrics[metric].group])
        return float(metric_under_weights(self, metric, np.ones((1, n)))[0])

    def interval(self, metric: str, seed: int, resamples: int | None = None) -> list[float]:
        """The metric's 95 % percentile interval over its items (`resamples` as every record interval)."""
        from probebench.metrics.classification import RESAMPLES
        from probebench.stats.bootstrap import interval_of

        spec = self.metrics[metric]
        labels = None if spec.labels is None else self.arrays[spec.labels]
        return interval_of(spec, self.arrays[spec.array], labels, resamples or RESAMPLES, seed)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        named = {f"ids__{g}": np.array(v, dtype=str) for g, v in self.ids.items()}
        np.savez_compressed(buf, **named, **self.arrays)
        return buf.getvalue()


def unique_ids(ids: Sequence[str]) -> list[str]:
    """Item names, a repeat given its occurrence (`path#2`): two crops of one box stay two items."""
    seen: dict[str, int] = {}
    out = []
    for name in ids:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def item_ids(dataset, rows: np.ndarray) -> list[str]:
    """The names of a role's rows: the image's path, with its box for a crop (a part crop, a window)."""
    out = []
    for r in np.asarray(rows):
        sample = dataset.samples[int(r)]
        crop = sample.ann.get("crop")
        out.append(sample.path + ("@" + ",".join(f"{v:g}" for v in crop) if crop is not None else ""))
    return out


def metric_under_weights(items: ItemScores, metric: str, weights: np.ndarray) -> np.ndarray:
    """(B,) the metric under each row of item weights (B, N), in %; NaN where a resample defines none."""
    spec = items.metrics[metric]
    return evaluate_kind(
        spec, items.arrays[spec.array], None if spec.labels is None else items.arrays[spec.labels], weights
    )


def evaluate_kind(
    spec: ItemMetric, values: np.ndarray, labels: np.ndarray | None, weights: np.ndarray
) -> np.ndarray:
    """(B, E) or (B,) values of a metric of kind `spec.kind` under weights (B, N). `values` is (N,) or (N, E)
    for E records stacked on the last axis (counts (N, 3, K[, E]), curves (N, T[, E]))."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if spec.kind == "mean":
            return 100.0 * (w @ values.astype(np.float64)) / _expand(total, values.ndim)
        if spec.kind == "class_mean":
            return 100.0 * _class_mean(values.astype(np.float64), labels, w)
        if spec.kind == "max_f":
            curve = np.tensordot(w, values.astype(np.float64), axes=(1, 0)) / _expand(total, values.ndim)
            return 100.0 * curve.max(axis=1)
        counts = np.tensordot(w, values.astype(np.float64), axes=(1, 0))  # (B, 3, K[, E])
        inter, gt, pred = counts[:, 0], counts[:, 1], counts[:, 2]
        if spec.kind == "aacc":
            return 100.0 * inter.sum(1) / np.maximum(gt.sum(1), 1)
        ratio = inter / (gt + pred - inter) if spec.kind == "miou" else inter / gt
        if spec.classes is not None:
            ratio = ratio[:, np.asarray(spec.classes, dtype=np.int64)]
        return 100.0 * _nanmean(ratio, axis=1)


def _expand(total: np.ndarray, ndim: int) -> np.ndarray:
    return total.reshape(-1, *([1] * (ndim - 1)))


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmean without its warning: NaN where no entry along `axis` is defined."""
    ok = np.isfinite(x)
    n = ok.sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, x, 0.0).sum(axis) / n, np.nan)


def _class_mean(values: np.ndarray, labels: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mean over classes of each class's weighted mean value: (B[, E]). Items grouped by class, one matrix
    product per class (no (N, K) one-hot)."""
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    per_class = []
    for rows in np.split(order, bounds):
        n = w[:, rows].sum(1)
        s = w[:, rows] @ values[rows]
        per_class.append(s / _expand(n, values.ndim))  # NaN where a resample holds none of the class
    return _nanmean(np.stack(per_class, axis=1), axis=1)


# -- the file beside the record ---------------------------------------------------------------------------
def items_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_items(path: Path, sha256: str, metrics: dict[str, ItemMetric]) -> ItemScores:
    """The items file of a record, read as untrusted input: its sha256 must be the record's; only the arrays
    its metrics name are read, each only after its header says it fits the bytes it comes in and the
    limit; no pickled object; and every array must have the shape, type and range its metric's kind
    needs (`_misfit`). Raises `BadItems` naming the file."""
    name = Path(path).name
    try:
        data = read_bytes(path, MAX_ITEMS_BYTES)
    except BadFile as exc:
        raise BadItems(f"{name}: {str(exc).split(': ', 1)[-1]}") from None
    if items_digest(data) != sha256:
        raise BadItems(f"{name}: its sha256 is not the one its record keeps (damaged or replaced)")
    wanted = {f"ids__{spec.group}" for spec in metrics.values()}
    wanted |= {a for spec in metrics.values() for a in (spec.array, spec.labels) if a is not None}
    items = ItemScores(metrics=dict(metrics))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {info.filename: info for info in archive.infolist()}
            for key in sorted(wanted):
                if f"{key}.npy" not in members:
                    continue  # named by `_misfit` below
                value = _read_member(archive, members[f"{key}.npy"])
                if key.startswith("ids__"):
                    if value.ndim != 1 or value.dtype.kind != "U":
                        raise BadItems(f"{name}: {key} is not a list of names")
                    items.ids[key[len("ids__") :]] = value.tolist()
                else:
                    items.arrays[key] = value
    except BadItems as exc:
        raise BadItems(f"{name}: {exc}" if not str(exc).startswith(name) else str(exc)) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError) as exc:
        raise BadItems(f"{name}: not a readable .npz ({type(exc).__name__}: {str(exc)[:80]})") from None
    for metric, spec in metrics.items():
        why = _misfit(items, spec)
        if why:
            raise BadItems(f"{name}: metric {metric!r}: {why}")
    return items


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One .npy member, its header checked before any array is made: a size within the limit that the
    member's bytes can hold (a header may claim any shape), a plain numeric or text type (no objects)."""
    if info.file_size > MAX_ITEMS_BYTES:
        raise BadItems(f"{info.filename} unpacks to {info.file_size} bytes, more than {MAX_ITEMS_BYTES}")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        if dtype.hasobject or dtype.kind not in "biufU":
            raise BadItems(f"{info.filename} holds {dtype}, not numbers or names")
        size = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if size > info.file_size:
            raise BadItems(f"{info.filename} claims {shape} of {dtype}, more than its {info.file_size} bytes")
    with archive.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _misfit(items: ItemScores, spec: ItemMetric) -> str | None:
    """Why a metric's arrays do not fit its items and its kind, or None: one row per item; a `mean` and a
    `class_mean` read one value in [0, 1] per item (a hit, an AP, an IoU), a `class_mean` also one integer
    label per item; a `max_f` one curve of values in [0, 1] per item; a count metric (3, K) non-negative
    integer counts per item whose intersection is within both areas."""
    if spec.group not in items.ids:
        return f"no items of group {spec.group!r}"
    n = len(items.ids[spec.group])
    if len(set(items.ids[spec.group])) != n:
        return "item names repeat"
    if spec.kind == "class_mean" and spec.labels is None:
        return "a class mean without labels"
    for array in (spec.array, spec.labels):
        if array is None:
            continue
        if array not in items.arrays:
            return f"no array {array!r}"
        value = items.arrays[array]
        if value.dtype.kind not in "biuf" or value.ndim < 1 or len(value) != n:
            return f"array {array!r} is not {n} numeric rows"
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return f"array {array!r} holds a value that is not finite"
    values = items.arrays[spec.array]
    want = {"mean": 1, "class_mean": 1, "max_f": 2}.get(spec.kind, 3)
    if values.ndim != want:
        return f"values of shape {values.shape}, not {want}-dimensional as {spec.kind} reads them"
    labels = None if spec.labels is None else items.arrays[spec.labels]
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iu"):
        return "labels that are not one integer per item"
    if want < 3:
        if len(values) and (values.min() < 0 or values.max() > 1):
            return "values outside [0, 1]"
        return None
    if values.shape[1] != len(COUNTS) or values.dtype.kind not in "iu" or (len(values) and values.min() < 0):
        return f"counts of shape {values.shape} and type {values.dtype}, not non-negative (items, 3, classes)"
    if (values[:, 0] > np.minimum(values[:, 1], values[:, 2])).any():
        return "an intersection larger than its areas"
    if spec.classes is not None and any(not 0 <= c < values.shape[2] for c in spec.classes):
        return "a class of the subset is outside the counts"
    return None
