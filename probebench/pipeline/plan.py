"""Planning a run: which features each dataset must provide (one request per dataset and framing, the union
of what its tasks read) and which records come out, each with the hash of everything that changes its numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from probebench.encoders.base import block_indices
from probebench.encoders.facts import EncoderFacts
from probebench.encoders.registry import EncoderEntry
from probebench.errors import UserError
from probebench.extraction.request import FeatureRequest
from probebench.geometry import SIZED_MODES
from probebench.pipeline.config import SEED, RunConfig
from probebench.results.records import record_path
from probebench.tasks.catalog import Task


def default_feature(entry: EncoderEntry, facts: EncoderFacts) -> str:
    """The entry's choice, else the class token when the model has one (DINO's kNN), else pooled patches:
    registers are never the image feature."""
    return entry.feature or ("cls" if facts.class_token else "pooled")


@dataclass
class PlannedRecord:
    """One record to produce: a task at a layer (or its fixed layers)."""

    task: Task
    layers: list[int | str]  # as requested: block indices (negative from the end), "all" or "last"
    sweep: bool  # one record per layer (`--layer`), named ...__layer<N>.json
    path: Path  # the record (for a sweep: the name its per-layer records derive from)
    feeds: dict[str, tuple[str, str]]  # role -> (dataset name, feature-group key)
    seed: int | None = SEED  # the training seed; None: the probe is training-free and runs once
    seeds_asked: tuple[int, ...] = (SEED,)  # the run's training seeds (a training-free record says so)


@dataclass
class RunPlan:
    """The feature requests (one per dataset and geometry) and the records they feed."""

    requests: dict[tuple[str, str], FeatureRequest] = field(default_factory=dict)
    targets: list[PlannedRecord] = field(default_factory=list)


def _group_key(req: FeatureRequest) -> str:
    return (
        f"{req.geometry}:{req.max_side}"
        + ("" if req.norm else ":unnormed")
        + (f":{req.input_size}px" if req.input_size else "")
        + ("" if req.rotated_keys else ":unrotated")
    )


def plan_run(entry: EncoderEntry, tasks: list[Task], cfg: RunConfig) -> RunPlan:
    """Which features each dataset must provide, and which records come out. `cfg.layers` (`--layer`)
    applies to single-layer probes: None is the last block (no suffix), else one record per layer.

    Every run option that changes a number names its record, so no result overwrites a different one: an
    explicit `--feature` (for probes that read one) adds `__feature-<f>`, a training seed other than the
    default `__seed<n>`, a resampling seed other than the default `__resample<n>`, a layer sweep
    `__layer<n>`. A trained probe gives one record per training seed (`cfg.seeds`); a training-free one
    gives one record whatever the seeds."""
    layers, feature = cfg.layers, cfg.feature
    plan = RunPlan()
    for task in tasks:
        needs = task.needs
        if needs.layers is not None and layers is not None:
            raise UserError(
                f"task {task.name!r} reads fixed layers {list(needs.layers)} (its knob); drop --layer for it"
            )
        if needs.layers is not None:
            asked: list[int | str] = list(needs.layers)
        else:
            asked = list(layers) if layers is not None else ["last"]
        # the model's own pooling is cached only when an object probe reads it
        reads_head = task.probe.reads_feature and (feature or entry.feature) == "head"
        req = FeatureRequest(
            tokens=(*needs.tokens, "head") if reads_head else needs.tokens,
            geometry=needs.geometry,
            max_side=needs.max_side,
            norm=needs.norm,
            optional=needs.optional,
            input_size=task.resolution if needs.geometry in SIZED_MODES else None,
            rotated_keys=needs.rotated_keys,
        )
        feeds = {}
        for role, (dataset, _) in task.bindings.items():
            key = (task.fed(dataset), _group_key(req))
            merged = plan.requests.get(key, FeatureRequest(layers=(), tokens=(), geometry=req.geometry))
            plan.requests[key] = FeatureRequest(
                layers=tuple(dict.fromkeys([*merged.layers, *(-1 if x == "last" else x for x in asked)])),
                tokens=tuple(sorted(set(merged.tokens) | set(req.tokens))),
                optional=tuple(sorted(set(merged.optional) | set(needs.optional))),
                norm=req.norm,
                geometry=req.geometry,
                max_side=req.max_side,
                input_size=req.input_size,
                rotated_keys=req.rotated_keys,
            )
            feeds[role] = key
        sweep = layers is not None and needs.layers is None
        suffixes = [f"feature-{feature}"] if feature is not None and task.probe.reads_feature else []
        resample = [f"resample{cfg.resampling_seed}"] if cfg.resampling_seed != SEED else []
        for seed in cfg.seeds if task.probe.trained(task.knobs) else (None,):
            named = [*suffixes, *([f"seed{seed}"] if seed not in (None, SEED) else []), *resample]
            path = record_path(entry.name, task.dataset, task.name, cfg.results_root, named)
            plan.targets.append(PlannedRecord(task, asked, sweep, path, feeds, seed, cfg.seeds))
    return plan


def expand_sweep(target: PlannedRecord, num_blocks: int) -> list[PlannedRecord]:
    """A sweep becomes one target per distinct absolute block, its record named `...__layer<N>.json`."""
    if not target.sweep:
        return [target]
    return [
        PlannedRecord(
            target.task,
            [layer],
            True,
            target.path.with_name(f"{target.path.stem}__layer{layer}.json"),
            target.feeds,
            target.seed,
            target.seeds_asked,
        )
        for layer in block_indices(target.layers, num_blocks)
    ]


def config_hash(
    target: PlannedRecord,
    layers: list[int],
    feature: str,
    resampling_seed: int,
    keys: dict[str, str],
    annotations: dict[str, str],
) -> str:
    """Everything that changes a record's numbers: the features read (encoder, weights, preprocessing,
    geometry, images), the annotations of each role's data, the task's probe, protocol version and every
    knob, the splits, the layers, the image feature, the training seed (none for a training-free probe) and
    the resampling seed."""
    task = target.task
    config = {
        "task": task.name,
        "probe": task.probe.name,
        "protocol_version": task.probe.protocol_version,
        "knobs": task.knobs,
        "bindings": {r: [d, s, keys[r], annotations[d]] for r, (d, s) in task.bindings.items()},
        "layers": "last" if target.layers == ["last"] else layers,
        "feature": feature if task.probe.reads_feature else None,
        "training_seed": target.seed,
        "resampling_seed": resampling_seed,
        **({"crops": task.crops.model_dump()} if task.crops is not None else {}),
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
