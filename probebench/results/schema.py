"""The result record: one typed, versioned JSON document per (encoder, task, dataset[, layer]).

A program can trust a record without reading prose: the schema version says how to read it, the task's
protocol version and the config hash say whether it is current, `primary` names the headline metric and its
direction, and every knob that changed a number is under `knobs`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

# 1: the untyped records before the task contract (no schema_version field); 2: typed records; 3: metrics
# the data cannot define are named in `undefined` with the reason (they were NaN, or a trivial 100)
SCHEMA_VERSION = 3


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskInfo(_Record):
    name: str
    probe: str
    level: str  # object, part or discovery
    protocol_version: str
    description: str
    source: str  # "shipped" or the tasks file the entry came from


class RoleInfo(_Record):
    """One role's data: which dataset and split, what was read, and the cache entry it came from."""

    dataset: dict[str, Any]  # ImageDataset.describe(): name, root, counts, synthetic, fingerprint
    split: str
    n_images: int
    skipped_images: int
    skipped_files: list[str]
    cache_key: str
    cache_path: str


class Primary(_Record):
    name: str
    value: float | None  # None: the data cannot define it (`ResultRecord.undefined` says why)
    higher_is_better: bool


class ResultRecord(_Record):
    schema_version: int = SCHEMA_VERSION
    encoder: dict[str, Any]  # the registry entry, weights identity and the encoder's facts
    task: TaskInfo
    dataset: dict[str, Any]  # the dataset results are filed under (the test role's)
    roles: dict[str, RoleInfo]
    metrics: dict[str, Any]
    primary: Primary
    probe: dict[str, Any]  # what the probe chose and how it got there (chosen C or epoch, curves)
    knobs: dict[str, Any]
    seed: int
    timings: dict[str, Any]
    outputs: list[str] = []  # files beside the record, relative to the record's folder
    warnings: list[str] = []  # what a reader of the numbers must know (k above the training set, ...)
    undefined: dict[str, str] = {}  # metrics the data cannot define (one class, no labelled pixel): why
    config_hash: str
    versions: dict[str, str | None]
    git: dict[str, Any]
    created: str | None = None

    @property
    def synthetic(self) -> bool:
        return any(r.dataset.get("synthetic") for r in self.roles.values())
