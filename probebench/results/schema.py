"""The result record: one typed, versioned JSON document per (encoder, task, dataset[, layer]).

A program can trust a record without reading prose: the schema version says how to read it, the task's
protocol version and the config hash say whether it is current, `primary` names the headline metric and its
direction, every knob that changed a number is under `knobs`, and each deliberate deviation from the papers'
protocol is an id in `deviations` (its sentence is in `probebench.tasks.deviations` and docs/protocols.md).
Every field is typed to its leaves; a record is validated when it is written and when it is read back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictFloat, StrictInt

from probebench.cache.read import ImageFeature
from probebench.data.views.crops import CropSpec
from probebench.encoders.facts import EncoderFacts
from probebench.encoders.registry import EncoderEntry
from probebench.results.details import ProbeDetails
from probebench.stats.items import ItemMetric
from probebench.tasks.contract import Level

# 1: the untyped records before the task contract (no schema_version field); 2: typed records; 3: metrics
# the data cannot define are named in `undefined` with the reason; 4: typed to the leaves (encoder facts,
# datasets, knobs, probe details, timings), deviations as ids, no protocol prose in the record; 5: the
# training and resampling seeds apart, and the per-item outcomes beside the record (`items`)
SCHEMA_VERSION = 5

# a metric: a number, an interval or curve, or a per-class table (None: the class has no defined value)
Metric = StrictInt | StrictFloat | list[StrictFloat] | dict[str, StrictFloat | None]
# a task knob's value, within the domain its knob declares (`probebench.tasks.knobs`)
Scalar = StrictBool | StrictInt | StrictFloat | str | None
KnobValue = Scalar | list[StrictInt | StrictFloat | str]
DeviationId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskInfo(_Record):
    name: str
    probe: str
    level: Level
    protocol_version: str
    description: str
    source: str  # "shipped" or the tasks file the entry came from


class EncoderInfo(EncoderEntry):
    """The registry entry that ran (as it was then: its family is not checked against today's families
    file when the record is read), the identity of its weights, and the built model's facts."""

    weights_id: str | None  # the weights file's sha256, a hub revision, or `random-init seed N`
    weights_path: str | None
    facts: EncoderFacts


class WindowInfo(_Record):
    """A sliding-window view's layout (mmseg's crop_size, stride and rescale bounds), in pixels."""

    crop: StrictInt
    stride: StrictInt
    short: StrictInt
    long: StrictInt


class DatasetInfo(_Record):
    """A dataset as a record names it (`ImageDataset.describe`); a view says what it was made from."""

    name: str
    root: str
    num_samples: StrictInt
    splits: dict[str, StrictInt]
    num_classes: StrictInt
    synthetic: StrictBool
    fingerprint: str  # sha256 over the image files' names, sizes and modification times
    warnings: list[str] = []
    view_of: str | None = None  # part crops and sliding windows: the dataset they were made from
    crops: CropSpec | None = None
    crop_counts: dict[str, StrictInt] | None = None
    windows: WindowInfo | None = None

    @property
    def filed_under(self) -> str:
        """The dataset a result is filed under in tables: a view's source dataset, else itself."""
        return self.view_of or self.name


class RoleInfo(_Record):
    """One role's data: which dataset and split, what was read, and the cache entry it came from."""

    dataset: DatasetInfo
    split: str
    n_images: StrictInt
    skipped_images: StrictInt
    skipped_files: list[str]
    cache_key: str
    cache_path: str


class Primary(_Record):
    name: str
    value: float | None  # None: the data cannot define it (`ResultRecord.undefined` says why)
    higher_is_better: bool


class PreprocessKnobs(_Record):
    """The preprocessing the features were read with (the encoder's config, the entry's overrides, the
    task's fixed size)."""

    input_size: StrictInt
    crop_pct: float
    interpolation: Literal["bilinear", "bicubic", "nearest"]
    mean: list[float]
    std: list[float]


