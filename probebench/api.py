"""The Python API for notebooks: the same operations as the CLI, returning objects instead of printing.

import probebench as pb
enc = pb.load_encoder("efficientnet_lite0")          # an Encoder (the one contract)
feats = enc(images, layers=[-1])                     # Features: cls, patches (B, h, w, C), pooled, ...
store = pb.extract("efficientnet_lite0", "embedded") # a FeatureStore in the cache
pb.run(["efficientnet_lite0"], ["knn"])              # records under results/runs/
df = pb.leaderboard()                                # a pandas DataFrame, a row per number
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from probebench.cache.store import FeatureStore
from probebench.data.base import ImageDataset
from probebench.data.lookup import get_dataset
from probebench.encoders.base import Encoder
from probebench.encoders.load import build, resolve
from probebench.extract import Options, Request
from probebench.extract import extract as _extract
from probebench.pipeline import Outcome
from probebench.pipeline import run as _run
from probebench.registry import get_entry, load_registry
from probebench.tasks import get_tasks, load_tasks


def load_encoder(
    name: str, *, weights: str | Path | None = None, registry: str | Path | None = None
) -> Encoder:
    """A registry encoder, loaded through the same path as the CLI."""
    entry = get_entry(load_registry(registry), name)
    return build(resolve(entry, Path(weights) if weights else None))


def extract(
    encoder: str,
    dataset: str | ImageDataset = "embedded",
    *,
    layers: tuple[int, ...] = (-1,),
    tokens: tuple[str, ...] = ("cls", "pooled"),
    geometry: str = "resize",
    max_side: int | None = None,
    options: Options | None = None,
    registry: str | Path | None = None,
) -> FeatureStore:
    """Fill the cache and return the store: `store.load("pooled.L11")` gives a numpy array (N, C),
    `store.load_grids("patches.L11", rows)` one (h, w, C) grid per row, `store.load_geometry(rows)` how each
    image became the input (`geometry` "resize" or "native"; see `probebench.geometry`)."""
    entry = get_entry(load_registry(registry), encoder)
    ds = dataset if isinstance(dataset, ImageDataset) else get_dataset(dataset)
    req = Request(layers=layers, tokens=tokens, geometry=geometry, max_side=max_side)
    return _extract(resolve(entry), ds, req, options or Options()).store


def run(
    encoders: list[str],
    tasks: list[str] = ("knn",),
    *,
    force: bool = False,
    options: Options | None = None,
    registry: str | Path | None = None,
    dataset: str | None = None,
    layers: tuple[int | str, ...] | None = None,
    feature: str | None = None,
    seed: int = 0,
    tasks_file: str | Path | None = None,
) -> list[Outcome]:
    """Run tasks (or groups such as "object") for encoders; finished results are skipped unless force.
    `tasks_file` adds your own task entries (else ./tasks.yaml when present)."""
    reg = load_registry(registry)
    catalog = load_tasks(Path(tasks_file) if tasks_file else None)
    return _run(
        [get_entry(reg, e) for e in encoders],
        [x for t in tasks for x in get_tasks(t, catalog)],
        options or Options(),
        force=force,
        dataset=dataset,
        layers=layers,
        feature=feature,
        seed=seed,
    )


def leaderboard(results: str | Path | None = None, view: str = "long") -> pd.DataFrame:
    """The merged records under `results` (default results/): `view` long (a row per number), wide
    (encoders x scores), families (per-family mean and spread) or papers (published numbers beside ours)."""
    from probebench.results import tables

    if view not in tables.VIEWS:
        raise ValueError(f"view {view!r}: use one of {', '.join(tables.VIEWS)}")
    return tables.VIEWS[view](tables.build(Path(results) if results else None).long)
