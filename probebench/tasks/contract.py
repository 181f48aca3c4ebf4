"""The task contract: what a probe needs from the feature cache and what it returns.

Probes are code (`probebench.tasks.probes`, one module per family); tasks are data (a probe plus a data
binding plus knobs, from `tasks.yaml`). A probe declares
- `roles`: the data it reads, each bound by a task to one dataset and split (train on one dataset, test on
  another is two roles on two datasets);
- `knobs()`: every constant that changes its numbers, with its default and domain (all of them enter a
  result's config hash);
- `needs(knobs)`: layers, token kinds, geometry mode, whether images need class labels;
- `primary(knobs)`: the metric a leaderboard shows, and whether higher is better;
- `trained(knobs)`: whether the training seed moves its numbers (else it runs once whatever `--seeds`);
- `evaluate(context)`: metrics, details, per-item outcomes and optional per-image outputs, from cached
  features only.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, get_args

from probebench.data.base import ImageDataset
from probebench.data.views.windows import WindowSpec
from probebench.tasks.knobs import Knob
from probebench.tasks.knobs import defaults as knob_defaults

Level = Literal["object", "part", "discovery"]
LEVELS: tuple[Level, ...] = get_args(Level)  # the report's order

if TYPE_CHECKING:  # the contract is read by the task catalogue, which must not import torch or the cache
    import numpy as np
    import torch

    from probebench.cache.read import ImageFeature
    from probebench.cache.store import FeatureStore
    from probebench.encoders.facts import EncoderFacts
    from probebench.stats.items import ItemScores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Needs:
    """What a task reads from the cache.

    layers: fixed layers the probe reads together (block indices, negative from the end, "last", or scaled
    "a/b" such as "4/12"), or None for one probed layer chosen by the run (`--layer`, default the last; a
    sweep gives one record per layer).
    norm: the encoder's final normalisation applied to every layer's tokens (retrieval) or not (segmentation).
    windows: the probe reads sliding windows of each image (a cached view), not whole images.
    optional: token kinds read where the encoder has them (attention keys and maps for discovery).
    """

    tokens: tuple[str, ...]
    layers: tuple[int | str, ...] | None = None
    geometry: Literal["resize", "stretch", "native"] = "resize"
    max_side: int | None = None
    labels: bool = True  # every image of the task's splits must carry a class label
    norm: bool = True
    windows: WindowSpec | None = None
    optional: tuple[str, ...] = ()
    rotated_keys: bool = True  # keys as the block's attention uses them (RoPE applied); False: before RoPE


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool = True


@dataclass
class RoleData:
    """One role's data as a probe sees it: the readable rows of a split and their features."""

    dataset: ImageDataset
    split: str
    store: FeatureStore
    rows: np.ndarray  # (N,) dataset rows whose image was read, in dataset order
    labels: np.ndarray  # (N,) class labels, -1 where the format has none per image


@dataclass
class Context:
    roles: dict[str, RoleData]
    layers: list[int]  # absolute block indices: one for single-layer probes, the fixed set otherwise
    feature: ImageFeature  # for probes that read one vector per image
    knobs: dict
    training_seed: int  # the probe's own randomness: the validation carve, initialisation, batch order
    resampling_seed: int  # the bootstrap's draws of test items, for every interval the record holds
    device: torch.device
    encoder: EncoderFacts  # the facts of the cache entry read (num_blocks, patch_size, prefix tokens, ...)
    warnings: list[str] = field(default_factory=list)  # written into the record

    def warn(self, message: str) -> None:
        """A fact about this evaluation that a reader of its number must know: one log line, and the
        record's `warnings`."""
        log.warning("%s", message)
        self.warnings.append(message)


@dataclass
class Evaluation:
    """What a probe measured. A metric the data cannot define (one class to classify, no labelled pixel,
    no ground-truth box) has no number in `metrics`: `undefined` names it and says why, and the record, the
    `done` line and the leaderboard show that reason instead of a NaN or a 100."""

    metrics: dict
    details: dict
    outputs: dict[str, bytes] = field(default_factory=dict)  # file name -> content, kept beside the record
    undefined: dict[str, str] = field(default_factory=dict)  # metric -> why it has no number
    deviations: list[str] = field(default_factory=list)  # ids of `probebench.tasks.deviations.DEVIATIONS`
    items: ItemScores | None = None  # per-item outcomes of the metrics, kept beside the record


class Probe(ABC):
    """A probe type. Subclasses set the class attributes and implement `defaults`, `needs`, `evaluate`."""

    name: ClassVar[str]
    level: ClassVar[Level]
    description: ClassVar[str]
    protocol_version: ClassVar[str]  # bump when the protocol changes in a way no knob captures
    roles: ClassVar[tuple[str, ...]] = ("train", "test")
    default_splits: ClassVar[dict[str, str]] = {"train": "train", "test": "test"}
    reads_feature: ClassVar[bool] = False  # whether --feature (cls, pooled, both) applies
    reads: ClassVar[str] = "tokens"  # what it reads otherwise (unless a `feature` knob says), for the record

    @abstractmethod
    def knobs(self) -> dict[str, Knob]:
        """Every knob with its default and its domain (`probebench.tasks.knobs`); read when called, so a
        changed constant changes the hash."""

    def defaults(self) -> dict:
        """Every knob's default value."""
        return knob_defaults(self.knobs())

    def check(self, knobs: dict) -> None:
        """Raise ValueError naming knobs whose values do not fit together (each is in its domain already):
        a warm-up longer than training, a width the heads do not divide."""
        return None

    def trained(self, knobs: dict) -> bool:
        """Whether the training seed changes the numbers (a fitted head, a carved validation split): such a
        task runs once per `--seeds` value; a training-free one (kNN, retrieval) runs once and says so."""
        return True

    @abstractmethod
    def needs(self, knobs: dict) -> Needs: ...

    @abstractmethod
    def primary(self, knobs: dict) -> Metric: ...

    @abstractmethod
    def evaluate(self, ctx: Context) -> Evaluation: ...