class GeometryKnobs(_Record):
    mode: Literal["resize", "stretch", "native"]
    max_side: StrictInt | None


class Resolution(_Record):
    """The input size the features were read at, and why."""

    input_size: StrictInt | None  # None: native geometry, each image at its own size
    policy: Literal["native", "task", "encoder"]  # native; fixed by the task; the encoder's own size
    source: str | None = None  # `encoder`: where the size came from (the library's config or the entry)


class Knobs(_Record):
    """Every knob that made the number: the task's own (`task`, each within its declared domain) and what
    the run resolved (the feature and layers read, norm, preprocessing, geometry, precision, threads)."""

    task: dict[str, KnobValue]
    # an image feature (`--feature`), or what a probe reads otherwise
    feature: Literal[ImageFeature, "tokens", "encoded", "projected", "patch grids", "keys"]
    layer: StrictInt | list[StrictInt]
    layer_sweep: StrictBool  # one of a --layer sweep's records, not the task's own
    layers_cached: list[StrictInt]
    norm: StrictBool  # whether the encoder's final norm (`encoder.facts.final_norm`) was applied
    preprocess: PreprocessKnobs
    resolution: Resolution
    # where each preprocessing value came from: the library's config, the entry, or the task
    preprocess_from: dict[str, str]
    geometry: GeometryKnobs
    precision: Literal["fp32", "bf16", "fp16"]
    probe_device: str
    # CPU results move in the last digits with the thread count (reduction order), and HEAP's short
    # schedule on 100 images can move a CorLoc point with them
    threads: StrictInt


class Timings(_Record):
    extract_s: float
    evaluate_s: float
    features_cached: StrictBool  # every role's features came from the cache
    images_per_s: float | None  # extraction throughput; None when nothing was extracted


class GitInfo(_Record):
    commit: str | None  # None outside a git checkout (an installed wheel)
    dirty: StrictBool | None


class ItemsInfo(_Record):
    """The per-item outcomes beside the record (`probebench.stats.items`): the file, its sha256 (checked
    when read: a file that does not match is named and the record recomputed), each item group's size, and
    how each metric is made from the items."""

    file: Literal["items.npz"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    groups: dict[str, StrictInt]
    metrics: dict[str, ItemMetric]


class ResultRecord(_Record):
    schema_version: Literal[5] = SCHEMA_VERSION
    encoder: EncoderInfo
    task: TaskInfo
    dataset: DatasetInfo  # the dataset results are filed under (the test role's)
    roles: dict[str, RoleInfo]
    metrics: dict[str, Metric]
    primary: Primary
    probe: ProbeDetails  # what the probe chose and how it got there (chosen C or epoch, curves)
    knobs: Knobs
    # the probe's seed (validation carve, initialisation, batch order); None: the probe is training-free
    # and no seed enters its numbers (kNN, retrieval, LOST, TokenCut)
    training_seed: StrictInt | None
    resampling_seed: StrictInt  # the bootstrap's draws of test items, for every interval here
    items: ItemsInfo | None = None  # None: no metric of this record is made of per-item outcomes
    timings: Timings
    outputs: list[str] = []  # files beside the record, relative to the record's folder
    # each deliberate deviation from the papers' protocol, by id (`probebench.tasks.deviations`)
    deviations: list[DeviationId] = []
    warnings: list[str] = []  # what a reader of the numbers must know (k above the training set, ...)
    undefined: dict[str, str] = {}  # metrics the data cannot define (one class, no labelled pixel): why
    config_hash: str
    versions: dict[str, str | None]
    git: GitInfo
    created: str | None = None
    _path: Path | None = PrivateAttr(default=None)  # the file it was read from (`read_record`)

    @property
    def path(self) -> Path | None:
        """The file the record was read from; None for one built in memory."""
        return self._path

    @property
    def synthetic(self) -> bool:
        return any(r.dataset.synthetic for r in self.roles.values())
