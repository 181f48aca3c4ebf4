"""The Python API for notebooks: the same operations as the CLI, returning objects instead of printing.

import probebench as pb
enc = pb.load_encoder("efficientnet_lite0")          # an Encoder (the one contract)
feats = enc(images, layers=[-1])                     # Features: cls, patches (B, h, w, C), pooled, ...
store = pb.extract("efficientnet_lite0", "embedded") # a FeatureStore in the cache
pb.run(["efficientnet_lite0"], ["linear"], seeds=[0, 1]) # records under results/runs/ (any `run` option)
df = pb.leaderboard()                                # a pandas DataFrame, a row per number
diff = pb.compare("efficientnet_lite0", "mobilenetv2") # A - B per task: paired interval, p, Holm
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from probebench.cache.store import FeatureStore
from probebench.data.base import ImageDataset
from probebench.data.lookup import get_dataset
from probebench.encoders.base import Encoder
from probebench.encoders.load import build_encoder, resolve_encoder
from probebench.encoders.registry import get_entry, load_registry
from probebench.errors import UserError
from probebench.extraction.extract import extract_features as _extract
from probebench.extraction.request import ExtractionOptions, FeatureRequest
from probebench.pipeline.config import RunConfig
from probebench.pipeline.record import RecordOutcome
from probebench.pipeline.runner import run_tasks
from probebench.pipeline.select import select_encoders, select_tasks


def load_encoder(
    name: str, *, weights: str | Path | None = None, registry: str | Path | None = None
) -> Encoder:
    """A registry encoder, loaded through the same path as the CLI."""
    entry = get_entry(load_registry(registry), name)
    return build_encoder(resolve_encoder(entry, Path(weights) if weights else None))


def extract(
    encoder: str,
    dataset: str | ImageDataset = "embedded",
    *,
    layers: tuple[int, ...] = (-1,),
    tokens: tuple[str, ...] = ("cls", "pooled"),
    geometry: str = "resize",
    max_side: int | None = None,
    options: ExtractionOptions | None = None,
    registry: str | Path | None = None,
) -> FeatureStore:
    """Fill the cache and return the store: `store.load("pooled.L11")` gives a numpy array (N, C),
    `store.load_grids("patches.L11", rows)` one (h, w, C) grid per row, `store.load_geometry(rows)` how each
    image became the input (`geometry` "resize" or "native"; see `probebench.geometry`)."""
    entry = get_entry(load_registry(registry), encoder)
    ds = dataset if isinstance(dataset, ImageDataset) else get_dataset(dataset)
    req = FeatureRequest(layers=layers, tokens=tokens, geometry=geometry, max_side=max_side)
    return _extract(resolve_encoder(entry), ds, req, options or ExtractionOptions()).store


def run(
    encoders: list[str] | None = None,
    tasks: list[str] | None = None,
    *,
    config: RunConfig | str | Path | None = None,
    report: Callable[[RecordOutcome], None] | None = None,
    echo: Callable[[str], None] | None = None,
    **settings: Any,
) -> list[RecordOutcome]:
    """Run tasks (or groups such as "object") for encoders, as `probebench run` does: every option of the
    command is a keyword here (`weights=`, `dataset=`, `datasets=`, `data_root=`, `results_root=`,
    `layers=`, `launcher=`, ...; the fields of `RunConfig`), or comes from `config` (a `RunConfig`, or a
    YAML file of them, which the keywords override). Finished results are skipped unless `force=True`.

    Returns one outcome per record; with `launcher="local"` those its jobs finished, with `"slurm"` none
    (the jobs run on: `probebench status`, then `leaderboard()`). `report` hears of each record as it is
    written (in this process), `echo` of each line the command would print."""
    cfg = _config(config, {**settings, **({"encoders": encoders} if encoders is not None else {})}, tasks)
    entries, selected = select_encoders(cfg), select_tasks(cfg)
    say = echo or (lambda line: None)
    names = ", ".join(e.name for e in entries)
    say(f"running {len(entries)} encoder(s) x {len(selected)} task(s): {names}")
    if cfg.launcher == "none":
        return run_tasks(entries, selected, cfg, report)
    from probebench.launch.submit import run_grid

    grid = run_grid(entries, selected, cfg, say)
    if grid.failed:
        raise UserError(f"{grid.failed} job(s) failed (each named above, with its log); re-run to retry them")
    return grid.outcomes


def _config(config: RunConfig | str | Path | None, settings: dict, tasks: list[str] | None) -> RunConfig:
    if tasks is not None:
        settings["tasks"] = [tasks] if isinstance(tasks, str) else tasks
    if isinstance(config, RunConfig):
        return config.replace(**settings) if settings else config
    if config is not None:
        return RunConfig.from_yaml(Path(config), **settings)
    return RunConfig.from_settings(settings, "probebench.run")


def leaderboard(results: str | Path | None = None, view: str = "long") -> pd.DataFrame:
    """The merged records under `results` (default results/): `view` long (a row per number), wide
    (encoders x scores), families (per-family mean and spread), papers (published numbers beside ours) or
    seeds (mean, spread and intervals over training seeds)."""
    from probebench.results import tables

    if view not in tables.VIEWS:
        raise ValueError(f"view {view!r}: use one of {', '.join(tables.VIEWS)}")
    return tables.VIEWS[view](tables.build_leaderboard(Path(results) if results else None).long)


def compare(a: str, b: str, results: str | Path | None = None, **options: Any) -> pd.DataFrame:
    """`probebench compare A B` as a DataFrame: per task both ran, A - B of the primary metric with a paired
    bootstrap interval, p and Holm's p. A side is `ENCODER` or `ENCODER@layer=N,feature=F`; options:
    `tasks=`, `levels=`, `resamples=`, `seed=`."""
    from probebench.results import tables
    from probebench.stats.compare import compare_sides, parse_side

    records = tables.build_leaderboard(Path(results) if results else None).records
    return compare_sides(records, parse_side(a), parse_side(b), **options).table


def claims(
    results: str | Path | None = None, path: str | Path | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`probebench claims`: (per-task verdicts, per claim and level) of the papers' claims (or `path`'s)."""
    from probebench.results import tables
    from probebench.stats.claims import judge_claims, load_claims

    records = tables.build_leaderboard(Path(results) if results else None).records
    return judge_claims(records, load_claims(Path(path) if path else None))
