"""Entrants: the encoders (each under one setting) that a comparison, a ranking or a claim puts side by side
on one task, their per-item outcomes read, checked and aligned on the items they all hold.

Every caller needs the same care, so it is written once here:
- an entrant's records come from `side_records` (its own layer and image feature, one record per training
  seed, the lowest resampling seed);
- a record whose primary metric is undefined says why; one whose items are missing or damaged is named,
  with the command that recomputes it; either entrant is left out, and the caller says so;
- the items must give back each record's number (a file and a record that disagree are never compared);
- every record must define the metric the same way (kind, class subset, shape, item labels), else the task
  is not compared;
- items are matched by name; those not every record holds are counted and named, and a metric whose
  outcome depends on the whole item set (retrieval) is compared only where the item sets are identical;
- fewer than `MIN_ITEMS` shared items give no test: with a handful of items every bootstrap resample can
  give the same difference, and its p-value would be as small as the resamples allow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probebench.results.records import read_record_items
from probebench.results.schema import ResultRecord
from probebench.stats.items import BadItems, ItemMetric, ItemScores

SETTING_KEYS = ("layer", "feature", "task")
MIN_ITEMS = 10  # below this a paired bootstrap is not a test (at 6 items a sign test cannot reach 0.05)


@dataclass
class Entrants:
    """What a task's entrants hold in common: `names` (those that could be read), the metric's `spec`,
    each name's outcome arrays (one per training seed) aligned to the shared items, the items' `labels`
    (class means), the shared `items`, and why anything was left out."""

    names: list[str] = field(default_factory=list)
    spec: ItemMetric | None = None
    arrays: list[list[np.ndarray]] = field(default_factory=list)
    labels: np.ndarray | None = None
    items: list[str] = field(default_factory=list)
    ids: dict[str, list[set[str]]] = field(default_factory=dict)  # each name's item names, per seed
    left_out: dict[str, str] = field(default_factory=dict)  # name -> why it is not among `names`
    why: str | None = None  # why the task cannot be compared at all


@dataclass(frozen=True)
class Side:
    """One side of a comparison: an encoder, and the settings that pick its records (None: its own)."""

    encoder: str
    layer: int | None = None
    feature: str | None = None
    task: str | None = None  # one task variant (another knob: rope_keys, a variant) against the other side's

    @property
    def label(self) -> str:
        given = [f"{k}={getattr(self, k)}" for k in SETTING_KEYS if getattr(self, k) is not None]
        return self.encoder + (f"@{','.join(given)}" if given else "")


def side_records(records: list[ResultRecord], side: Side) -> dict[tuple[str, str], list[ResultRecord]]:
    """The side's records by (task, dataset): one per training seed, at the setting's layer and feature
    (else the task's own layer and the encoder's image feature), at the default resampling seed where
    there is one."""
    from probebench.pipeline.plan import default_feature

    out: dict[tuple[str, str], list[ResultRecord]] = {}
    for r in records:
        if r.encoder.name != side.encoder:
            continue
        if (r.knobs.layer != side.layer) if side.layer is not None else r.knobs.layer_sweep:
            continue
        out.setdefault((r.task.name, r.dataset.filed_under), []).append(r)
    for key, rs in out.items():
        features = {r.knobs.feature for r in rs}
        if side.feature is not None:
            rs = [r for r in rs if r.knobs.feature == side.feature]
        elif len(features) > 1:
            rs = [r for r in rs if r.knobs.feature == default_feature(r.encoder, r.encoder.facts)]
        seeds = sorted({r.training_seed for r in rs}, key=lambda s: -1 if s is None else s)
        # per training seed, the record of the lowest resampling seed: the default where it ran
        out[key] = [
            min((r for r in rs if r.training_seed == s), key=lambda r: r.resampling_seed) for s in seeds
        ]
    return {k: v for k, v in out.items() if v}


def _resampling(record: ResultRecord) -> int:
    return record.resampling_seed


def load_outcomes(records: list[ResultRecord], metric: str) -> tuple[list[ItemScores], str | None]:
    """Each record's items, or why they cannot be used: the metric is undefined (with the record's
    reason), a record keeps none, its file is missing or damaged, or its items do not give back its
    number."""
    out = []
    for r in records:
        name = Path(r.path).name if r.path is not None else r.encoder.name
        if metric in r.undefined:
            return [], f"{name}: {metric} is undefined ({r.undefined[metric]})"
        try:
            items = read_record_items(r.path, r)
        except BadItems as exc:
            return [], f"{exc}; re-run `probebench run -e {r.encoder.name} -t {r.task.name}` to recompute it"
        if metric not in items.metrics:
            return [], f"{name}: no per-item outcomes of {metric}"
        recorded = r.metrics.get(metric)
        if not isinstance(recorded, int | float) or not math.isclose(
            items.estimate(metric), recorded, rel_tol=1e-9, abs_tol=1e-9
        ):
            return [], f"{name}: its items do not give back its {metric} ({recorded}); re-run it"
        out.append(items)
    return out, None


def gather(entrants: dict[str, list[ResultRecord]], metric: str) -> Entrants:
    """The entrants' outcomes of `metric` on one task, aligned on the items every usable record holds."""
    out = Entrants()
    loaded: dict[str, list[ItemScores]] = {}
    for name, records in entrants.items():
        items, why = load_outcomes(records, metric)
        if why is None:
            loaded[name] = items
        else:
            out.left_out[name] = why
    out.names = list(loaded)
    if not loaded:
        out.why = "; ".join(out.left_out.values())
        return out
    every = [i for name in out.names for i in loaded[name]]
    specs = {i.metrics[metric].model_dump_json(exclude={"group", "array", "labels"}) for i in every}
    if len(specs) > 1:
        out.why = f"the records define {metric} differently (kind or class subset): not compared"
        return out
    out.spec = every[0].metrics[metric]
    out.ids = {n: [set(i.ids[i.metrics[metric].group]) for i in loaded[n]] for n in out.names}
    sets = [s for n in out.names for s in out.ids[n]]
    shared = set.intersection(*sets)
    if out.spec.whole_set and any(s != sets[0] for s in sets):
        out.why = (
            f"the records' item sets differ, and each {metric} outcome depends on the whole set "
            "(another gallery): not compared"
        )
        return out
    first = every[0]
    out.items = [x for x in first.ids[out.spec.group] if x in shared]
    if len(out.items) < MIN_ITEMS:
        out.why = f"{len(out.items)} shared item(s): fewer than {MIN_ITEMS}, too few for a test"
        return out
    out.arrays = [[align_outcomes(i, metric, out.items) for i in loaded[n]] for n in out.names]
    trailing = {a.shape[1:] for seeds in out.arrays for a in seeds}
    if len(trailing) > 1:
        out.why = f"the records' {metric} outcomes have different shapes {sorted(trailing)}: not compared"
        return out
    if out.spec.labels is not None:
        labels = [align_outcomes(i, metric, out.items, labels=True) for i in every]
        if any(not np.array_equal(labels[0], other) for other in labels[1:]):
            out.why = "the records label the same items differently: not compared"
            return out
        out.labels = labels[0]
    return out


def align_outcomes(items: ItemScores, metric: str, order: list[str], labels: bool = False) -> np.ndarray:
    """A record's outcome (or label) array of `metric`, its rows in the order of the item names `order`."""
    spec = items.metrics[metric]
    position = {name: i for i, name in enumerate(items.ids[spec.group])}
    array = items.arrays[spec.labels if labels else spec.array]
    return array[np.array([position[name] for name in order], dtype=np.int64)]


def dropped_note(gathered: Entrants) -> str:
    """How many items some record lacks, with an example, or "" when every record holds every item."""
    every = set().union(*(s for n in gathered.names for s in gathered.ids[n]))
    missing = sorted(every - set(gathered.items))
    if not missing:
        return ""
    held = len(gathered.items)
    return f"compared on the {held} items every record holds; {len(missing)} left out (e.g. {missing[0]})"
