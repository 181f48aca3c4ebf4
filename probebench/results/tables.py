"""The leaderboard: result records merged into the tables a researcher would put in a paper.

- `build_leaderboard()` reads every record under results/runs/ into one long table, a row per number. It
  leaves out,
  and says so in one line each: records of an older protocol version than the task's probe runs now,
  duplicates of the same (encoder, task, dataset, layer, feature, seed) (the newest is kept), metrics
  without a value, and files that are not records.
- `wide()`: encoders as rows, task x dataset x primary metric as columns.
- `families()`: mean, spread and count of each score per encoder family, so the papers' claims can be read
  family by family.
- `papers()`: every published number (`papers.yaml`) that has a record of ours beside it, and the difference.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from probebench.encoders.registry import family_names
from probebench.errors import UserError
from probebench.paths import results_dir
from probebench.results.details import AttentiveDetails, DiscoveryDetails, LinearDetails
from probebench.results.papers import KEY, published
from probebench.results.records import ResultRecord, read_records
from probebench.results.render import render_table
from probebench.results.schema import SCHEMA_VERSION

FLAG_POINTS = 1.0  # a difference from the paper beyond this many points is flagged
LONG_COLUMNS = [
    "encoder",
    "family",
    "task",
    "level",
    "dataset",
    "metric",
    "variant",
    "value",
    "lo",
    "hi",
    "synthetic",
    "protocol",
    "commit",
    "primary",
    "layer",
    "layer_sweep",
    "feature",
    "seed",  # the training seed; empty for a training-free probe
    "resampling_seed",
    "setting",
    "weights",
    "why",  # a metric the data cannot define has no value, and this says why
]
_K = re.compile(r"^(?P<base>.+)_k(?P<k>\d+)$")


@dataclass
class Leaderboard:
    long: pd.DataFrame  # LONG_COLUMNS, one row per number
    notes: list[str] = field(default_factory=list)  # one line per kind of thing left out
    problems: list[str] = field(default_factory=list)  # each record file that could not be read, by name
    records: list[ResultRecord] = field(default_factory=list)  # the records the numbers come from


def split_metric(name: str, methods: list[str]) -> tuple[str, str]:
    """A record's metric name -> (metric, variant): kNN's `top1_k20` is (top1, k=20); a discovery record's
    `lost_corloc` is (corloc, lost), its methods being named in its knobs."""
    if m := _K.match(name):
        return m["base"], f"k={m['k']}"
    for method in sorted(methods, key=len, reverse=True):  # heap_no_intra before heap
        if name.startswith(method + "_"):
            return name[len(method) + 1 :], method
    return name, ""


def _setting(record: ResultRecord) -> str:
    """The hyper-parameter the probe chose: the C or the epoch."""
    if isinstance(record.probe, LinearDetails):
        return f"C={record.probe.chosen_c:.3g}"
    if isinstance(record.probe, AttentiveDetails):
        return f"epoch={record.probe.chosen_epoch}/{record.probe.epochs}"
    return ""


def _rows(r: ResultRecord) -> list[dict]:
    ci = {
        k[: -len("_ci95")]: v
        for k, v in r.metrics.items()
        if k.endswith("_ci95") and isinstance(v, list | tuple) and len(v) == 2
    }
    methods = r.probe.methods if isinstance(r.probe, DiscoveryDetails) else []
    layer = r.knobs.layer
    common = {
        "encoder": r.encoder.name,
        "family": r.encoder.family,
        "task": r.task.name,
        "level": r.task.level,
        "dataset": r.dataset.filed_under,  # crops are filed under their dataset
        "synthetic": r.synthetic,
        "protocol": r.task.protocol_version,
        "commit": r.git.commit,
        "layer": json.dumps(layer) if isinstance(layer, list) else layer,
        "layer_sweep": r.knobs.layer_sweep,
        "feature": r.knobs.feature,
        "seed": r.training_seed,
        "resampling_seed": r.resampling_seed,
        "setting": _setting(r),
        "weights": r.encoder.weights_id,
    }
    rows = []
    for name, value in r.metrics.items():
        if name.startswith("n_") or name.endswith("_ci95") or isinstance(value, bool):
            continue  # sample counts describe a number; intervals ride along with theirs
        if not isinstance(value, int | float) or not math.isfinite(value):
            continue
        metric, variant = split_metric(name, methods)
        lo, hi = ci.get(name, (None, None))
        rows.append(
            {
                **common,
                "metric": metric,
                "variant": variant,
                "value": float(value),
                "lo": lo,
                "hi": hi,
                "primary": name == r.primary.name,
                "why": "",
            }
        )
    for name, why in r.undefined.items():  # shown as missing, with the reason
        metric, variant = split_metric(name, methods)
        rows.append(
            {
                **common,
                "metric": metric,
                "variant": variant,
                "value": float("nan"),
                "lo": None,
                "hi": None,
                "primary": name == r.primary.name,
                "why": f"undefined: {why}",
            }
        )
    return rows


def _current_protocol(probe: str) -> str | None:
    """The protocol version the probe runs now; None for a probe this checkout does not have."""
    from probebench.tasks.probes import PROBES

    return PROBES[probe].protocol_version if probe in PROBES else None


def build_leaderboard(root: Path | None = None) -> Leaderboard:
    """Every current record's numbers, and a line for each kind of record left out."""
    records, problems = read_records(root)
    notes = []
    if problems:
        notes.append(
            f"left out {len(problems)} file(s) in runs/ that are not readable records of schema "
            f"{SCHEMA_VERSION} (named above); re-run them"
        )
    now = {p: _current_protocol(p) for p in {r.task.probe for r in records}}
    other = [r for r in records if now[r.task.probe] not in (None, r.task.protocol_version)]
    for label, fix, ahead in (
        ("an older", "re-run them with --force to include them", False),
        ("a newer", "they were made by a newer probebench; update this one to read them", True),
    ):
        these = [r for r in other if _newer(r.task.protocol_version, now[r.task.probe]) == ahead]
        if these:
            tasks = sorted({f"{r.task.name} (v{r.task.protocol_version})" for r in these})
            notes.append(
                f"left out {len(these)} record(s) of {label} protocol version: {', '.join(tasks)}; {fix}"
            )
    current = [r for r in records if r not in other]
    # The same result recorded twice (a copy from another machine, a renamed file): keep the newest.
    newest: dict[tuple, ResultRecord] = {}
    for r in sorted(current, key=lambda r: r.created or ""):
        key = (
            r.encoder.name,
            r.task.name,
            r.dataset.filed_under,
            json.dumps(r.knobs.layer),
            r.knobs.layer_sweep,
            r.knobs.feature,
            r.training_seed,
            r.resampling_seed,
        )
        newest[key] = r
    if dropped := len(current) - len(newest):
        notes.append(f"left out {dropped} duplicate record(s) of the same result; kept the newest of each")
    rows = [row for r in newest.values() for row in _rows(r)]
    undefined = [r for r in newest.values() if r.primary.value is None and r.primary.name in r.undefined]
    if undefined:
        said = "; ".join(
            sorted(f"{r.encoder.name} x {r.task.name}: {r.undefined[r.primary.name]}" for r in undefined)
        )
        notes.append(
            f"{len(undefined)} record(s) have no number for their primary metric, as it is undefined: {said}"
        )
    empty = [r for r in newest.values() if r.primary.value is None and r.primary.name not in r.undefined]
    if empty:
        names = ", ".join(sorted(f"{r.encoder.name} x {r.task.name}" for r in empty))
        notes.append(f"{len(empty)} record(s) have no value for their primary metric: {names}")
    # Typed even when empty: an empty object column used as a mask would be read as a column list.
    long = pd.DataFrame(rows, columns=LONG_COLUMNS).astype(
        {"primary": bool, "layer_sweep": bool, "synthetic": bool}
    )
    long = long.sort_values(["level", "task", "dataset", "metric", "variant", "encoder"], kind="stable")
    return Leaderboard(long.reset_index(drop=True), notes, problems, list(newest.values()))


