"""Finding cache entries: the one for a request, a wider one that already holds it, all of them (`probebench
cache ls`), and removing them (`probebench cache rm`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from probebench.cache.store import FeatureStore, cache_key
from probebench.paths import features_dir


def find_or_open(encoder: str, dataset: str, parts: dict, n: int, shard_size: int) -> FeatureStore:
    """The cache entry for the key made from `parts`. When nothing was extracted under that exact key yet, a
    complete entry that holds more token kinds and layers with every other part equal serves it (`--task
    linear` after `--task object` extracts nothing); else the entry is created."""
    key = cache_key(parts)
    exact = [store for store in list_stores(encoder, dataset) if store.key == key]
    if not exact or not exact[0].has_shards:
        wider = _wider_entry(encoder, dataset, parts)
        if wider is not None:
            return wider
    return FeatureStore.open(encoder, dataset, key, parts, n, shard_size)


def _wider_entry(encoder: str, dataset: str, parts: dict) -> FeatureStore | None:
    want = json.loads(
        json.dumps({k: v for k, v in parts.items() if k not in ("tokens", "layers")}, default=str)
    )
    for store in list_stores(encoder, dataset):
        if store.damaged:
            continue
        other = store.key_parts
        layers = set(other.get("layers", []))
        wider = set(parts["tokens"]) <= set(other.get("tokens", [])) and (
            set(parts["layers"]) <= layers or "all" in layers
        )
        if {k: other.get(k) for k in want} == want and wider and store.complete:
            return store
    return None


def list_stores(encoder: str | None = None, dataset: str | None = None) -> list[FeatureStore]:
    base = features_dir()
    out = []
    for manifest in sorted(base.glob("*/*/*/manifest.json")):
        enc, ds = manifest.parent.parent.parent.name, manifest.parent.parent.name
        if (encoder is None or enc == encoder) and (dataset is None or ds == dataset):
            out.append(FeatureStore(manifest.parent))
    return out


def remove_stores(encoder: str | None = None, dataset: str | None = None) -> list[Path]:
    removed = []
    for store in list_stores(encoder, dataset):
        shutil.rmtree(store.root)
        removed.append(store.root)
    return removed
