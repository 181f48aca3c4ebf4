"""Result records: one JSON file per (encoder, dataset, task), named from those parts.

Every record says what ran (encoder entry, weights identity, data and whether it is synthetic), every knob,
library versions, the git commit, seed and timings, so a number can be traced back to its inputs. A record
whose config hash matches the current inputs is a finished result and is skipped on re-run.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from pydantic import ValidationError

from probebench.io import BadFile, atomic_write, read_bytes, read_json
from probebench.paths import fits_component, results_dir, safe_name, slug
from probebench.results.schema import SCHEMA_VERSION, ResultRecord
from probebench.stats.items import MAX_ITEMS_BYTES, BadItems, ItemScores, items_digest, read_items

log = logging.getLogger(__name__)

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
    encoder: str, dataset: str, task: str, root: Path | None = None, suffixes: list[str] = ()
) -> Path:
    """results/runs/<encoder>__<dataset>__<task>[__<suffix>...].json; suffixes name the run options that
    change the numbers (feature-pooled, seed1; a sweep adds layer6)."""
    parts = [slug(encoder), safe_name(dataset, "dataset"), safe_name(task, "task")]
    parts += [safe_name(s, "suffix") for s in suffixes]
    stem = "__".join(parts)
    fits_component(f"{stem}__layer9999.json", "record file name")  # with room for a layer sweep's suffix
    return (root or results_dir()) / "runs" / f"{stem}.json"


MAX_RECORD_BYTES = 16 * 2**20  # a record is a few kB (per-class numbers of a thousand classes: ~100 kB)


class BadRecord(ValueError):
    """A file in runs/ that is not a current record: the message says which and why, in a few words."""


def read_record(path: Path) -> ResultRecord:
    """A record file read back as untrusted input: a regular file (not a link), bounded, JSON of the
    current schema, every field of the right type. Raises `BadRecord` naming the file."""
    try:
        raw = read_json(path, MAX_RECORD_BYTES)
    except BadFile as exc:
        raise BadRecord(str(exc).replace(f"{path}: ", f"{Path(path).name}: ", 1)) from None
    if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
        found = raw.get("schema_version", 1) if isinstance(raw, dict) else "none"
        newer = isinstance(found, int) and not isinstance(found, bool) and found > SCHEMA_VERSION
        raise BadRecord(
            f"{Path(path).name}: record schema {found}, "
            + (
                f"newer than this probebench reads ({SCHEMA_VERSION}); update probebench"
                if newer
                else f"expected {SCHEMA_VERSION}; re-run it"
            )
        )
    why = _metric_problem(raw)  # first: the most specific account of a hand edit
    try:
        record = ResultRecord.model_validate(raw, context={"recorded": True})
    except ValidationError as exc:
        why = why or f"not a valid record ({exc.error_count()} problem(s))"
    if why:
        raise BadRecord(f"{Path(path).name}: {why}")
    record._path = Path(path)
    return record


def _metric_problem(raw: dict) -> str | None:
    """What makes a record's numbers unreadable (a hand edit, another tool): a metric that is not a finite
    number, list or table, or a primary value that is not its metric's. Tables skip such a number without a
    word otherwise."""
    metrics, primary = raw.get("metrics"), raw.get("primary")
    if not isinstance(metrics, dict) or not isinstance(primary, dict):
        return None  # the schema names it
    for name, value in metrics.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and math.isfinite(value)) and not isinstance(value, list | dict):
            return f"metric {name!r} is {json.dumps(value)[:40]}, not a number; re-run it"
    name, value = primary.get("name"), primary.get("value")
    if isinstance(name, str) and value is not None and metrics.get(name) != value:
        return f"primary value {json.dumps(value)[:40]} is not its metric {name!r}'s"
    return None


def finished(path: Path, config_hash: str) -> bool:
    """A valid record of the current schema with this config hash exists, and its per-item outcomes are
    there with the sha256 it keeps (anything else is recomputed)."""
    if not path.exists() and not path.is_symlink():
        return False
    try:
        record = read_record(path)
        if record.config_hash != config_hash:
            return False
        if record.items is not None:  # the bytes the record wrote; what they hold is checked when read
            data = read_bytes(outputs_dir(path) / record.items.file, MAX_ITEMS_BYTES)
            if items_digest(data) != record.items.sha256:
                raise BadItems(f"{record.items.file} of {Path(path).name}: not the file its record wrote")
        return True
    except BadRecord:
        return False  # a damaged or foreign record is simply recomputed
    except (BadItems, BadFile) as exc:
        log.warning("%s; recomputing the record", exc)
        return False


def read_record_items(path: Path, record: ResultRecord) -> ItemScores:
    """The per-item outcomes kept beside a record, checked against the sha256 the record keeps. Raises
    `BadItems` naming the file (missing, damaged, replaced) or saying the record keeps none."""
    if record.items is None:
        raise BadItems(f"{Path(path).name}: keeps no per-item outcomes")
    info = record.items
    items = read_items(outputs_dir(path) / info.file, info.sha256, info.metrics)
    if {g: len(v) for g, v in items.ids.items()} != info.groups:
        raise BadItems(f"{Path(path).name}: its items file holds other item groups than the record says")
    return items


def outputs_dir(record: Path) -> Path:
    """Per-image outputs and trained heads of a record live beside it, in a folder of the same stem."""
    return record.with_suffix("")


def write_record(path: Path, record: ResultRecord, outputs: dict[str, bytes] | None = None) -> None:
    """Outputs first, then the record (atomically): a record on disk always has its outputs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, data in (outputs or {}).items():
        outputs_dir(path).mkdir(exist_ok=True)
        atomic_write(outputs_dir(path) / safe_name(name, "output file"), data)
    record = record.model_copy(update={"created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    atomic_write(path, record.model_dump_json(indent=1).encode())


def read_records(root: Path | None = None) -> tuple[list[ResultRecord], list[str]]:
    """Valid records under results/runs/, and one line for each file that is not one (unreadable, damaged,
    a link to elsewhere, foreign, or of another schema version): the caller says how many it left out."""
    records, problems = [], []
    for path in sorted(((root or results_dir()) / "runs").glob("*.json")):
        try:
            records.append(read_record(path))
        except BadRecord as exc:
            problems.append(str(exc))
    return records, problems
