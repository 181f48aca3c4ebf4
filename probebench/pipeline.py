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
from probebench.extract import Options, device_and_precision, extract, store_for
from probebench.registry import EncoderEntry
from probebench.results.records import finished, git_commit, record_path, versions, write_record
from probebench.tasks import Task

log = logging.getLogger(__name__)
SEED = 0  # kNN is deterministic; recorded so later stochastic probes share the field


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


def run_one(
    spec: Spec,
    task: Task,
    dataset: ImageDataset,
    opts: Options,
    *,
    force: bool = False,
    results_root: Path | None = None,
) -> Outcome:
    entry = spec.entry
    req = task.request()
    _, precision, _ = device_and_precision(opts)
    store = store_for(spec, dataset, req, opts, precision)
    config = {
        "cache_key": store.manifest["key"],
        "task": task.name,
        "knobs": task.knobs,
        "splits": [task.train_split, task.test_split],
    }
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    path = record_path(entry.name, dataset.name, task.name, results_root)
    if not force and finished(path, config_hash):
        metrics = json.loads(path.read_text())["metrics"]
        return Outcome(entry.name, task.name, dataset.name, "skipped", path, metrics)

    t0 = time.perf_counter()
    result = extract(spec, dataset, req, opts)
    t_extract = time.perf_counter() - t0
    info = result.store.manifest["encoder"]
    feature = default_feature(entry, info["num_prefix_tokens"])
    t1 = time.perf_counter()
    for attempt in range(2):
        try:
            metrics = task.evaluate(result.store, dataset, feature)
            break
        except CorruptShard as exc:
            if attempt:
                raise
            log.warning("%s; recomputing it", exc)
            result.store.invalidate(exc.shard)
            result = extract(spec, dataset, req, opts)
    t_eval = time.perf_counter() - t1

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
        "knobs": {
            "feature": feature,
            "layer": result.layers[-1],
            "layers": result.layers,
            "norm": req.norm,
            "token": "class token" if feature == "cls" else "mean of patch tokens",
            "final_norm": info["final_norm"],
            "preprocess": spec.preprocess.as_dict(),
            "precision": result.precision,
            **task.knobs,
        },
        "seed": SEED,
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
    return Outcome(entry.name, task.name, dataset.name, "done", path, metrics)


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
) -> list[Outcome]:
    """Every encoder on every task (on `dataset` instead of each task's own when given). Finished results are
    skipped; a failure stops with earlier work kept."""
    loaded: dict[str, ImageDataset] = {}
    outcomes = []
    for entry in entries:
        spec = resolve(entry, weights)
        for task in tasks:
            name = dataset or task.dataset
            if name not in loaded:
                loaded[name] = get_dataset(name, datasets, data_root)
            outcomes.append(run_one(spec, task, loaded[name], opts, force=force, results_root=results_root))
    return outcomes
