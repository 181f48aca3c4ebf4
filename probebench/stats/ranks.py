"""Ranks with ties: per task, each encoder's rank is 1 + the number of encoders significantly better than it
(paired bootstrap over the items all of them share, Holm-corrected over the task's pairs), so encoders whose
differences are not significant share a rank; beside it, the 95 % interval of its rank over the bootstrap
resamples.

Each encoder enters with its own records (the task's layer, its image feature, every training seed), as
`probebench compare` reads them (`probebench.stats.entrants`). An encoder that cannot be ranked (an undefined
metric, damaged items) has a row without a rank that says why; so has every encoder of a task that cannot be
ranked at all (too few shared items, metrics defined differently).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from probebench.results.schema import ResultRecord
from probebench.stats.bootstrap import (
    ALPHA,
    COMPARE_RESAMPLES,
    bootstrap_entrants,
    holm,
    pairwise_differences,
)
from probebench.stats.entrants import Side, dropped_note, gather, side_records

RANK_COLUMNS = ["task", "dataset", "metric", "encoder", "value", "rank", "rank_lo", "rank_hi"]
RANK_COLUMNS += ["items", "note"]


def rank_tasks(
    records: list[ResultRecord], resamples: int = COMPARE_RESAMPLES, seed: int = 0
) -> pd.DataFrame:
    """One row per (task, encoder) of every task two or more encoders ran with per-item outcomes:
    RANK_COLUMNS, `rank` with ties where differences are not significant, `rank_lo`-`rank_hi` its 95 %
    bootstrap interval."""
    by_task: dict[tuple[str, str], dict[str, list[ResultRecord]]] = {}
    for name in sorted({r.encoder.name for r in records}):
        for key, own in side_records(records, Side(name)).items():
            by_task.setdefault(key, {})[name] = own
    rows = []
    for (task, dataset), entrants in sorted(by_task.items()):
        if len(entrants) >= 2:
            rows += _rank_one(task, dataset, entrants, resamples, seed)
    whole = {"rank": "Int64", "rank_lo": "Int64", "rank_hi": "Int64", "items": "Int64"}
    return pd.DataFrame(rows, columns=RANK_COLUMNS).astype(whole)  # no rank: <NA>, the note says why


def _rank_one(
    task: str, dataset: str, entrants: dict[str, list[ResultRecord]], resamples: int, seed: int
) -> list[dict]:
    first = next(iter(entrants.values()))[0]
    metric, higher = first.primary.name, first.primary.higher_is_better
    got = gather(entrants, metric)
    left = "; ".join(f"{n} left out: {why}" for n, why in got.left_out.items())
    if got.why or len(got.names) < 2:
        return [_unranked(task, dataset, metric, n, got.why or left or "one encoder") for n in entrants]
    dist = bootstrap_entrants(got.spec, got.arrays, got.labels, resamples, seed)
    sign = 1.0 if higher else -1.0
    pairs = pairwise_differences(dist)
    significant = holm(pairs.p) < ALPHA
    above = np.zeros(len(got.names), dtype=int)  # how many encoders are significantly above each
    for i, j, d, s in zip(pairs.i, pairs.j, pairs.difference, significant, strict=True):
        if s:
            above[j if sign * d > 0 else i] += 1
    draws = sign * dist.draws
    # each resample's rank of each encoder, ties sharing the best of their places (1 = best)
    ranks = 1 + (draws[:, None, :] > draws[:, :, None]).sum(2)
    lo = np.percentile(ranks, 2.5, axis=0, method="lower")
    hi = np.percentile(ranks, 97.5, axis=0, method="higher")
    note = "; ".join(n for n in (dropped_note(got), left) if n)
    rows = [
        {
            "task": task,
            "dataset": dataset,
            "metric": metric,
            "encoder": name,
            "value": float(dist.estimates[e]),
            "rank": int(above[e] + 1),
            "rank_lo": int(lo[e]),
            "rank_hi": int(hi[e]),
            "items": len(got.items),
            "note": note,
        }
        for e, name in enumerate(got.names)
    ]
    return rows + [_unranked(task, dataset, metric, n, why) for n, why in got.left_out.items()]


def _unranked(task: str, dataset: str, metric: str, encoder: str, why: str) -> dict:
    """A row without a rank, saying why (an undefined metric, damaged items, too few shared items)."""
    row = dict.fromkeys(RANK_COLUMNS)
    return row | {"task": task, "dataset": dataset, "metric": metric, "encoder": encoder, "note": why}
