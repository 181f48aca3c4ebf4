"""A run is encoder x task: plan, make sure the features exist, evaluate, write the record.

This is the one place that sequences the pieces; the CLI and the Python API both call it. `run_one` is a
short loop over those named steps for one encoder and a list of tasks, so that tasks reading the same
dataset in the same geometry share one extraction (one cache entry holding the union of what they read).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from probebench import progress
from probebench.cache.store import CorruptShard, FeatureStore
from probebench.data.base import ImageDataset
from probebench.data.crops import make_view, no_crops_in
from probebench.data.lookup import get_dataset
from probebench.data.windows import window_view
from probebench.encoders.base import block_index
from probebench.encoders.load import Spec, resolve
from probebench.errors import UserError
from probebench.extract import Options, Request, Result, device_and_precision, extract, store_for
from probebench.paths import check_writable
from probebench.registry import EncoderEntry
from probebench.results.records import finished, git_commit, read_record, record_path, versions, write_record
from probebench.results.schema import Primary, ResultRecord, RoleInfo, TaskInfo
from probebench.tasks.base import Context, Evaluation, RoleData
from probebench.tasks.features import split_rows
from probebench.tasks.spec import Task

log = logging.getLogger(__name__)
SEED = 0  # seeds the validation carve, the attentive probe and the bootstrap; recorded in every record


@dataclass
class Outcome:
    encoder: str
    task: str
    dataset: str
    status: str  # "done", "skipped"
    path: Path
    metrics: dict
    primary: str = ""
    layer: str = ""
    undefined: dict[str, str] = field(default_factory=dict)  # metric -> why the data cannot define it

    def line(self) -> str:
        """`done     <encoder> x <dataset> x <task>[ x layer<n>]: <primary>=<value> [<95% interval>]`, or
        `<primary>=undefined (<why>)`."""
        head = f"{self.status:8s} {self.encoder} x {self.dataset} x {self.task}"
        head += f" x {self.layer}: " if self.layer else ": "
        value = self.metrics.get(self.primary)
        if self.primary in self.undefined:
            return f"{head}{self.primary}=undefined ({self.undefined[self.primary]})"
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            return f"{head}{self.primary}=(missing)"
        ci = self.metrics.get(f"{self.primary}_ci95")
        interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if isinstance(ci, list | tuple) and len(ci) == 2 else ""
        return f"{head}{self.primary}={value:.2f}{interval}"


def available_encoders(registry: dict[str, EncoderEntry]) -> list[str]:
    """Registry encoders whose weights are on this machine (cache, package or random init)."""
    return [
        n
        for n, e in registry.items()
        if resolve(e, strict_available=False, download=False).weights_id != "unavailable"
    ]


def default_feature(entry: EncoderEntry, encoder: dict) -> str:
    """The entry's choice, else the class token when the model has one (DINO's kNN), else pooled patches.
    `encoder`: the encoder's facts (`Encoder.describe`); registers are never the image feature."""
    return entry.feature or ("cls" if encoder.get("class_token") else "pooled")


# -- step 1: plan ---------------------------------------------------------------------------------------
@dataclass
class Target:
    """One record to produce: a task at a layer (or its fixed layers)."""

    task: Task
    layers: list[int | str]  # as requested: block indices (negative from the end), "all" or "last"
    sweep: bool  # one record per layer (`--layer`), named ...__layer<N>.json
    path: Path  # the record (for a sweep: the name its per-layer records derive from)
    feeds: dict[str, tuple[str, str]]  # role -> (dataset name, feature-group key)


@dataclass
class Plan:
    """The feature requests (one per dataset and geometry) and the records they feed."""

    requests: dict[tuple[str, str], Request] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)


def _group_key(req: Request) -> str:
    return (
        f"{req.geometry}:{req.max_side}"
        + ("" if req.norm else ":unnormed")
        + (f":{req.input_size}px" if req.input_size else "")
        + ("" if req.rotated_keys else ":unrotated")
    )


