"""The report's Findings: plain sentences, each with the numbers and intervals behind it, written from the
claims' verdicts (`probebench.stats.claims`) and the ranks with ties (`probebench.stats.ranks`).

What the records cannot say is said too: a family with one encoder, families confounded with architecture,
a claim no encoder here can test, a set of encoders that are all one family.
"""

from __future__ import annotations

import pandas as pd

from probebench.results.schema import ResultRecord
from probebench.stats.claims import architecture


def findings(
    records: list[ResultRecord], summary: pd.DataFrame, per_task: pd.DataFrame, ranks: pd.DataFrame
) -> list[str]:
    """The Findings section's paragraphs, in order: who ran, each claim's verdict, each task's ranking."""
    if not records:
        return ["No results yet: run `probebench run` first."]
    out = [_who(records)]
    for _, rows in summary.groupby("claim", sort=False):
        if (rows.verdict == "untested").all():  # one sentence for the claim, not one per level and side
            first, levels = rows.iloc[0], list(dict.fromkeys(rows.level))
            ran = {(r.task.level, r.encoder.family) for r in records}
            sides = [*first.higher.split(", "), *(f for v in rows.versus for f in v.split(", "))]
            families = dict.fromkeys(sides)
            missing = {lvl: [f for f in families if (lvl, f) not in ran] for lvl in levels}
            said = [f"no {_either(m)} encoder has {lvl}-level results" for lvl, m in missing.items() if m]
            why = "; ".join(said) if said else "; ".join(dict.fromkeys(rows.note))
            out.append(f"{first.paper}: \u201c{first.text}\u201d: untested here, as {why}.")
        else:
            out += [_claim(row, per_task) for row in rows.itertuples()]
    out += _rankings(ranks)
    return out


def _either(names: list[str]) -> str:
    """`a`, `a or b`, `a, b or c`."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _who(records: list[ResultRecord]) -> str:
    families: dict[str, set[str]] = {}
    kinds: dict[str, set[str]] = {}
    for r in records:
        families.setdefault(r.encoder.family, set()).add(r.encoder.name)
        kinds.setdefault(r.encoder.family, set()).add(architecture(r))
    n = len({r.encoder.name for r in records})
    listed = "; ".join(
        f"{f} ({'/'.join(sorted(kinds[f]))}): {', '.join(sorted(names))}"
        for f, names in sorted(families.items())
    )
    plural = "family" if len(families) == 1 else "families"
    text = f"{n} encoder(s) have results here, from {len(families)} {plural}: {listed}."
    if len(families) == 1:
        only = next(iter(families))
        text += (
            f" They are all {only} {'/'.join(sorted(kinds[only]))}s, one family: the papers' claims compare "
            "families, so none can be tested on these records. What they do support is below: which of these "
            "encoders differ, task by task, and by how much."
        )
    return text


def _claim(row, per_task: pd.DataFrame) -> str:
    head = f"{row.paper}: \u201c{row.text}\u201d ({row.level} level, against {row.versus})"
    if row.verdict == "untested":
        return f"{head}: untested here; {row.note}."
    text = (
        f"{head}: {row.verdict}, supported on {row.supported} of {row.tasks} task(s) and contradicted on "
        f"{row.contradicted}."
    )
    mine = per_task[
        (per_task.claim == row.claim) & (per_task.level == row.level) & (per_task.versus == row.versus)
    ]
    for t in mine.itertuples():
        if pd.isna(t.estimate):
            text += f" {t.task}: not judged ({t.note})."
            continue
        text += (
            f" {t.task} ({t.metric}): family difference {t.estimate:+.2f} points, 95 % interval "
            f"[{t.lo:+.2f}, {t.hi:+.2f}], {t.verdict}"
        )
        if isinstance(t.within_architecture, str) and t.within_architecture:
            text += f"; within one architecture: {t.within_architecture}"
        text += "."
    if isinstance(row.note, str) and row.note:
        text += f" Note: {row.note}."
    return text


def _rankings(ranks: pd.DataFrame) -> list[str]:
    out = []
    for (task, dataset, metric), g in ranks.groupby(["task", "dataset", "metric"], sort=True):
        unranked = g[g["rank"].isna()]
        g = g[g["rank"].notna()].sort_values(["rank", "value"], ascending=[True, False])
        if g.empty:
            out.append(f"On {task} ({dataset}, {metric}), no ranking: {unranked.iloc[0].note}.")
            continue
        first = g[g["rank"] == 1]
        names = ", ".join(f"{r.encoder} ({r.value:.2f})" for r in first.itertuples())
        if len(first) == 1:
            text = (
                f"On {task} ({dataset}, {metric}), {names} ranks first: the only encoder that no other is "
                "significantly above"
            )
        else:
            text = (
                f"On {task} ({dataset}, {metric}), {names} share the first rank: the differences between "
                "them are not significant"
            )
        rest = g[g["rank"] > 1]
        if not rest.empty:
            below = [f"{r.encoder} {r.value:.2f} (rank {r.rank})" for r in rest.itertuples()]
            text += "; then " + ", ".join(below)
        intervals = ", ".join(f"{r.encoder} {r.rank_lo}-{r.rank_hi}" for r in g.itertuples())
        text += f". 95 % rank intervals: {intervals}."
        if not unranked.empty:
            text += (
                " Not ranked: " + "; ".join(f"{r.encoder} ({r.note})" for r in unranked.itertuples()) + "."
            )
        out.append(text)
    return out
