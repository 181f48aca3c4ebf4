"""The papers' claims tested as claims: for whatever encoders a user ran, each claim of `claims.yaml` gets a
verdict per task and a summary per level, from a hierarchical bootstrap.

A claim says the `higher` families score higher than the `lower` ones at a level. Per task both sides ran,
the family difference is the mean of the higher side's encoders minus the mean of the lower side's; each
bootstrap resample draws test items (shared by every encoder: paired), each encoder's training seeds, and
the encoders within each side, with replacement, so the interval covers the choice of encoders as well as
the test set. The task's verdict: supported when the 95 % interval lies above zero, contradicted when below,
inconclusive otherwise. A level is summarised task by task (supported on k of n tasks, contradicted on m),
never by averaging different metrics. A side of one encoder makes the claim about that encoder, not the
family; where the sides' architectures differ (supervised CNNs against self-supervised ViTs) family and
architecture are confounded, and the comparison within a shared architecture is shown where one exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from scipy.stats import t as student_t

from probebench.errors import UserError
from probebench.results.schema import ResultRecord
from probebench.stats.bootstrap import COMPARE_RESAMPLES, Distribution, bootstrap_entrants
from probebench.stats.entrants import Side, dropped_note, gather, side_records
from probebench.tasks.contract import Level

CLAIMS_FILE = Path(__file__).resolve().parents[1] / "results" / "claims.yaml"
TASK_COLUMNS = ["claim", "level", "versus", "task", "dataset", "metric", "estimate", "lo", "hi", "verdict"]
TASK_COLUMNS += ["higher_encoders", "lower_encoders", "items", "architecture", "within_architecture", "note"]
SUMMARY_COLUMNS = ["claim", "paper", "level", "higher", "versus", "verdict", "supported", "contradicted"]
SUMMARY_COLUMNS += ["tasks"]
SUMMARY_COLUMNS += ["note", "text"]


class Claim(BaseModel):
    """One claim of a paper, as `claims.yaml` states it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    paper: str
    claim: str
    levels: list[Level]
    higher: list[str]
    lower: list[str]
    against: Literal["pooled", "each"] = "pooled"
    tasks: list[str] | None = None


def load_claims(path: Path | None = None) -> list[Claim]:
    """The claims of `path` (default: the shipped claims.yaml), each checked: known fields, levels,
    families (families.yaml) and papers (papers.yaml), unique ids. A problem is one line naming the claim."""
    from probebench.encoders.registry import family_names
    from probebench.results.papers import citations

    path = Path(path or CLAIMS_FILE)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot be read as YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, list):
        raise UserError(f"{path}: expected a list of claims (- id: ..., claim: ..., levels: [...])")
    claims, seen = [], set()
    families, papers = family_names(), citations()
    for i, item in enumerate(raw):
        where = f"{path.name}: claim {item.get('id', i) if isinstance(item, dict) else i}"
        try:
            claim = Claim.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(x) for x in first["loc"]) or "entry"
            raise UserError(f"{where}: {field}: {first['msg']}") from None
        if unknown := [f for f in (*claim.higher, *claim.lower) if f not in families]:
            raise UserError(f"{where}: unknown family {unknown[0]!r}; use one of {', '.join(families)}")
        if claim.paper not in papers:
            raise UserError(f"{where}: unknown paper {claim.paper!r}; use one of {', '.join(papers)}")
        if set(claim.higher) & set(claim.lower) or not claim.higher or not claim.lower:
            raise UserError(f"{where}: higher and lower must be two non-empty, disjoint lists of families")
        if claim.id in seen:
            raise UserError(f"{where}: the id is used twice")
        seen.add(claim.id)
        claims.append(claim)
    return claims


def architecture(record: ResultRecord) -> str:
    """ViT (attention blocks: the encoder has keys) or CNN: what a family comparison may confound."""
    return "ViT" if record.encoder.facts.has_keys else "CNN"


