"""Result records: one JSON file per (encoder, dataset, task), named from those parts.

Every record says what ran (encoder entry, weights identity, data and whether it is synthetic), every knob,
library versions, the git commit, seed and timings, so a number can be traced back to its inputs. A record
whose config hash matches the current inputs is a finished result and is skipped on re-run.
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from probebench.cache.store import _atomic_write_bytes
from probebench.paths import results_dir, safe_name

_LIBS = (
    "probebench",
    "torch",
    "torchvision",
    "timm",
    "transformers",
    "open_clip_torch",
    "numpy",
    "scikit-learn",
    "pandas",
    "huggingface-hub",
)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


@functools.cache
def git_commit() -> dict[str, str | bool | None]:
    """The commit of the probebench checkout that produced a result, and whether it had local changes.

    Read once per process, when a run starts: the code that runs is the code imported then, even if the
    checkout moves on while a long run is going.
    """
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=here,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def record_path(
    encoder: str, dataset: str, task: str, root: Path | None = None, suffix: str | None = None
) -> Path:
    """results/runs/<encoder>__<dataset>__<task>[__<suffix>].json; the suffix names a layer (layer6)."""
    parts = [safe_name(encoder, "encoder"), safe_name(dataset, "dataset"), safe_name(task, "task")]
    parts += [safe_name(suffix, "suffix")] if suffix else []
    return (root or results_dir()) / "runs" / ("__".join(parts) + ".json")


def finished(path: Path, config_hash: str) -> bool:
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("config_hash") == config_hash
    except (OSError, json.JSONDecodeError):
        return False  # a damaged record is simply recomputed


def write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**record, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _atomic_write_bytes(path, json.dumps(record, indent=1, default=str).encode())


def read_records(root: Path | None = None) -> list[dict]:
    out = []
    for path in sorted(((root or results_dir()) / "runs").glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def leaderboard(root: Path | None = None) -> pd.DataFrame:
    """One row per record: what ran and its metrics, sorted by task, dataset and best first-metric."""
    rows = []
    for r in read_records(root):
        row = {
            "encoder": r["encoder"]["name"],
            "family": r["encoder"]["family"],
            "method": r["encoder"]["method"],
            "task": r["task"]["name"],
            "dataset": r["dataset"]["name"],
            "synthetic": r["dataset"]["synthetic"],
            "feature": r["knobs"]["feature"],
            "layer": r["knobs"]["layer"],
            "weights": r["encoder"]["weights_id"],
        }
        for key, value in r["metrics"].items():
            if isinstance(value, list | tuple):  # a confidence interval: two columns
                row[key.removesuffix("_ci95") + "_lo"], row[key.removesuffix("_ci95") + "_hi"] = value
            else:
                row[key] = value
        row["commit"] = (r.get("git") or {}).get("commit")
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    first_metric = next((c for c in df.columns if c.startswith("top1")), None)
    keys = ["task", "dataset"] + ([first_metric] if first_metric else [])
    return df.sort_values(keys, ascending=[True, True, False][: len(keys)]).reset_index(drop=True)


def _setting(record: dict, suffix: str) -> str:
    """The hyper-parameter behind a number: k for kNN, the chosen C or epoch for the trained probes."""
    probe = record.get("probe") or {}
    if suffix:
        return suffix.lstrip("_").replace("k", "k=", 1)
    if "chosen_c" in probe:
        return f"C={probe['chosen_c']:.3g}"
    if "chosen_epoch" in probe:
        return f"epoch={probe['chosen_epoch']}/{probe['epochs']}"
    return ""


def long_table(root: Path | None = None) -> pd.DataFrame:
    """One row per number: (encoder, task, setting) with top-1, its interval, top-5 and mean per-class."""
    rows = []
    for r in read_records(root):
        m = r["metrics"]
        suffixes = sorted({k[len("top1") :] for k in m if k.startswith("top1") and not k.endswith("_ci95")})
        for sfx in sorted(suffixes, key=lambda x: int(x[2:]) if x else 0):
            rows.append(
                {
                    "encoder": r["encoder"]["name"],
                    "task": r["task"]["name"],
                    "setting": _setting(r, sfx),
                    "dataset": r["dataset"]["name"],
                    "synthetic": r["dataset"]["synthetic"],
                    "feature": r["knobs"]["feature"],
                    "layer": r["knobs"]["layer"],
                    "top1": m[f"top1{sfx}"],
                    "top1_lo": m[f"top1{sfx}_ci95"][0],
                    "top1_hi": m[f"top1{sfx}_ci95"][1],
                    "top5": m.get(f"top5{sfx}"),
                    "mean_per_class": m[f"mean_per_class{sfx}"],
                    "n_test": m.get("n_test"),
                    "weights": r["encoder"]["weights_id"],
                    "commit": (r.get("git") or {}).get("commit"),
                }
            )
    return pd.DataFrame(rows)


def write_leaderboard(root: Path | None = None, long: bool = False) -> tuple[Path, pd.DataFrame]:
    """results/leaderboard.csv (one row per record), or with `long` leaderboard_long.csv (one per number)."""
    df = long_table(root) if long else leaderboard(root)
    path = (root or results_dir()) / ("leaderboard_long.csv" if long else "leaderboard.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, df.to_csv(index=False, float_format="%.2f").encode())
    return path, df
