"""What a record holds: the encoder and its weights, the task and its protocol version, each role's data, the
metrics, and every knob that made the number (layer, token, pooling, resolution, precision, norm, threads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from probebench.encoders.load import ResolvedEncoder
from probebench.extraction.request import Extraction
from probebench.geometry import SIZED_MODES
from probebench.pipeline.config import SEED
from probebench.pipeline.plan import PlannedRecord
from probebench.results.records import git_commit, read_record, versions
from probebench.results.schema import (
    DatasetInfo,
    EncoderInfo,
    GeometryKnobs,
    GitInfo,
    ItemsInfo,
    Knobs,
    PreprocessKnobs,
    Primary,
    Resolution,
    ResultRecord,
    RoleInfo,
    TaskInfo,
    Timings,
)
from probebench.stats.items import ITEMS_FILE, items_digest
from probebench.tasks.catalog import Task
from probebench.tasks.contract import Context, Evaluation


@dataclass
class RecordOutcome:
    encoder: str
    task: str
    dataset: str
    status: Literal["done", "skipped"]
    path: Path
    metrics: dict
    primary: str = ""
    layer: str = ""
    undefined: dict[str, str] = field(default_factory=dict)  # metric -> why the data cannot define it
    note: str = ""  # said after the number: a training-free probe's one record for several seeds
    seed: str = ""  # `seed1`: the training seed, where the run asked for others than the default

    def line(self) -> str:
        """`done     <encoder> x <dataset> x <task>[ x seed<n>][ x layer<n>]: <primary>=<value> [<95%
        interval>]`, or `<primary>=undefined (<why>)`."""
        head = f"{self.status:8s} {self.encoder} x {self.dataset} x {self.task}"
        head += "".join(f" x {part}" for part in (self.seed, self.layer) if part) + ": "
        value = self.metrics.get(self.primary)
        if self.primary in self.undefined:
            return f"{head}{self.primary}=undefined ({self.undefined[self.primary]})"
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            return f"{head}{self.primary}=(missing)"
        ci = self.metrics.get(f"{self.primary}_ci95")
        interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if isinstance(ci, list | tuple) and len(ci) == 2 else ""
        return f"{head}{self.primary}={value:.2f}{interval}" + (f" ({self.note})" if self.note else "")


def build_record(
    spec: ResolvedEncoder,
    target: PlannedRecord,
    layers: list[int],
    feature: str,
    evaluation: Evaluation,
    results: dict[tuple[str, str], Extraction],
    ctx: Context,
    described: dict[str, dict],
    chash: str,
    timings: Timings,
    device,
) -> ResultRecord:
    """The record of one evaluation, in three steps: each role's data (`role_infos`), every knob that made
    the number (`record_knobs`), then the record around them."""
    task, entry = target.task, spec.entry
    facts = results[next(iter(target.feeds.values()))].store.encoder_facts
    roles = role_infos(target, results, ctx, described)
    value = evaluation.metrics.get(task.primary.name)
    items = items_info(evaluation)
    return ResultRecord(
        encoder=EncoderInfo(
            **dict(entry),
            weights_id=spec.weights_id,
            weights_path=spec.weights_path,
            facts=facts,
        ),
        task=TaskInfo(
            name=task.name,
            probe=task.probe.name,
            level=task.level,
            protocol_version=task.probe.protocol_version,
            description=task.description,
            source=task.source,
        ),
        dataset=roles[list(roles)[-1] if "test" not in roles else "test"].dataset,
        roles=roles,
        metrics=evaluation.metrics,
        primary=Primary(
            name=task.primary.name,
            value=float(value) if value is not None else None,
            higher_is_better=task.primary.higher_is_better,
        ),
        probe=evaluation.details,
        knobs=record_knobs(spec, target, layers, feature, results, device),
        training_seed=target.seed,
        resampling_seed=ctx.resampling_seed,
        items=items,
        timings=timings,
        outputs=sorted(evaluation.outputs),
        deviations=list(dict.fromkeys(evaluation.deviations)),
        undefined=dict(evaluation.undefined),
        warnings=list(
            dict.fromkeys([*(w for r in roles.values() for w in r.dataset.warnings), *ctx.warnings])
        ),
        config_hash=chash,
        versions=versions(),
        git=GitInfo(**git_commit()),
    )


def items_info(evaluation: Evaluation) -> ItemsInfo | None:
    """The per-item outcomes as a file among the evaluation's outputs, and the record's account of it.

    Each metric made of items must come out of them as the probe computed it: a mismatch is a bug in a
    probe's bookkeeping, and a comparison on such items would be a wrong number that looks right."""
    items = evaluation.items
    if items is None or not items.metrics:
        return None
    for name in items.metrics:
        ours, theirs = items.estimate(name), evaluation.metrics.get(name)
        if not isinstance(theirs, int | float) or not math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-9):
            raise AssertionError(f"per-item outcomes give {name} = {ours}, the probe {theirs}")
    data = items.to_bytes()
    evaluation.outputs[ITEMS_FILE] = data
    groups = {g: len(ids) for g, ids in items.ids.items()}
    return ItemsInfo(file=ITEMS_FILE, sha256=items_digest(data), groups=groups, metrics=items.metrics)