def plan_run(
    entry: EncoderEntry,
    tasks: list[Task],
    layers: tuple[int | str, ...] | None,
    results_root: Path | None,
    feature: str | None = None,
    seed: int = SEED,
) -> Plan:
    """Which features each dataset must provide, and which records come out. `layers` (from `--layer`)
    applies to single-layer probes: None is the last block (no suffix), else one record per layer.

    Every run option that changes a number names its record, so no result overwrites a different one: an
    explicit `--feature` (for probes that read one) adds `__feature-<f>`, a seed other than the default
    `__seed<n>`, a layer sweep `__layer<n>`."""
    plan = Plan()
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
        req = Request(
            tokens=(*needs.tokens, "head") if reads_head else needs.tokens,
            geometry=needs.geometry,
            max_side=needs.max_side,
            norm=needs.norm,
            optional=needs.optional,
            input_size=task.resolution if needs.geometry == "resize" else None,
            rotated_keys=needs.rotated_keys,
        )
        feeds = {}
        for role, (dataset, _) in task.bindings.items():
            key = (task.fed(dataset), _group_key(req))
            merged = plan.requests.get(key, Request(layers=(), tokens=(), geometry=req.geometry))
            plan.requests[key] = Request(
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
        suffixes += [f"seed{seed}"] if seed != SEED else []
        path = record_path(entry.name, task.dataset, task.name, results_root, suffixes)
        plan.targets.append(Target(task, asked, sweep, path, feeds))
    return plan


def _absolute(layers: list[int | str], num_blocks: int) -> list[int]:
    """Requested layers -> absolute block indices ("all" is every block, "last" the last, "a/b" scaled)."""
    if "all" in layers:
        return list(range(num_blocks))
    # In the declared order (a fixed-layer probe concatenates them in that order), each block once.
    return list(dict.fromkeys(block_index(x, num_blocks) for x in layers))


def _expand(target: Target, num_blocks: int) -> list[Target]:
    """A sweep becomes one target per distinct absolute block, its record named `...__layer<N>.json`."""
    if not target.sweep:
        return [target]
    return [
        Target(
            target.task,
            [layer],
            True,
            target.path.with_name(f"{target.path.stem}__layer{layer}.json"),
            target.feeds,
        )
        for layer in _absolute(target.layers, num_blocks)
    ]


def feature_identity(store: FeatureStore) -> str:
    """What the features read are, independent of which cache entry served them: the cache key's inputs less
    the token kinds and layers held (a wider entry holds the same features for the layers asked)."""
    parts = json.loads((store.root / "key.json").read_text())
    same = {k: v for k, v in parts.items() if k not in ("key", "tokens", "layers")}
    return hashlib.sha256(json.dumps(same, sort_keys=True, default=str).encode()).hexdigest()


def config_hash(
    target: Target,
    layers: list[int],
    feature: str,
    seed: int,
    keys: dict[str, str],
    annotations: dict[str, str],
) -> str:
    """Everything that changes a record's numbers: the features read (encoder, weights, preprocessing,
    geometry, images), the annotations of each role's data, the task's probe, protocol version and every
    knob, the splits, the layers, the image feature and the seed."""
    task = target.task
    config = {
        "task": task.name,
        "probe": task.probe.name,
        "protocol_version": task.probe.protocol_version,
        "knobs": task.knobs,
        "bindings": {r: [d, s, keys[r], annotations[d]] for r, (d, s) in task.bindings.items()},
        "layers": "last" if target.layers == ["last"] else layers,
        "feature": feature if task.probe.reads_feature else None,
        "seed": seed,
        **({"crops": task.crops.model_dump()} if task.crops is not None else {}),
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


# -- step 2: features -----------------------------------------------------------------------------------
def open_stores(
    spec: Spec, plan: Plan, datasets: dict[str, ImageDataset], opts: Options
) -> dict[tuple[str, str], FeatureStore]:
    """The cache entry of every planned request (keying fingerprints each dataset's files: done once)."""
    _, precision, _ = device_and_precision(opts, spec.entry.precision)
    return {k: store_for(spec, datasets[k[0]], r, opts, precision) for k, r in plan.requests.items()}


def ensure_features(
    spec: Spec,
    plan: Plan,
    stores: dict[tuple[str, str], FeatureStore],
    datasets: dict[str, ImageDataset],
    opts: Options,
) -> dict[tuple[str, str], Result]:
    """Fill every planned entry (complete entries return at once and build no model)."""
    return {k: extract(spec, datasets[k[0]], r, opts, store=stores[k]) for k, r in plan.requests.items()}


# -- step 3: evaluate -----------------------------------------------------------------------------------
def _context(
    target: Target,
    layers: list[int],
    results: dict[tuple[str, str], Result],
    datasets: dict[str, ImageDataset],
    feature: str,
    seed: int,
    device,
) -> Context:
    roles = {}
    needs_labels = target.task.needs.labels
    for role, (_, split) in target.task.bindings.items():
        store = results[target.feeds[role]].store
        rows, labels = split_rows(store, datasets[target.feeds[role][0]], split, needs_labels)
        roles[role] = RoleData(datasets[target.feeds[role][0]], split, store, rows, labels)
    spaces = {tuple(r.dataset.classes) for r in roles.values()}
    if needs_labels and len(spaces) > 1:
        names = ", ".join(f"{role}={r.dataset.name}" for role, r in roles.items())
        raise UserError(
            f"task {target.task.name!r}: its roles' datasets ({names}) have different class lists, so class "
            "indices would not match; bind datasets with the same classes (or the same `classes:` override)"
        )
    # the facts of the cache entry this task reads (which keys it holds differs between entries)
    encoder = results[next(iter(target.feeds.values()))].store.manifest["encoder"]
    ctx = Context(roles, layers, feature, dict(target.task.knobs), seed, device, encoder)
    if needs_labels and {"train", "test"} <= set(roles):
        _check_test_classes(ctx)
    return ctx


def _check_test_classes(ctx: Context) -> None:
    """Test images of a class no training image has can never be predicted right: say so."""
    train, test = ctx.roles["train"], ctx.roles["test"]
    unseen = sorted(set(test.labels.tolist()) - set(train.labels.tolist()) - {-1})
    if unseen:
        names = [test.dataset.classes[c] for c in unseen]
        n = int(np.isin(test.labels, unseen).sum())
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        ctx.warn(
            f"{n} test image(s) belong to {len(names)} class(es) with no training image ({shown}); "
            "they count as errors"
        )


def evaluate_with_retry(
    spec: Spec,
    plan: Plan,
    target: Target,
    make_context: Callable[[], Context],
    results: dict[tuple[str, str], Result],
    datasets: dict[str, ImageDataset],
    opts: Options,
) -> tuple[Evaluation, Context]:
    """Evaluate once; a shard that fails its checksum is forgotten, recomputed, and the evaluation re-run on
    a context made anew. Returns the evaluation and the context it ran on."""
    for attempt in range(2):
        ctx = make_context()
        try:
            return target.task.probe.evaluate(ctx), ctx
        except CorruptShard as exc:
            if attempt:
                raise
            log.warning("%s; recomputing it", exc)
            for key, res in results.items():
                if res.store.root == exc.store_root:
                    res.store.invalidate(exc.shard)
                    results[key] = extract(spec, datasets[key[0]], plan.requests[key], opts, store=res.store)
    raise AssertionError("unreachable")


# -- step 4: record -------------------------------------------------------------------------------------
_TOKEN_TEXT = {
    "cls": "class token",
    "pooled": "mean of patch tokens",
    "both": "class token and mean of patch tokens, concatenated",
    "head": "the model's own pooling of its last block (timm forward_head, pre-logits)",
    "tokens": "all tokens (prefix tokens and patch tokens)",
    "encoded": "mean of the final-normed patch tokens (CNNs: global average pool)",
    "projected": "projection head output",
    "patch grids": "patch-token grids of the probed layers, before the final normalisation",
    "keys": "last block's keys and class attention (patch tokens where there are no keys), and patch tokens",
}


def build_record(
    spec: Spec,
    target: Target,
    layers: list[int],
    feature: str,
    seed: int,
    evaluation: Evaluation,
    results: dict[tuple[str, str], Result],
    ctx: Context,
    described: dict[str, dict],
    chash: str,
    timings: dict,
    device,
) -> ResultRecord:
    task, entry = target.task, spec.entry
    any_result = results[next(iter(target.feeds.values()))]
    info = any_result.store.manifest["encoder"]
    # what the probe read: the run's image feature, a probe's own `feature` knob (part retrieval: encoded,
    # projected, cls), or tokens
    read = feature if task.probe.reads_feature else task.knobs.get("feature", task.probe.reads)
    primary = task.primary
    roles = {}
    for role, (_, split) in task.bindings.items():
        res = results[target.feeds[role]]
        roles[role] = RoleInfo(
            dataset=described[ctx.roles[role].dataset.name],
            split=split,
            n_images=len(ctx.roles[role].rows),
            skipped_images=len(res.skipped),
            skipped_files=res.skipped[:100],
            cache_key=res.store.manifest["key"],
            cache_path=str(res.store.root),
        )
    key_parts = json.loads((any_result.store.root / "key.json").read_text())
    value = evaluation.metrics.get(primary.name)
    return ResultRecord(
        encoder={
            **entry.model_dump(mode="json"),
            "weights_id": spec.weights_id,
            "weights_path": spec.weights_path,
            **{k: info[k] for k in info if k != "preprocess"},
        },
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
            name=primary.name,
            value=float(value) if value is not None else None,
            higher_is_better=primary.higher_is_better,
        ),
        probe=evaluation.details,
        knobs={
            **task.knobs,  # first: what the run resolved (layers, geometry) is written over the raw knobs
            "feature": read,
            "layer": layers[0] if len(layers) == 1 else layers,
            "layer_sweep": target.sweep,  # one of a --layer sweep's records, not the task's own
            "layers_cached": any_result.layers,
            "norm": key_parts["norm"],
            "token": _TOKEN_TEXT[read],
            "final_norm": info["final_norm"],
            "preprocess": key_parts["preprocess"],
            "resolution": _resolution(task, spec, key_parts),
            # where each preprocessing value came from: the library's config, the entry, or the task
            "preprocess_from": spec.provenance
            | ({"input_size": "fixed by the task"} if task.resolution is not None else {}),
            "geometry": key_parts["geometry"],
            "precision": any_result.precision,
            "probe_device": str(device),
            # CPU results move in the last digits with the thread count (reduction order), and HEAP's short
            # schedule on 100 images can move a CorLoc point with them
            "threads": torch.get_num_threads(),
        },
        seed=seed,
        timings=timings,
        outputs=sorted(evaluation.outputs),
        undefined=dict(evaluation.undefined),
        warnings=list(
            dict.fromkeys(
                [*(w for r in roles.values() for w in r.dataset.get("warnings", [])), *ctx.warnings]
            )
        ),
        config_hash=chash,
        versions=versions(),
        git=git_commit(),
    )


def _resolution(task: Task, spec: Spec, key_parts: dict) -> dict:
    """The input size the features were read at and why: the task fixed it, or it is the encoder's own
    (and then where that value came from)."""
    if key_parts["geometry"]["mode"] != "resize":
        return {"input_size": None, "policy": "native: each image at its own size"}
    size = key_parts["preprocess"]["input_size"]
    if task.resolution is not None:
        return {"input_size": size, "policy": f"fixed by the task for every encoder ({task.resolution} px)"}
    origin = spec.provenance.get("input_size", "the encoder's configuration")
    return {"input_size": size, "policy": f"the encoder's own evaluation size, from {origin}"}


# -- the loop -------------------------------------------------------------------------------------------
def run_one(
    spec: Spec,
    tasks: Task | list[Task],
    dataset: ImageDataset | None,
    opts: Options,
    *,
    layers: tuple[int | str, ...] | None = None,
    feature: str | None = None,
    seed: int = SEED,
    force: bool = False,
    results_root: Path | None = None,
    datasets: Path | None = None,
    data_root: Path | None = None,
    preloaded: dict[str, ImageDataset] | None = None,
    report: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Tasks on one encoder: plan, features, evaluate, record. `dataset` (when given) replaces every role's
    dataset (`--dataset`); otherwise each task's datasets are looked up by name.

    `layers=None` evaluates the last block (record `<encoder>__<dataset>__<task>.json`); given layers (block
    indices, negative from the end, or "all") give one record per layer, `...__<task>__layer<n>.json`.
    `feature` (cls, pooled, both) overrides the entry's default image feature for probes that read one.
    """
    tasks = [tasks] if isinstance(tasks, Task) else list(tasks)
    if dataset is not None:
        tasks = [t.on_dataset(dataset.name) for t in tasks]
    git_commit()  # pin the commit now: the code that runs is the code imported when the run starts
    loaded = with_views(tasks, preloaded or _load_datasets(tasks, dataset, datasets, data_root))
    plan, stores, notes = _planned(spec, tasks, loaded, opts, layers, feature, seed, results_root)
    device, _, _ = device_and_precision(opts)
    asked_feature = feature or "default"
    if not force:
        done = _all_finished(spec, plan, stores, notes, asked_feature, seed)
        if done is not None:
            for outcome in done if report is not None else []:
                report(outcome)
            return done
    t0 = time.perf_counter()
    results = ensure_features(spec, plan, stores, loaded, opts)
    t_extract = time.perf_counter() - t0
    info = next(iter(results.values())).store.manifest["encoder"]
    chosen = feature or default_feature(spec.entry, info)
    keys = {k: feature_identity(r.store) for k, r in results.items()}
    described = {name: ds.describe() for name, ds in loaded.items()}
    outcomes = []
    for target in [t for x in plan.targets for t in _expand(x, info["num_blocks"])]:
        at = _absolute(target.layers, info["num_blocks"])
        chash = config_hash(target, at, asked_feature, seed, _role_keys(target, keys), notes)
        if not force and finished(target.path, chash):
            outcomes.append(_skipped(spec, target))
            if report is not None:
                report(outcomes[-1])
            continue
        t1 = time.perf_counter()
        what = f"{target.task.name}: {spec.entry.name} x {target.task.dataset}"
        with progress.stage(what + (f" x layer {at[0]}" if target.sweep else ""), unit="step"):
            evaluation, ctx = evaluate_with_retry(
                spec,
                plan,
                target,
                lambda target=target, at=at: _context(target, at, results, loaded, chosen, seed, device),
                results,
                loaded,
                opts,
            )
        timings = {
            "extract_s": round(t_extract, 3),
            "evaluate_s": round(time.perf_counter() - t1, 3),
            "features_cached": all(r.cached for r in results.values()),
            "images_per_s": next((r.images_per_s for r in results.values() if r.images_per_s), None),
        }
        record = build_record(
            spec, target, at, chosen, seed, evaluation, results, ctx, described, chash, timings, device
        )
        write_record(target.path, record, evaluation.outputs)
        outcomes.append(_outcome(spec, target, "done", record.metrics, record.undefined))
        if report is not None:
            report(outcomes[-1])
    return outcomes


def _planned(
    spec: Spec,
    tasks: list[Task],
    loaded: dict[str, ImageDataset],
    opts: Options,
    layers: tuple[int | str, ...] | None,
    feature: str | None,
    seed: int,
    results_root: Path | None,
) -> tuple[Plan, dict[tuple[str, str], FeatureStore], dict[str, str]]:
    """The plan, its cache entries and each dataset's annotation fingerprint: what decides whether a
    record is finished."""
    plan = plan_run(spec.entry, tasks, layers, results_root, feature, seed)
    notes = {name: ds.annotation_fingerprint() for name, ds in loaded.items()}
    return plan, open_stores(spec, plan, loaded, opts), notes


def finished_outcomes(
    spec: Spec,
    tasks: list[Task],
    loaded: dict[str, ImageDataset],
    opts: Options,
    *,
    layers: tuple[int | str, ...] | None = None,
    feature: str | None = None,
    seed: int = SEED,
    results_root: Path | None = None,
) -> list[Outcome] | None:
    """The skipped outcomes when every record `run_one` would write is finished, else None; reads manifests
    and records only (a launcher asks this before it submits a job)."""
    plan, stores, notes = _planned(spec, tasks, loaded, opts, layers, feature, seed, results_root)
    return _all_finished(spec, plan, stores, notes, feature or "default", seed)


def _all_finished(
    spec: Spec,
    plan: Plan,
    stores: dict[tuple[str, str], FeatureStore],
    notes: dict[str, str],
    feature: str,
    seed: int,
) -> list[Outcome] | None:
    """The skipped outcomes when every planned record is already finished, else None; nothing is extracted
    and no model is built. Sweeps and negative layers need the block count, known once any planned cache
    entry has been started; the last block and non-negative layers do not."""
    num_blocks = next(
        (s.manifest["encoder"]["num_blocks"] for s in stores.values() if "encoder" in s.manifest), None
    )
    relative = any(
        t.sweep or any(isinstance(x, str) and x != "last" or isinstance(x, int) and x < 0 for x in t.layers)
        for t in plan.targets
    )
    if num_blocks is None and relative:
        return None
    keys = {k: feature_identity(s) for k, s in stores.items()}
    checks = [
        (t, config_hash(t, _absolute(t.layers, num_blocks or 0), feature, seed, _role_keys(t, keys), notes))
        for target in plan.targets
        for t in _expand(target, num_blocks or 0)
    ]
    if all(finished(t.path, h) for t, h in checks):
        return [_skipped(spec, t) for t, _ in checks]
    return None


def _role_keys(target: Target, keys: dict[tuple[str, str], str]) -> dict[str, str]:
    return {role: keys[feed] for role, feed in target.feeds.items()}


def _outcome(spec: Spec, target: Target, status: str, metrics: dict, undefined: dict) -> Outcome:
    layer = f"layer{target.layers[0]}" if target.sweep else ""
    return Outcome(
        spec.entry.name,
        target.task.name,
        target.task.dataset,
        status,
        target.path,
        metrics,
        target.task.primary.name,
        layer,
        dict(undefined),
    )


def _skipped(spec: Spec, target: Target) -> Outcome:
    record = read_record(target.path)  # `finished` has read it: a damaged one is recomputed, not skipped
    return _outcome(spec, target, "skipped", record.metrics, record.undefined)


def with_views(tasks: list[Task], loaded: dict[str, ImageDataset]) -> dict[str, ImageDataset]:
    """`loaded` plus the views tasks read (part crops, sliding windows), each made once, by name."""
    out = dict(loaded)
    for task in tasks:
        for dataset, split in task.bindings.values():
            fed = task.fed(dataset)
            if fed not in out and task.crops is not None:
                out[fed] = make_view(loaded[dataset], task.crops)
            elif fed not in out and (windows := task.needs.windows) is not None:
                out[fed] = window_view(loaded[dataset], windows)
            if task.crops is not None and split not in out[fed].splits:  # no image of the split has one
                raise UserError(no_crops_in(out[fed], split))
    return out


def _load_datasets(
    tasks: list[Task], given: ImageDataset | None, datasets: Path | None, data_root: Path | None
) -> dict[str, ImageDataset]:
    if given is not None:
        return {given.name: given}
    names = dict.fromkeys(d for t in tasks for d, _ in t.bindings.values())  # in task order
    return {n: get_dataset(n, datasets, data_root) for n in names}


def prepare_data(
    tasks: list[Task], dataset: str | None, datasets: Path | None, data_root: Path | None
) -> tuple[list[Task], dict[str, ImageDataset]]:
    """The tasks (bound to `dataset` when given: a name or a folder, whose own name then names the records)
    and every dataset and view they read, each made once (a generated dataset is written here)."""
    if dataset is not None:
        given = get_dataset(dataset, datasets, data_root)
        tasks = [t.on_dataset(given.name) for t in tasks]
        return tasks, with_views(tasks, {given.name: given})
    return tasks, with_views(tasks, _load_datasets(tasks, None, datasets, data_root))


def check_task_data(tasks: list[Task], datasets: Path | None, data_root: Path | None) -> list[str]:
    """One line per task whose data `run` would refuse: a dataset that does not exist or does not read,
    crops naming keypoints it lacks or a source it has not, windows it cannot be cut into. Each dataset is
    read once; `validate --tasks` says this before any run does."""
    from probebench.data.checks import check_label_values

    loaded: dict[str, ImageDataset | UserError] = {}
    values: dict[str, list[str]] = {}  # each dataset's label maps are read once, by the first task on them
    problems = []
    for task in tasks:
        names = dict.fromkeys(d for d, _ in task.bindings.values())
        for name in names:
            if name not in loaded:
                try:
                    loaded[name] = get_dataset(name, datasets, data_root)
                except UserError as exc:
                    loaded[name] = exc
        failed = [loaded[n] for n in names if isinstance(loaded[n], UserError)]
        try:
            if failed:
                raise failed[0]
            with_views([task], {n: loaded[n] for n in names})
        except UserError as exc:
            problems += [f"task {task.name!r}: {line}" for line in str(exc).splitlines()]
            continue
        # part label maps are read after extraction, so `run` refuses a bad value late: say it now
        if task.knobs.get("annotation") == "mask" or (task.crops and task.crops.source == "masks"):
            for name in names:
                if name not in values:
                    values[name] = check_label_values(loaded[name])
                problems += [f"task {task.name!r}: {line}" for line in values[name]]
    return problems


def run(
    entries: list[EncoderEntry],
    tasks: list[Task],
    opts: Options = Options(),
    *,
    force: bool = False,
    weights: Path | None = None,
    results_root: Path | None = None,
    dataset: str | None = None,
    datasets: Path | None = None,
    data_root: Path | None = None,
    layers: tuple[int | str, ...] | None = None,
    feature: str | None = None,
    seed: int = SEED,
    report: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Every encoder on every task (on `dataset` instead of each task's own when given). Finished results are
    skipped; a failure stops with earlier work kept. `report` hears of each outcome as it comes."""
    check_writable(results_root)
    tasks, loaded = prepare_data(tasks, dataset, datasets, data_root)
    outcomes = []
    for entry in entries:
        spec = resolve(entry, weights)
        outcomes += run_one(
            spec,
            tasks,
            None,
            opts,
            layers=layers,
            feature=feature,
            seed=seed,
            force=force,
            results_root=results_root,
            datasets=datasets,
            data_root=data_root,
            preloaded=loaded,
            report=report,
        )
    return outcomes