def select(
    df: pd.DataFrame,
    *,
    task: list[str] | None = None,
    level: list[str] | None = None,
    family: list[str] | None = None,
    encoder: list[str] | None = None,
    dataset: list[str] | None = None,
) -> pd.DataFrame:
    """Rows matching every given filter (each a list of accepted values). A value no result has is one
    line with the close matches (a typo must not read as "no results"); a level or family that does not
    exist at all is one line too, even on an empty table."""
    from probebench.tasks.contract import LEVELS

    for column, accepted, known in (
        ("task", task, None),
        ("level", level, LEVELS),
        ("family", family, family_names()),
        ("encoder", encoder, None),
        ("dataset", dataset, None),
    ):
        if not accepted:
            continue
        for value in accepted:
            if known is not None and value not in known:
                raise UserError(f"--{column} {value!r}: use one of {', '.join(known)}")
            have = sorted(set(df[column].dropna().astype(str)))
            if have and value not in have:
                close = difflib.get_close_matches(value, have, n=3, cutoff=0.5)
                hint = f"did you mean {', '.join(close)}?" if close else f"the results have {_listed(have)}"
                raise UserError(f"--{column} {value!r} matches no result; {hint}")
        df = df[df[column].isin(accepted)]
    return df


def _listed(names: list[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _newer(version: str, than: str | None) -> bool:
    """Protocol versions are whole numbers written as strings ("2"); others compare as text."""
    if than is None:
        return False
    if version.isdigit() and than.isdigit():
        return int(version) > int(than)
    return version > than


def headline(long: pd.DataFrame) -> pd.DataFrame:
    """The primary metric of each task's own records (no layer sweeps), one row per training seed, at the
    lowest resampling seed each result has (another resampling seed repeats the number with other
    intervals)."""
    h = long[long["primary"] & ~long["layer_sweep"]]
    if h.empty:
        return h
    lowest = h.groupby(["encoder", "task", "dataset"])["resampling_seed"].transform("min")
    return h[h["resampling_seed"] == lowest]


def across_seeds(long: pd.DataFrame) -> pd.DataFrame:
    """Each headline score over its training seeds: the mean, the standard deviation across seeds (NaN with
    one), the number of seeds, and each seed's value with its 95 % interval (`seed 1: 71.20 [68.10, 74.00]`);
    a training-free result says so instead of a seed."""
    h = headline(long)
    keys = ["encoder", "family", "level", "task", "dataset", "metric", "variant", "feature"]
    cols = [*keys, "mean", "std", "n_seeds", "per_seed"]
    if h.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for key, g in h.groupby(keys, sort=False, dropna=False):
        g = g.sort_values("seed", na_position="first")
        said = [
            ("training-free" if pd.isna(r.seed) else f"seed {int(r.seed)}")
            + (f": {r.value:.2f}" + (f" [{r.lo:.2f}, {r.hi:.2f}]" if pd.notna(r.lo) else ""))
            for r in g.itertuples()
        ]
        values = g["value"].dropna()
        mean = float(values.mean()) if len(values) else float("nan")
        std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        out.append([*key, mean, std, len(g), "; ".join(said)])
    return pd.DataFrame(out, columns=cols)


def column_name(row: pd.Series) -> str:
    """task/dataset/metric[/variant]: how a wide table names a score."""
    parts = [row["task"], row["dataset"], row["metric"]] + ([row["variant"]] if row["variant"] else [])
    return "/".join(parts)


def wide(long: pd.DataFrame) -> pd.DataFrame:
    """Encoders as rows (with their family), one column per task x dataset x primary metric."""
    h = headline(long)
    if h.empty:
        return pd.DataFrame(columns=["encoder", "family"])
    h = h.assign(column=h.apply(column_name, axis=1))
    # several training seeds: their mean (`across_seeds` has the spread)
    table = h.pivot_table(index=["encoder", "family"], columns="column", values="value", aggfunc="mean")
    table.columns.name = None
    table = table.reset_index()
    table["_order"] = table["family"].map(family_order)
    return table.sort_values(["_order", "encoder"]).drop(columns="_order").reset_index(drop=True)


def variants(long: pd.DataFrame) -> pd.DataFrame:
    """Each record's primary metric under every variant it has (each discovery method, each kNN k): rows
    (encoder, family, task, dataset, metric), one column per variant. Empty where no record has variants."""
    h = headline(long)
    keys = ["encoder", "task", "dataset", "metric"]
    rows = long[~long.layer_sweep].merge(h[keys].drop_duplicates(), on=keys)
    rows = rows[rows.variant != ""]
    if rows.empty:
        return pd.DataFrame(columns=["encoder", "family", "task", "dataset", "metric"])
    table = rows.pivot_table(
        index=["encoder", "family", "task", "dataset", "metric"],
        columns="variant",
        values="value",
        aggfunc="mean",  # over training seeds
    )
    table.columns.name = None
    table = table.reset_index()
    table["_order"] = table["family"].map(family_order)
    return (
        table.sort_values(["task", "dataset", "_order", "encoder"])
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def family_order(family: str) -> int:
    """The registry's family order; families it does not know come last."""
    order = family_names()
    return order.index(family) if family in order else len(order)


def families(long: pd.DataFrame) -> pd.DataFrame:
    """Per family and score (task, dataset, metric, variant): mean, standard deviation, min, max and count of
    the encoders' values (headline rows)."""
    h = headline(long)
    cols = ["family", "level", "task", "dataset", "metric", "variant"]
    if h.empty:
        return pd.DataFrame(columns=[*cols, "mean", "std", "min", "max", "n_encoders", "encoders"])
    h = h.groupby([*cols, "encoder"], sort=False, as_index=False)["value"].mean()  # seeds: each encoder once
    g = h.groupby(cols, sort=False)
    out = g["value"].agg(["mean", "std", "min", "max"]).join(g["encoder"].agg(["count", _names]))
    out = out.rename(columns={"count": "n_encoders", "_names": "encoders"}).reset_index()
    out["_order"] = out["family"].map(family_order)
    return (
        out.sort_values(["level", "task", "dataset", "metric", "variant", "_order"])
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def _names(s: pd.Series) -> str:
    return " ".join(sorted(s))


def papers(long: pd.DataFrame, flag: float = FLAG_POINTS) -> pd.DataFrame:
    """Each published number that has a number of ours beside it: ours (the mean over training seeds, with
    its interval where there is one seed; `n_seeds`), the paper's, the difference (ours - paper) and
    whether it is beyond `flag` points. Another image feature or layer is another row."""
    pub = published()
    rows = long[~long["layer_sweep"]]
    keys = [*KEY, "family", "synthetic", "feature", "layer"]
    lowest = rows.groupby(keys, dropna=False)["resampling_seed"].transform("min")
    rows = rows[rows["resampling_seed"] == lowest]  # another resampling seed repeats the number
    ours = (
        rows.groupby(keys, dropna=False, sort=False)
        .agg(value=("value", "mean"), lo=("lo", "first"), hi=("hi", "first"), n_seeds=("value", "size"))
        .reset_index()
    )
    ours.loc[ours["n_seeds"] > 1, ["lo", "hi"]] = float("nan")  # the seeds view has each seed's interval
    both = pub.merge(ours, on=KEY, how="inner")
    both["difference"] = both["value"] - both["paper_value"]
    both["flagged"] = both["difference"].abs() > flag
    cols = [*KEY, "family", "value", "lo", "hi", "n_seeds", "paper_value", "difference", "flagged", "paper"]
    cols += ["table"]
    return both[[*cols, "note", "synthetic"]].reset_index(drop=True)


def write(board: Leaderboard, root: Path | None = None) -> dict[str, Path]:
    """results/leaderboard.csv (long), leaderboard_wide.csv, leaderboard_families.csv and
    leaderboard_papers.csv, each written atomically."""
    from probebench.io import atomic_write

    root = root or results_dir()
    writable(root)
    tables = {
        "leaderboard.csv": board.long,
        "leaderboard_wide.csv": wide(board.long),
        "leaderboard_families.csv": families(board.long),
        "leaderboard_papers.csv": papers(board.long),
    }
    paths = {}
    for name, df in tables.items():
        paths[name] = root / name
        atomic_write(paths[name], render_table(df, "csv").encode())
    return paths


def refresh(root: Path | None = None) -> tuple[Leaderboard, dict[str, Path]]:
    """Build and write the tables under `results/.leaderboard.lock`. Many jobs finish at once on a cluster:
    each reads the records only after the previous writer is done, so the last tables written hold every
    record written before them, and no writer replaces newer tables with older ones."""
    from filelock import FileLock

    root = root or results_dir()
    writable(root)
    with FileLock(root / ".leaderboard.lock"):
        board = build_leaderboard(root)
        return board, write(board, root)


VIEWS = {"wide": wide, "long": lambda df: df, "families": families, "papers": papers, "seeds": across_seeds}


def writable(folder: Path) -> None:
    """Make `folder` if needed, or one clear line saying why it cannot be written."""
    import os

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot write to {folder} ({exc.strerror}); set PROBEBENCH_RESULTS to a writable folder"
        ) from None
    if not os.access(folder, os.W_OK):
        raise UserError(
            f"cannot write to {folder} (permission denied); set PROBEBENCH_RESULTS to a writable folder"
        )