def role_infos(
    target: PlannedRecord,
    results: dict[tuple[str, str], Extraction],
    ctx: Context,
    described: dict[str, dict],
) -> dict[str, RoleInfo]:
    """Each role's data as the record names it: the dataset, the split, the images read and skipped, and the
    cache entry its features came from."""
    roles = {}
    for role, (_, split) in target.task.bindings.items():
        res = results[target.feeds[role]]
        roles[role] = RoleInfo(
            dataset=DatasetInfo.model_validate(described[ctx.roles[role].dataset.name]),
            split=split,
            n_images=len(ctx.roles[role].rows),
            skipped_images=len(res.skipped),
            skipped_files=res.skipped[:100],
            cache_key=res.store.key,
            cache_path=str(res.store.root),
        )
    return roles


def record_knobs(
    spec: ResolvedEncoder,
    target: PlannedRecord,
    layers: list[int],
    feature: str,
    results: dict[tuple[str, str], Extraction],
    device,
) -> Knobs:
    """The task's own knobs, and what the run resolved: the feature and layers read, norm, preprocessing
    and where each value came from, resolution, geometry, precision, threads."""
    task = target.task
    extraction = results[next(iter(target.feeds.values()))]
    key_parts = extraction.store.key_parts
    return Knobs(
        task=task.knobs,
        # what the probe read: the run's image feature, a probe's own `feature` knob (part retrieval:
        # encoded, projected, cls), or what it reads otherwise (tokens, patch grids, keys)
        feature=feature if task.probe.reads_feature else task.knobs.get("feature", task.probe.reads),
        layer=layers[0] if len(layers) == 1 else layers,
        layer_sweep=target.sweep,
        layers_cached=extraction.layers,
        norm=key_parts["norm"],
        preprocess=PreprocessKnobs.model_validate(key_parts["preprocess"]),
        resolution=_resolution(task, spec, key_parts),
        preprocess_from=spec.provenance
        | ({"input_size": "fixed by the task"} if task.resolution is not None else {}),
        geometry=GeometryKnobs.model_validate(key_parts["geometry"]),
        precision=extraction.precision,
        probe_device=str(device),
        threads=torch.get_num_threads(),
    )


def _resolution(task: Task, spec: ResolvedEncoder, key_parts: dict) -> Resolution:
    """The input size the features were read at and why: the task fixed it, or it is the encoder's own
    (and then where that value came from)."""
    if key_parts["geometry"]["mode"] not in SIZED_MODES:
        return Resolution(input_size=None, policy="native")
    size = key_parts["preprocess"]["input_size"]
    if task.resolution is not None:
        return Resolution(input_size=size, policy="task")
    origin = spec.provenance.get("input_size", "the encoder's configuration")
    return Resolution(input_size=size, policy="encoder", source=origin)


def outcome_of(
    spec: ResolvedEncoder, target: PlannedRecord, status: str, metrics: dict, undefined: dict
) -> RecordOutcome:
    layer = f"layer{target.layers[0]}" if target.sweep else ""
    note, seed = "", ""
    if target.seed is None and target.seeds_asked != (SEED,):
        note = f"training-free: one record for seeds {','.join(map(str, target.seeds_asked))}"
    elif target.seed is not None and target.seeds_asked != (SEED,):
        seed = f"seed{target.seed}"
    return RecordOutcome(
        spec.entry.name,
        target.task.name,
        target.task.dataset,
        status,
        target.path,
        metrics,
        target.task.primary.name,
        layer,
        dict(undefined),
        note,
        seed,
    )


def skipped_outcome(spec: ResolvedEncoder, target: PlannedRecord) -> RecordOutcome:
    record = read_record(target.path)  # `finished` has read it: a damaged one is recomputed, not skipped
    return outcome_of(spec, target, "skipped", record.metrics, record.undefined)
