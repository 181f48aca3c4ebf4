"""A run is encoder x task: plan, make sure the features exist, evaluate, write the record.

This is the one place that sequences the pieces; the CLI, the Python API and every grid job call it with one
`RunConfig`. `run_encoder` is a short loop over those named steps for one encoder and a list of tasks, so that
tasks reading the same dataset in the same framing share one extraction (one cache entry holding the union
of what they read).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch

from probebench import progress
from probebench.cache.read import split_rows
from probebench.cache.store import CorruptShard, FeatureStore
from probebench.data.base import ImageDataset
from probebench.encoders.base import block_indices
from probebench.encoders.load import ResolvedEncoder, resolve_encoder
from probebench.encoders.registry import EncoderEntry
from probebench.errors import UserError
from probebench.extraction.extract import extract_features, open_entry
from probebench.extraction.request import Extraction, ExtractionOptions, device_and_precision
from probebench.paths import check_writable
from probebench.pipeline.config import SEED, RunConfig
from probebench.pipeline.data import bind_to_dataset, load_task_data, with_views
from probebench.pipeline.plan import (
    PlannedRecord,
    RunPlan,
    config_hash,
    default_feature,
    expand_sweep,
    plan_run,
)
from probebench.pipeline.record import RecordOutcome, build_record, outcome_of, skipped_outcome
from probebench.results.records import finished, git_commit, write_record
from probebench.results.schema import Timings
from probebench.tasks.catalog import Task
from probebench.tasks.contract import Context, Evaluation, RoleData

log = logging.getLogger(__name__)


def run_tasks(
    entries: list[EncoderEntry],
    tasks: list[Task],
    cfg: RunConfig,
    report: Callable[[RecordOutcome], None] | None = None,
) -> list[RecordOutcome]:
    """Every encoder on every task (on `cfg.dataset` instead of each task's own when given). Finished
    results are skipped unless `cfg.force`; a failure stops with earlier work kept. `report` hears of each
    outcome as it comes."""
    check_writable(cfg.results_root)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    tasks, loaded = load_task_data(tasks, cfg)
    outcomes = []
    for entry in entries:
        outcomes += run_encoder(resolve_encoder(entry, cfg.weights), tasks, cfg, loaded, report)
    return outcomes


def run_encoder(
    spec: ResolvedEncoder,
    tasks: Task | list[Task],
    cfg: RunConfig,
    data: ImageDataset | dict[str, ImageDataset] | None = None,
    report: Callable[[RecordOutcome], None] | None = None,
) -> list[RecordOutcome]:
    """Tasks on one encoder: plan, features, evaluate, record. `data`: the datasets the tasks read, as
    `load_task_data` made them; or one dataset every task is bound to; None: loaded here as `cfg` says.

    `cfg.layers=None` evaluates the last block (record `<encoder>__<dataset>__<task>.json`); given layers
    (block indices, negative from the end, or "all") give one record per layer, `...__<task>__layer<n>.json`.
    `cfg.feature` (cls, pooled, both, head) overrides the entry's default image feature for probes that read
    one.
    """
    tasks, loaded = _task_data([tasks] if isinstance(tasks, Task) else list(tasks), data, cfg)
    git_commit()  # pin the commit now: the code that runs is the code imported when the run starts
    plan, stores, notes = _planned(spec, tasks, loaded, cfg)
    if not cfg.force:
        done = _all_finished(spec, plan, stores, notes, cfg)
        if done is not None:
            for outcome in done if report is not None else []:
                report(outcome)
            return done
    t0 = time.perf_counter()
    results = ensure_features(spec, plan, stores, loaded, cfg.extraction)
    t_extract = time.perf_counter() - t0
    facts = next(iter(results.values())).store.encoder_facts
    chosen = cfg.feature or default_feature(spec.entry, facts)
    keys = {k: r.store.feature_identity for k, r in results.items()}
    described = {name: ds.describe() for name, ds in loaded.items()}
    outcomes = []
    for target in [t for x in plan.targets for t in expand_sweep(x, facts.num_blocks)]:
        at = block_indices(target.layers, facts.num_blocks)
        chash = config_hash(
            target, at, cfg.feature or "default", cfg.resampling_seed, _role_keys(target, keys), notes
        )
        if not cfg.force and finished(target.path, chash):
            outcomes.append(skipped_outcome(spec, target))
        else:
            t1 = time.perf_counter()
            evaluation, ctx = _evaluate(spec, plan, target, at, results, loaded, chosen, cfg)
            timings = Timings(
                extract_s=round(t_extract, 3),
                evaluate_s=round(time.perf_counter() - t1, 3),
                features_cached=all(r.cached for r in results.values()),
                images_per_s=next((r.images_per_s for r in results.values() if r.images_per_s), None),
            )
            device, _, _ = device_and_precision(cfg.extraction)
            record = build_record(
                spec,
                target,
                at,
                chosen,
                evaluation,
                results,
                ctx,
                described,
                chash,
                timings,
                device,
            )
            write_record(target.path, record, evaluation.outputs)
            outcomes.append(outcome_of(spec, target, "done", record.metrics, record.undefined))
        if report is not None:
            report(outcomes[-1])
    return outcomes


def _task_data(
    tasks: list[Task], data: ImageDataset | dict[str, ImageDataset] | None, cfg: RunConfig
) -> tuple[list[Task], dict[str, ImageDataset]]:
    """The tasks and the datasets they read: every task bound to one given dataset, the given datasets with
    the views the tasks make of them, or loaded as `cfg` says."""
    if isinstance(data, ImageDataset):
        return bind_to_dataset(tasks, data)
    if data is None:
        return load_task_data(tasks, cfg)
    return tasks, with_views(tasks, data)


def _evaluate(
    spec: ResolvedEncoder,
    plan: RunPlan,
    target: PlannedRecord,
    at: list[int],
    results: dict[tuple[str, str], Extraction],
    loaded: dict[str, ImageDataset],
    feature: str,
    cfg: RunConfig,
) -> tuple[Evaluation, Context]:
    device, _, _ = device_and_precision(cfg.extraction)
    what = f"{target.task.name}: {spec.entry.name} x {target.task.dataset}"
    with progress.stage(what + (f" x layer {at[0]}" if target.sweep else ""), unit="step"):
        return evaluate_with_retry(
            spec,
            plan,
            target,
            lambda: _context(target, at, results, loaded, feature, cfg.resampling_seed, device),
            results,
            loaded,
            cfg.extraction,
        )


# -- the steps ------------------------------------------------------------------------------------------
def open_stores(
    spec: ResolvedEncoder, plan: RunPlan, datasets: dict[str, ImageDataset], opts: ExtractionOptions
) -> dict[tuple[str, str], FeatureStore]:
    """The cache entry of every planned request (keying fingerprints each dataset's files: done once)."""
    _, precision, _ = device_and_precision(opts, spec.entry.precision)
    return {k: open_entry(spec, datasets[k[0]], r, opts, precision) for k, r in plan.requests.items()}


def ensure_features(
    spec: ResolvedEncoder,
    plan: RunPlan,
    stores: dict[tuple[str, str], FeatureStore],
    datasets: dict[str, ImageDataset],
    opts: ExtractionOptions,
) -> dict[tuple[str, str], Extraction]:
    """Fill every planned entry (complete entries return at once and build no model)."""
    return {
        k: extract_features(spec, datasets[k[0]], r, opts, store=stores[k]) for k, r in plan.requests.items()
    }


def _context(
    target: PlannedRecord,
    layers: list[int],
    results: dict[tuple[str, str], Extraction],
    datasets: dict[str, ImageDataset],
    feature: str,
    resampling_seed: int,
    device,
) -> Context:
    """What the probe reads: each role's rows and labels, the layers, the feature, the knobs and seeds
    (a training-free target has no training seed: it gets the default, which it does not read)."""
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
    encoder = results[next(iter(target.feeds.values()))].store.encoder_facts
    seed = SEED if target.seed is None else target.seed
    knobs = dict(target.task.knobs)
    ctx = Context(roles, layers, feature, knobs, seed, resampling_seed, device, encoder)
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
    spec: ResolvedEncoder,
    plan: RunPlan,
    target: PlannedRecord,
    make_context: Callable[[], Context],
    results: dict[tuple[str, str], Extraction],
    datasets: dict[str, ImageDataset],
    opts: ExtractionOptions,
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
                    results[key] = extract_features(
                        spec, datasets[key[0]], plan.requests[key], opts, store=res.store
                    )
    raise AssertionError("unreachable")


def _planned(
    spec: ResolvedEncoder, tasks: list[Task], loaded: dict[str, ImageDataset], cfg: RunConfig
) -> tuple[RunPlan, dict[tuple[str, str], FeatureStore], dict[str, str]]:
    """The plan, its cache entries and each dataset's annotation fingerprint: what decides whether a
    record is finished."""
    plan = plan_run(spec.entry, tasks, cfg)
    notes = {name: ds.annotation_fingerprint() for name, ds in loaded.items()}
    return plan, open_stores(spec, plan, loaded, cfg.extraction), notes


def finished_outcomes(
    spec: ResolvedEncoder, tasks: list[Task], loaded: dict[str, ImageDataset], cfg: RunConfig
) -> list[RecordOutcome] | None:
    """The skipped outcomes when every record `run_encoder` would write is finished, else None; reads
    manifests
    and records only (a launcher asks this before it submits a job)."""
    plan, stores, notes = _planned(spec, tasks, loaded, cfg)
    return _all_finished(spec, plan, stores, notes, cfg)


def _all_finished(
    spec: ResolvedEncoder,
    plan: RunPlan,
    stores: dict[tuple[str, str], FeatureStore],
    notes: dict[str, str],
    cfg: RunConfig,
) -> list[RecordOutcome] | None:
    """The skipped outcomes when every planned record is already finished, else None; nothing is extracted
    and no model is built. Sweeps and negative layers need the block count, known once any planned cache
    entry has been started; the last block and non-negative layers do not."""
    num_blocks = next((s.encoder_facts.num_blocks for s in stores.values() if s.started), None)
    relative = any(
        t.sweep or any(isinstance(x, str) and x != "last" or isinstance(x, int) and x < 0 for x in t.layers)
        for t in plan.targets
    )
    if num_blocks is None and relative:
        return None
    keys = {k: s.feature_identity for k, s in stores.items()}
    feature = cfg.feature or "default"
    checks = [
        (
            t,
            config_hash(
                t,
                block_indices(t.layers, num_blocks or 0),
                feature,
                cfg.resampling_seed,
                _role_keys(t, keys),
                notes,
            ),
        )
        for target in plan.targets
        for t in expand_sweep(target, num_blocks or 0)
    ]
    if all(finished(t.path, h) for t, h in checks):
        return [skipped_outcome(spec, t) for t, _ in checks]
    return None


def _role_keys(target: PlannedRecord, keys: dict[tuple[str, str], str]) -> dict[str, str]:
    return {role: keys[feed] for role, feed in target.feeds.items()}
