"""Looking before running: `list encoders|datasets|tasks`, `show` (an encoder's protocol card), `validate`
(registry, datasets and tasks files) and `doctor` (every dataset against its files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from probebench.cli.app import app, list_app
from probebench.cli.common import DataRoot, Datasets, Family, Registry, TasksFile, Weights, table
from probebench.errors import UserError


@list_app.command("encoders")
def list_encoders(registry: Registry = None):
    """Registry encoders, with whether their weights are on this machine."""
    from probebench.encoders.load import resolve_encoder
    from probebench.encoders.registry import load_registry

    rows = []
    for name, entry in load_registry(registry).items():
        spec = resolve_encoder(entry, strict_available=False, download=False)
        rows.append(
            {
                "name": name,
                "family": entry.family,
                "method": entry.method,
                "arch": entry.arch,
                "source": entry.source.kind,
                "offline": "yes" if spec.weights_id != "unavailable" else "no",
            }
        )
    typer.echo(table(rows))


@list_app.command("datasets")
def list_datasets(datasets: Datasets = None, data_root: DataRoot = None, tasks: TasksFile = None):
    """Built-in, user and named datasets: format, the images found per split, the tasks that read them."""
    typer.echo(table(_dataset_rows(datasets, data_root, tasks)))


@list_app.command("tasks")
def list_tasks(tasks: TasksFile = None):
    """Shipped and user tasks: probe, level, data, primary metric, knobs set, groups and suites."""
    from probebench.tasks import load_tasks

    rows = [
        {
            "name": t.name,
            "probe": t.probe.name,
            "level": t.level,
            "data": " ".join(f"{r}={d}:{sp}" for r, (d, sp) in t.bindings.items())
            + (f" ({t.crops.source} crops)" if t.crops is not None else "")
            + (f" ({t.needs.windows.crop} px windows)" if t.needs.windows is not None else ""),
            "primary": t.primary.name,
            "knobs": ",".join(f"{k}={v}" for k, v in t.overrides.items()) or "-",
            "groups": ",".join(t.groups) or "-",
            "suites": ",".join(t.suites) or "-",
            "from": t.source,
        }
        for t in load_tasks(tasks).values()
    ]
    typer.echo(table(rows))


def _dataset_rows(datasets: Path | None, data_root: Path | None, tasks_file: Path | None) -> list[dict]:
    """Built-in and user datasets: format, splits with the image counts found, tasks; never raises for one."""
    from probebench.data.lookup import all_datasets, get_dataset
    from probebench.tasks import load_tasks

    rows = []
    known_tasks = load_tasks(tasks_file)
    for name, source, entry in all_datasets(datasets):
        fmt = entry.format if entry is not None else "built-in"
        try:
            ds = get_dataset(name, datasets, data_root)
            found = " ".join(f"{sp}={n}" for sp, n in ds.describe()["splits"].items())
        except UserError as exc:
            found = f"not found ({str(exc).split(';')[0]})"
        tasks = sorted(
            {t.name for t in known_tasks.values() if name in {d for d, _ in t.bindings.values()}}
            | set(entry.tasks if source == "user" else [])
        )
        rows.append(
            {
                "name": name,
                "format": fmt,
                "splits": found,
                "tasks": ",".join(tasks) or "-",
                "synthetic": "yes" if name == "embedded" else "no",
            }
        )
    return rows


@app.command("show")
def show_command(
    encoder: Annotated[
        str,
        typer.Argument(
            help="Registry name, or a model named directly (timm:NAME, hf:ORG/REPO@REV, open_clip:MODEL/TAG)."
        ),
    ],
    family: Family = None,
    weights: Weights = None,
    registry: Registry = None,
):
    """The encoder's protocol card: what a run would read (weights, preprocessing and where each value came
    from, resolution, tokens, keys, attention, positions, feature, precision, deviations)."""
    from probebench.encoders.card import protocol_card
    from probebench.encoders.registry import get_entry, load_registry

    lines = protocol_card(get_entry(load_registry(registry), encoder, family), weights)
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        typer.echo(f"{key:<{width}}  {value}")


@app.command("validate")
def validate_command(
    path: Annotated[
        Path | None, typer.Argument(help="Registry file (default: the active encoders.yaml).")
    ] = None,
    datasets: Annotated[
        Path | None, typer.Option("--datasets", help="Also check this datasets config.")
    ] = None,
    tasks: Annotated[Path | None, typer.Option("--tasks", help="Also check this tasks file.")] = None,
    data_root: DataRoot = None,
):
    """Check a registry file (and a datasets config, a tasks file): fields, types, unknown keys, names; for
    datasets also each root (with its ${VAR}s) and the files its format reads. Every problem is one line."""
    from probebench.encoders.registry import load_registry

    problems: list[str] = []

    def check(what, fn):
        try:
            typer.echo(f"ok: {fn()} {what}")
        except UserError as exc:
            problems.extend(str(exc).splitlines())

    check("encoders", lambda: len(load_registry(path)))
    if datasets is not None:
        check(
            "datasets (fields, roots, ${VAR}s and the files each format reads)",
            lambda: _check_datasets(datasets, data_root),
        )
    if tasks is not None:
        check("tasks (knobs, and the data each reads)", lambda: _check_tasks(tasks, datasets, data_root))
    if problems:
        raise UserError("\n".join(problems))


def _check_tasks(tasks: Path, datasets: Path | None, data_root: Path | None) -> int:
    """A tasks file's entries (one line per bad field), its names against the shipped tasks, and each task
    against its data as `run` reads it: the datasets exist and read, its crops or windows can be made."""
    from probebench.config import read_config
    from probebench.pipeline.data import check_task_data
    from probebench.tasks.catalog import clashes, parse_tasks, shipped_tasks, user_tasks_path

    path_ = user_tasks_path(tasks)
    mine, shipped = parse_tasks(read_config(path_), str(path_)), shipped_tasks()
    problems = clashes(mine, shipped, path_)
    problems += check_task_data([t for n, t in mine.items() if n not in shipped], datasets, data_root)
    if problems:
        raise UserError("\n".join(problems))
    return len(mine)


def _check_datasets(datasets: Path, data_root: Path | None) -> int:
    """Every entry of a datasets config read as its format reads it; all problems raised together."""
    from probebench.data.config import build_dataset, config_path, load_datasets, resolve_root
    from probebench.data.lookup import BUILTIN

    entries, problems = load_datasets(datasets), []
    for name, entry in entries.items():
        if name in BUILTIN:
            problems.append(
                f"{datasets}: dataset {name!r} has a built-in name and would be ignored; rename it"
            )
            continue
        try:
            ds = build_dataset(entry, resolve_root(entry, config_path(datasets).parent, data_root))
        except UserError as exc:
            problems.append(f"{datasets}: {exc}")
            continue
        if not len(ds):
            problems.append(f"{datasets}: dataset {name!r}: no images found under {ds.root}")
        else:
            counts = " ".join(f"{sp}={n}" for sp, n in ds.describe()["splits"].items())
            typer.echo(f"   dataset {name!r}: {entry.format} at {ds.root}, {counts}")
    if problems:
        raise UserError("\n".join(problems))
    return len(entries)
