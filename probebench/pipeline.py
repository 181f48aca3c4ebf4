"""A run is encoder x task (each task names its dataset): extract into the cache, evaluate, write a record.

This is the one place that sequences the pieces; the CLI and the Python API both call it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from probebench.cache.store import CorruptShard
from probebench.data.base import ImageDataset, get_dataset
from probebench.encoders.load import Spec, resolve
from probebench.extract import Options, Request, device_and_precision, extract, store_for
from probebench.registry import EncoderEntry
from probebench.results.records import finished, git_commit, record_path, versions, write_record
from probebench.tasks import Task

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


def available_encoders(registry: dict[str, EncoderEntry]) -> list[str]:
    """Registry encoders whose weights are on this machine (cache, package or random init)."""
    return [
        n
        for n, e in registry.items()
        if resolve(e, strict_available=False, download=False).weights_id != "unavailable"
    ]


def default_feature(entry: EncoderEntry, num_prefix_tokens: int) -> str:
    """The entry's choice, else the class token when the model has one (DINO's kNN), else pooled patches."""
    return entry.feature or ("cls" if num_prefix_tokens > 0 else "pooled")


def _config_hash(store_key: str, task: Task, layer: int | str, feature: str, seed: int) -> str:
    config = {
        "cache_key": store_key,
        "task": task.name,
        "knobs": task.knobs,
        "splits": [task.train_split, task.test_split],
        "layer": layer,
        "feature": feature,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def run_one(
    spec: Spec,
    tasks: Task | list[Task],
    dataset: ImageDataset,
    opts: Options,
    *,
    layers: tuple[int | str, ...] | None = None,
    feature: str | None = None,
    seed: int = SEED,
    force: bool = False,
    results_root: Path | None = None,
) -> list[Outcome]:
    """Tasks on one encoder and dataset, from one extraction that caches what all of them read.

    `layers=None` evaluates the last block (record `<encoder>__<dataset>__<task>.json`); given layers (block
    indices, negative from the end, or "all") give one record per layer, `...__<task>__layer<n>.json`.
    `feature` (cls, pooled, both) overrides the entry's default image feature for linear and kNN probes.
    """
    tasks = [tasks] if isinstance(tasks, Task) else tasks
    git_commit()  # pin the commit now: the code that runs is the code imported when the run starts
    entry = spec.entry
    req = Request(
        layers=tuple(layers) if layers else (-1,), tokens=tuple(sorted({t for x in tasks for t in x.tokens}))
    )
    device, precision, _ = device_and_precision(opts)
    store = store_for(spec, dataset, req, opts, precision)
    key, asked_feature = store.manifest["key"], feature or "default"

    def targets(absolute: list[int] | None) -> list[tuple[Task, int | None, Path, str]]:
        out = []
        for task in tasks:
            for layer in [None] if layers is None else absolute or []:
                suffix = None if layer is None else f"layer{layer}"
                path = record_path(entry.name, dataset.name, task.name, results_root, suffix)
                at = "last" if layer is None else layer
                out.append((task, layer, path, _config_hash(key, task, at, asked_feature, seed)))
        return out

    def skipped(task: Task, path: Path) -> Outcome:
        metrics = json.loads(path.read_text())["metrics"]
        return Outcome(entry.name, task.name, dataset.name, "skipped", path, metrics)

    known = store.manifest.get("layers")
    if not force and (layers is None or known):
        planned = targets(known)
        if planned and all(finished(p, h) for _, _, p, h in planned):
            return [skipped(t, p) for t, _, p, _ in planned]

    t0 = time.perf_counter()
    result = extract(spec, dataset, req, opts)
    t_extract = time.perf_counter() - t0
    info = result.store.manifest["encoder"]
    chosen = feature or default_feature(entry, info["num_prefix_tokens"])
    outcomes = []
    for task, layer, path, config_hash in targets(result.layers):
        if not force and finished(path, config_hash):
            outcomes.append(skipped(task, path))
            continue
        at = result.layers[-1] if layer is None else layer
        t1 = time.perf_counter()
        for attempt in range(2):
            try:
                metrics, details = task.evaluate(result.store, dataset, at, chosen, seed=seed, device=device)
                break
            except CorruptShard as exc:
                if attempt:
                    raise
                log.warning("%s; recomputing it", exc)
                result.store.invalidate(exc.shard)
                result = extract(spec, dataset, req, opts)
        t_eval = time.perf_counter() - t1
        reads_tokens = "patches" in task.tokens
        record = {
            "encoder": {
                **entry.model_dump(mode="json"),
                "weights_id": spec.weights_id,
                "weights_path": spec.weights_path,
                **{k: info[k] for k in info if k != "preprocess"},
            },
            "task": {"name": task.name, "description": task.description},
            "dataset": {
                **dataset.describe(),
                "train_split": task.train_split,
                "test_split": task.test_split,
                "skipped_images": len(result.skipped),
                "skipped_files": result.skipped[:100],
            },
            "metrics": metrics,
            "probe": details,
            "knobs": {
                "feature": "tokens" if reads_tokens else chosen,
                "layer": at,
                "layers_cached": result.layers,
                "norm": req.norm,
                "token": _TOKEN_TEXT["tokens" if reads_tokens else chosen],
                "final_norm": info["final_norm"],
                "preprocess": spec.preprocess.as_dict(),
                "precision": result.precision,
                "probe_device": str(device),
                **task.knobs,
            },
            "seed": seed,
            "timings": {
                "extract_s": round(t_extract, 3),
                "evaluate_s": round(t_eval, 3),
                "features_cached": result.cached,
                "images_per_s": result.images_per_s,
            },
            "cache": {"key": result.store.manifest["key"], "path": str(result.store.root)},
            "config_hash": config_hash,
            "versions": versions(),
            "git": git_commit(),
        }
        write_record(path, record)
        outcomes.append(Outcome(entry.name, task.name, dataset.name, "done", path, metrics))
    return outcomes


_TOKEN_TEXT = {
    "cls": "class token",
    "pooled": "mean of patch tokens",
    "both": "class token and mean of patch tokens, concatenated",
    "tokens": "all tokens (prefix tokens and patch tokens)",
}


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
) -> list[Outcome]:
    """Every encoder on every task (on `dataset` instead of each task's own when given). Finished results are
    skipped; a failure stops with earlier work kept."""
    by_dataset: dict[str, list[Task]] = {}
    for task in tasks:
        by_dataset.setdefault(dataset or task.dataset, []).append(task)
    loaded = {name: get_dataset(name, datasets, data_root) for name in by_dataset}
    outcomes = []
    for entry in entries:
        spec = resolve(entry, weights)
        for name, group in by_dataset.items():
            outcomes += run_one(
                spec,
                group,
                loaded[name],
                opts,
                layers=layers,
                feature=feature,
                seed=seed,
                force=force,
                results_root=results_root,
            )
    return outcomes