def judge_claims(
    records: list[ResultRecord],
    claims: list[Claim],
    resamples: int = COMPARE_RESAMPLES,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-task verdicts, TASK_COLUMNS; per claim, level and opposing side, SUMMARY_COLUMNS)."""
    own = {n: side_records(records, Side(n)) for n in sorted({r.encoder.name for r in records})}
    tasks, summary = [], []
    for claim in claims:
        versus = [claim.lower] if claim.against == "pooled" else [[f] for f in claim.lower]
        for level in claim.levels:
            for lower in versus:
                rows = _judge(claim, level, lower, own, resamples, seed)
                tasks += rows
                summary.append(_summarise(claim, level, lower, rows, own))
    return pd.DataFrame(tasks, columns=TASK_COLUMNS), pd.DataFrame(summary, columns=SUMMARY_COLUMNS)


def _members(own: dict, families: list[str], key: tuple[str, str]) -> dict[str, list[ResultRecord]]:
    return {n: by[key] for n, by in own.items() if key in by and by[key][0].encoder.family in families}


def _judge(claim: Claim, level: str, lower: list[str], own: dict, resamples: int, seed: int) -> list[dict]:
    keys = sorted({k for by in own.values() for k, rs in by.items() if rs[0].task.level == level})
    rows = []
    for key in keys:
        if claim.tasks is not None and key[0] not in claim.tasks:
            continue
        high, low = _members(own, claim.higher, key), _members(own, lower, key)
        if high and low:
            rows.append(_judge_task(claim, level, lower, key, high, low, resamples, seed))
    return rows


def _judge_task(
    claim: Claim,
    level: str,
    lower: list[str],
    key: tuple[str, str],
    high: dict[str, list[ResultRecord]],
    low: dict[str, list[ResultRecord]],
    resamples: int,
    seed: int,
) -> dict:
    first = next(iter(high.values()))[0]
    metric = first.primary.name
    row = dict.fromkeys(TASK_COLUMNS)
    row |= {"claim": claim.id, "level": level, "versus": ", ".join(lower), "task": key[0], "dataset": key[1]}
    row |= {"metric": metric}
    got = gather({**high, **low}, metric)
    high = {n: v for n, v in high.items() if n in got.names}
    low = {n: v for n, v in low.items() if n in got.names}
    row |= {"higher_encoders": " ".join(high), "lower_encoders": " ".join(low)}
    notes = [f"{n} left out: {why}" for n, why in got.left_out.items()]
    if got.why or not high or not low:
        row |= {
            "verdict": "not judged",
            "note": "; ".join([got.why or "a side has no usable record", *notes]),
        }
        return row
    dist = bootstrap_entrants(got.spec, got.arrays, got.labels, resamples, seed)
    sign = 1.0 if first.primary.higher_is_better else -1.0
    side = np.array([n in high for n in got.names])
    estimate, lo, hi = family_difference(dist, side, sign, seed)
    arch = {n: architecture({**high, **low}[n][0]) for n in got.names}
    kinds_h, kinds_l = {arch[n] for n in high}, {arch[n] for n in low}
    row |= {"estimate": estimate, "lo": lo, "hi": hi, "verdict": _verdict(lo, hi), "items": len(got.items)}
    row["architecture"] = f"{'/'.join(sorted(kinds_h))} vs {'/'.join(sorted(kinds_l))}"
    if kinds_h != kinds_l or len(kinds_h) > 1:
        within = []
        for kind in sorted(kinds_h & kinds_l):
            pick = np.array([arch[n] == kind for n in got.names])
            e, a, b = family_difference(dist, side, sign, seed, pick)
            within.append(f"{kind}: {e:+.2f} [{a:+.2f}, {b:+.2f}], {_verdict(a, b)}")
        row["within_architecture"] = "; ".join(within) or "none: no architecture on both sides"
        notes.append("family and architecture are confounded")
    notes += [f"one {'higher' if s is high else 'lower'} encoder: about {next(iter(s))}, not the family"
              for s in (high, low) if len(s) == 1]  # fmt: skip
    notes += [n for n in (dropped_note(got),) if n]
    row["note"] = "; ".join(notes)
    return row


def family_difference(
    dist: Distribution, side: np.ndarray, sign: float, seed: int, pick: np.ndarray | None = None
) -> tuple[float, float, float]:
    """The higher side's mean minus the lower side's (signed so that positive supports the claim), and its
    95 % interval.

    Each item resample (the columns of `dist.draws`: items and seeds) also draws each side's encoders
    with replacement. A family of k encoders resampled as they are understates the spread between
    encoders by (k - 1) / k and is coarse for a few (two encoders give three possible means), so the draws
    are of their deviations from the side's mean scaled by sqrt(k / (k - 1)), and the interval is the
    estimate +- a Student t quantile on (k_higher - 1) + (k_lower - 1) degrees of freedom times the
    bootstrap standard error (a normal quantile where both sides are one encoder: then only items and seeds
    vary). Simulated with no family difference, 2 to 8 encoders a side, it is wrong 3.5-4 % of the time at
    95 % (the percentile interval of the plain resampling: 10-29 %); `tests/test_stats.py` keeps it under
    9 %."""
    pick = np.ones(len(side), dtype=bool) if pick is None else pick
    rng = np.random.default_rng([seed, 2])
    rows = np.arange(len(dist.draws))[:, None]
    means, estimates, dof = [], [], 0
    for members in (np.flatnonzero(side & pick), np.flatnonzero(~side & pick)):
        k = len(members)
        values = dist.draws[:, members]
        centre = values.mean(1, keepdims=True)
        spread = np.sqrt(k / (k - 1)) if k > 1 else 1.0
        adjusted = centre + spread * (values - centre)
        drawn = rng.integers(0, k, size=(len(values), k))
        means.append(adjusted[rows, drawn].mean(1))
        estimates.append(dist.estimates[members].mean())
        dof += k - 1
    estimate = float(sign * (estimates[0] - estimates[1]))
    diff = sign * (means[0] - means[1])
    se = float(np.std(diff[np.isfinite(diff)], ddof=1))
    q = float(student_t.ppf(0.975, dof)) if dof else 1.959963984540054
    return estimate, estimate - q * se, estimate + q * se


def _verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "supported"
    if hi < 0:
        return "contradicted"
    return "inconclusive"


def _summarise(claim: Claim, level: str, lower: list[str], rows: list[dict], own: dict) -> dict:
    """A claim at one level against one side: supported on k of n tasks, contradicted on m."""
    judged = [r for r in rows if r["verdict"] in ("supported", "contradicted", "inconclusive")]
    k = sum(r["verdict"] == "supported" for r in judged)
    m = sum(r["verdict"] == "contradicted" for r in judged)
    n = len(judged)
    out = {"claim": claim.id, "paper": claim.paper, "level": level, "higher": ", ".join(claim.higher)}
    out["versus"] = ", ".join(lower)
    out |= {"supported": k, "contradicted": m, "tasks": n, "text": claim.claim}
    if not n and rows:  # tasks both sides ran, none of them judged: say why
        why = "; ".join(dict.fromkeys(r["note"] for r in rows if r["note"]))
        return out | {"verdict": "untested", "note": f"no task could be judged: {why}"}
    if not n:
        ran = {
            f
            for by in own.values()
            for rs in by.values()
            if rs[0].task.level == level
            for f in [rs[0].encoder.family]
        }
        missing = [f for f in (*claim.higher, *lower) if f not in ran]
        why = f"no {' or '.join(missing)} encoder has {level}-level results" if missing else "no shared task"
        return out | {"verdict": "untested", "note": why}
    verdict = "inconclusive"
    if k and m:
        verdict = "mixed"
    elif k > n / 2:
        verdict = "supported"
    elif m > n / 2:
        verdict = "contradicted"
    notes = sorted({note for r in judged for note in (r["note"] or "").split("; ") if note})
    family = {name: rs[0].encoder.family for name, by in own.items() for rs in by.values()}
    seen = {family[e] for r in judged for e in f"{r['higher_encoders']} {r['lower_encoders']}".split()}
    if absent := [f for f in (*claim.higher, *lower) if f not in seen]:  # judged without them
        notes.insert(0, f"no {' or '.join(absent)} encoder ran these tasks: judged without that family")
    return out | {"verdict": verdict, "note": "; ".join(notes)}
