"""`probebench compare A B`: the difference of two encoders (or one encoder under two settings), task by task,
from the per-item outcomes kept beside their records, with a paired bootstrap interval and a p-value, and
Holm's correction across the table.

A side is `ENCODER[@layer=N,feature=F,task=T]`: an encoder's own records (the task's layer, the encoder's
image feature) unless a setting names others. Each task both sides ran is compared on the items both hold,
each side's training seeds averaged and resampled with the items (`probebench.stats.bootstrap`). Items one
side has and the other lacks are named in the row's note; a record whose items are missing or damaged is
named, and its row has no numbers.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from probebench.errors import UserError
from probebench.results.schema import ResultRecord
from probebench.stats.bootstrap import (
    ALPHA,
    COMPARE_RESAMPLES,
    bootstrap_entrants,
    holm,
    p_value,
    percentile_interval,
)
from probebench.stats.entrants import SETTING_KEYS, Side, gather, side_records

COLUMNS = [
    "level",
    "task",
    "dataset",
    "metric",
    "a",
    "b",
    "difference",
    "lo",
    "hi",
    "p",
    "p_holm",
    "verdict",
    "items",
    "seeds",
    "note",
]


def parse_side(text: str) -> Side:
    """`dino_vitb`, `dino_vitb@layer=6`, `dino_vitb@layer=6,feature=pooled`, `dinov3@task=discovery_unrotated`
    -> a Side; anything else is one line naming the form."""
    form = "give ENCODER or ENCODER@layer=N,feature=F,task=T"
    encoder, _, rest = text.partition("@")
    if not encoder:
        raise UserError(f"{text!r}: {form}")
    settings: dict = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or key not in SETTING_KEYS or key in settings:
            raise UserError(f"{text!r}: {form} (settings: {', '.join(SETTING_KEYS)}, each once)")
        if key == "layer":
            try:
                settings[key] = int(value)
            except ValueError:
                raise UserError(f"{text!r}: layer={value!r} is not a block index") from None
        else:
            settings[key] = value
    return Side(encoder, **settings)


@dataclass
class Comparison:
    table: pd.DataFrame  # COLUMNS, one row per task both sides ran
    notes: list[str]  # what a reader must know about the table (records with damaged items, ...)


def compare_sides(
    records: list[ResultRecord],
    a: Side,
    b: Side,
    tasks: list[str] | None = None,
    levels: list[str] | None = None,
    resamples: int = COMPARE_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Every task both sides ran (of `tasks`, at `levels`, when given): the primary metric of each, their
    difference (a - b) with its paired 95 % interval and p-value, and Holm's adjusted p-value over the
    rows. Raises UserError for the same side twice, an encoder with no record, or no task in common."""
    if a == b:
        raise UserError(
            f"compare: {a.label} twice; give two encoders, or one under two settings "
            f"(e.g. {a.encoder} {a.encoder}@layer=6)"
        )
    names = sorted({r.encoder.name for r in records})
    for side in (a, b):
        if side.encoder not in names:
            close = difflib.get_close_matches(side.encoder, names, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else "run it first: `probebench run -e NAME`"
            raise UserError(f"compare: no record of encoder {side.encoder!r}; {hint}")
    mine, theirs = side_records(records, a), side_records(records, b)
    if a.task or b.task:  # one task against another: both filed under A's task name
        task_a, task_b = a.task or b.task, b.task or a.task
        mine, theirs = _one_task(mine, task_a), _one_task(theirs, task_b, task_a)
        metrics = sorted({rs[0].primary.name for own in (mine, theirs) for rs in own.values()})
        if len(metrics) > 1:
            said = ", ".join(metrics)
            raise UserError(f"compare: {task_a} and {task_b} report different primary metrics ({said})")
    keep = [
        k
        for k in sorted(set(mine) & set(theirs))
        if (not tasks or k[0] in tasks) and (not levels or mine[k][0].task.level in levels)
    ]
    if not keep:
        said = "; ".join(f"{s.label} ran {', '.join(sorted({t for t, _ in own})) or 'nothing'}"
                         for s, own in ((a, mine), (b, theirs)))  # fmt: skip
        raise UserError(f"compare: {a.label} and {b.label} have no task in common here ({said})")
    rows, notes = [], []
    for key in keep:
        row, note = _compare_task(mine[key], theirs[key], resamples, seed)
        rows.append(row)
        notes += [note] if note else []
    table = pd.DataFrame(rows, columns=COLUMNS)
    if (a.task or b.task) and (a.task or b.task) != (b.task or a.task):
        table["task"] = f"{a.task or b.task} vs {b.task or a.task}"
    table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
    table["verdict"] = [_verdict(r, a, b) for r in table.itertuples()]
    return Comparison(table, notes)


def _one_task(
    own: dict[tuple[str, str], list[ResultRecord]], task: str, filed: str | None = None
) -> dict[tuple[str, str], list[ResultRecord]]:
    """A side's records of one task, keyed as `filed` (the task the other side's are keyed by)."""
    return {(filed or task, d): rs for (t, d), rs in own.items() if t == task}


def _verdict(row, a: Side, b: Side) -> str:
    if not np.isfinite(row.p_holm):
        return "not compared"
    if row.p_holm >= ALPHA:
        return "no significant difference"
    return f"{a.label if row.difference > 0 else b.label} higher"


def _compare_task(
    a: list[ResultRecord], b: list[ResultRecord], resamples: int, seed: int
) -> tuple[dict, str | None]:
    """One row: the primary metric of both sides over the items both hold; and a note for the reader
    when the task could not be compared because of a record (undefined metric, damaged items)."""
    first = a[0]
    metric = first.primary.name
    row = dict.fromkeys(COLUMNS)
    row |= {
        "level": first.task.level,
        "task": first.task.name,
        "dataset": first.dataset.filed_under,
        "metric": metric,
        "seeds": f"{_seeds(a)} / {_seeds(b)}",
    }
    got = gather({"A": a, "B": b}, metric)
    if got.left_out:
        row["note"] = "; ".join(got.left_out.values())
        return row, row["note"]
    if got.why:
        row["note"] = got.why
        return row, None
    dist = bootstrap_entrants(got.spec, got.arrays, got.labels, resamples, seed)
    diff = dist.draws[:, 0] - dist.draws[:, 1]
    estimate = float(dist.estimates[0] - dist.estimates[1])
    lo, hi = percentile_interval(diff)
    notes = [n for n in (_mismatch(got.ids["A"], got.ids["B"]), _one_seed(a, b)) if n]
    row |= {
        "a": float(dist.estimates[0]),
        "b": float(dist.estimates[1]),
        "difference": estimate,
        "lo": lo,
        "hi": hi,
        "p": p_value(diff, estimate),
        "items": len(got.items),
        "note": "; ".join(notes),
    }
    return row, None


def _seeds(records: list[ResultRecord]) -> str:
    seeds = [r.training_seed for r in records]
    return "training-free" if seeds == [None] else ",".join(str(s) for s in seeds)


def _one_seed(a: list[ResultRecord], b: list[ResultRecord]) -> str | None:
    """A trained probe run with one training seed: the interval covers the test items, not its training."""
    if any(len(side) == 1 and side[0].training_seed is not None for side in (a, b)):
        return "one training seed on a side: the interval leaves out what the probe's training adds (--seeds)"
    return None


def _mismatch(a: list[set[str]], b: list[set[str]]) -> str | None:
    """One line naming the items one side holds and the other does not (a skipped image, another split)."""
    in_a, in_b = set().union(*a), set().union(*b)
    only_a, only_b = sorted(in_a - in_b), sorted(in_b - in_a)
    within = sorted(set().union(*a, *b) - set(a[0]).intersection(*a, *b) - set(only_a) - set(only_b))
    kinds = ((only_a, "only in A"), (only_b, "only in B"), (within, "missing from some seeds"))
    parts = [f"{len(names)} item(s) {where} (e.g. {names[0]})" for names, where in kinds if names]
    return "compared on the shared items; " + "; ".join(parts) if parts else None
