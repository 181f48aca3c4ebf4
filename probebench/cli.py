"""The `probebench` command line. Thin: parses options and calls the pipeline, cache and registry modules.

Bad input is one line on stderr naming the problem and the fix, exit code 2, no traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import typer

from probebench.data.base import MAX_PIXELS
from probebench.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Probe frozen pretrained image encoders for object- and part-level knowledge.",
)
cache_app = typer.Typer(no_args_is_help=True, help="Inspect and prune the feature cache.")
app.add_typer(cache_app, name="cache")
data_app = typer.Typer(no_args_is_help=True, help="Get the papers' datasets.")
app.add_typer(data_app, name="data")

FamilyOpt = typer.Option(
    None, "--family", help="Family of the models named directly (-e timm:NAME); default unlabelled."
)
RegistryOpt = typer.Option(None, "--registry", help="Encoder registry file (default: encoders.yaml).")
DatasetsOpt = typer.Option(None, "--datasets", help="Datasets config (default: ./datasets.yaml if present).")
TasksOpt = typer.Option(None, "--tasks", help="Tasks file (default: ./tasks.yaml if present).")
MaxPixelsOpt = typer.Option(
    MAX_PIXELS, "--max-pixels", help="Skip images with more pixels as unreadable (decompression bombs)."
)
DataRootOpt = typer.Option(
    None, "--data-root", help="Base folder for relative dataset roots ($PROBEBENCH_DATA)."
)


def _registry(path: Path | None):
    from probebench.registry import load_registry

    return load_registry(path)


def _table(rows: list[dict]) -> str:
    if not rows:
        return "(none)"
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols), "  ".join("-" * width[c] for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)


@app.command("list")
def list_cmd(
    what: str = typer.Argument(..., help="encoders, datasets or tasks"),
    registry: Path = RegistryOpt,
    datasets: Path = DatasetsOpt,
    data_root: Path = DataRootOpt,
    tasks: Path = TasksOpt,
):
    """List encoders (with offline availability), datasets or tasks."""
    if what == "encoders":
        from probebench.encoders.load import resolve

        rows = []
        for name, entry in _registry(registry).items():
            spec = resolve(entry, strict_available=False, download=False)
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
        typer.echo(_table(rows))
    elif what == "datasets":
        typer.echo(_table(_dataset_rows(datasets, data_root, tasks)))
    elif what == "tasks":
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
        typer.echo(_table(rows))
    else:
        raise UserError(f"cannot list {what!r}; use `probebench list encoders|datasets|tasks`")


def _dataset_rows(datasets: Path | None, data_root: Path | None, tasks_file: Path | None) -> list[dict]:
    """Built-in and user datasets: format, splits with the image counts found, tasks; never raises for one."""
    from probebench.data.catalog import CATALOG
    from probebench.data.config import load_datasets
    from probebench.data.lookup import BUILTIN, get_dataset
    from probebench.tasks import load_tasks

    rows = []
    known_tasks = load_tasks(tasks_file)
    user = load_datasets(datasets)
    for name in [*BUILTIN, *user, *(n for n in CATALOG if n not in user)]:
        fmt = user[name].format if name in user else CATALOG[name].format if name in CATALOG else "built-in"
        try:
            ds = get_dataset(name, datasets, data_root)
            found = " ".join(f"{sp}={n}" for sp, n in ds.describe()["splits"].items())
        except UserError as exc:
            found = f"not found ({str(exc).split(';')[0]})"
        tasks = sorted(
            {t.name for t in known_tasks.values() if name in {d for d, _ in t.bindings.values()}}
            | set(user[name].tasks if name in user else [])
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


@app.command()
def show(
    encoder: str = typer.Argument(
        ...,
        help="Registry name, or a model named directly (timm:NAME, hf:ORG/REPO@REV, open_clip:MODEL/TAG).",
    ),
    family: str = FamilyOpt,
    weights: Path = typer.Option(None, "--weights", help="Weights file for sources that cannot download."),
    registry: Path = RegistryOpt,
):
    """The encoder's protocol card: what a run would read (weights, preprocessing and where each value came
    from, resolution, tokens, keys, attention, positions, feature, precision, deviations)."""
    from probebench.encoders.card import protocol_card
    from probebench.registry import get_entry

    lines = protocol_card(get_entry(_registry(registry), encoder, family), weights)
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        typer.echo(f"{key:<{width}}  {value}")


@app.command()
def validate(
    path: Path = typer.Argument(None, help="Registry file (default: the active encoders.yaml)."),
    datasets: Path = typer.Option(None, "--datasets", help="Also check this datasets config."),
    tasks: Path = typer.Option(None, "--tasks", help="Also check this tasks file."),
    data_root: Path = DataRootOpt,
):
    """Check a registry file (and a datasets config, a tasks file): fields, types, unknown keys, names; for
    datasets also each root (with its ${VAR}s) and the files its format reads. Every problem is one line."""
    problems: list[str] = []

    def check(what, fn):
        try:
            typer.echo(f"ok: {fn()} {what}")
        except UserError as exc:
            problems.extend(str(exc).splitlines())

    check("encoders", lambda: len(_registry(path)))
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
    from probebench.pipeline import check_task_data
    from probebench.registry import read_config
    from probebench.tasks.spec import clashes, parse_tasks, shipped_tasks, user_tasks_path

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


def _options(batch_size: int, workers: int | None, device: str | None, strict: bool, max_pixels: int):
    from probebench.extract import Options

    return Options(
        batch_size=batch_size, num_workers=workers, device=device, strict=strict, max_pixels=max_pixels
    )


def _layers(values: list[str] | None) -> tuple[int | str, ...] | None:
    """--layer values: block indices (negative from the end) or "all"; none given -> None (the last block)."""
    if not values:
        return None
    out: list[int | str] = []
    for v in values:
        if v == "all":
            out.append(v)
            continue
        try:
            out.append(int(v))
        except ValueError:
            raise UserError(f"--layer {v!r}: give a block index (negative from the end) or 'all'") from None
    return tuple(out)


@app.command()
def extract(
    encoder: str = typer.Option(
        ...,
        "--encoder",
        "-e",
        help="Registry name, or a model named directly (timm:NAME, hf:..., open_clip:...).",
    ),
    family: str = FamilyOpt,
    dataset: str = typer.Option("embedded", "--dataset", "-d", help="Dataset name or image-folder path."),
    layers: list[str] = typer.Option(
        ["-1"], "--layers", "-l", help="Block indices (negative from the end) or 'all'."
    ),
    tokens: list[str] = typer.Option(
        ["cls", "pooled"], "--tokens", help="cls, patches, pooled, keys, projection"
    ),
    geometry: str = typer.Option(
        "resize", "--geometry", help="resize (the encoder's preprocessing) or native (own size, padded)."
    ),
    max_side: int = typer.Option(None, "--max-side", help="native: cap the longer side at this many pixels."),
    batch_size: int = typer.Option(64, "--batch-size"),
    workers: int = typer.Option(None, "--workers"),
    device: str = typer.Option(None, "--device"),
    weights: Path = typer.Option(None, "--weights", help="Weights file for sources that cannot download."),
    strict: bool = typer.Option(
        False, "--strict", help="Fail on an unreadable image instead of skipping it."
    ),
    max_pixels: int = MaxPixelsOpt,
    registry: Path = RegistryOpt,
    datasets: Path = DatasetsOpt,
    data_root: Path = DataRootOpt,
    nproc: int = typer.Option(
        1, "--nproc", help="Split the images over this many processes (one per GPU), started by torchrun."
    ),
):
    """Extract frozen features into the cache (resumes; skips what is cached).

    Under torchrun (`torchrun --nproc_per_node=N -m probebench extract ...`, or `--nproc N`), each process
    extracts its share of the cache entry's shards and rank 0 lists them all once every rank is done."""
    from probebench import distributed
    from probebench.data.lookup import get_dataset
    from probebench.encoders.load import resolve
    from probebench.extract import Request
    from probebench.extract import extract as run_extract
    from probebench.paths import features_dir, writable_dir
    from probebench.registry import get_entry

    entry = get_entry(_registry(registry), encoder, family)
    opts = _options(batch_size, workers, device, strict, max_pixels)
    writable_dir(features_dir(), "feature cache", "set PROBEBENCH_HOME to a writable folder")
    spec = resolve(entry, weights)
    ds = get_dataset(dataset, datasets, data_root)
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: give a positive number of processes")
    if nproc > 1 and distributed.ranks().world == 1:  # checked here first: bad input is one line, not N
        from probebench.extract import device_and_precision

        if device_and_precision(opts)[0].type == "cuda" and nproc > (gpus := _torch_gpus()):
            raise UserError(f"--nproc {nproc}: one process per GPU, and this machine has {gpus}")
        distributed.launch(nproc, distributed.without_flag(sys.argv[1:], "--nproc"))
        return
    res = run_extract(
        spec,
        ds,
        Request(layers=_layers(layers) or (-1,), tokens=tuple(tokens), geometry=geometry, max_side=max_side),
        opts,
    )
    if not distributed.ranks().main:
        return  # rank 0 speaks for the run
    world = distributed.ranks().world
    state = "already cached" if res.cached else f"extracted ({res.images_per_s:.1f} img/s)"
    if world > 1 and not res.cached:
        state = f"extracted by {world} processes (rank 0: {res.images_per_s:.1f} img/s)"
    skipped = f", {len(res.skipped)} unreadable images skipped" if res.skipped else ""
    typer.echo(f"{encoder} x {ds.name}: {state}{skipped} -> {res.store.root}")


@app.command()
def run(
    encoder: list[str] = typer.Option(
        None,
        "--encoder",
        "-e",
        help="Registry names (default: all available), or models named directly: timm:NAME, hf:ORG/REPO@REV, "
        "open_clip:MODEL/TAG.",
    ),
    family: str = FamilyOpt,
    task: list[str] = typer.Option(
        None, "--task", "-t", help="Task or group names, e.g. knn, linear, attentive, object."
    ),
    layer: list[str] = typer.Option(
        None, "--layer", "-l", help="Probe these blocks (negative from the end, or 'all'): one result each."
    ),
    feature: str = typer.Option(
        None,
        "--feature",
        help="Image feature for linear/kNN: cls, pooled, both or head (the model's own pooling; default: per "
        "encoder).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the val split, attentive probe and bootstrap."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Run the tasks on this dataset instead."),
    suite: str = typer.Option(None, "--suite", help="A task suite: default (embedded data) or papers."),
    batch_size: int = typer.Option(64, "--batch-size"),
    workers: int = typer.Option(None, "--workers"),
    device: str = typer.Option(None, "--device"),
    weights: Path = typer.Option(None, "--weights", help="Weights file (with a single --encoder)."),
    force: bool = typer.Option(False, "--force", help="Recompute finished results."),
    strict: bool = typer.Option(
        False, "--strict", help="Fail on an unreadable image instead of skipping it."
    ),
    max_pixels: int = MaxPixelsOpt,
    registry: Path = RegistryOpt,
    datasets: Path = DatasetsOpt,
    data_root: Path = DataRootOpt,
    tasks_file: Path = TasksOpt,
    launcher: str = typer.Option(
        "none",
        "--launcher",
        help="none: this process; local: a process per job (encoder x dataset group); slurm: a Slurm job.",
    ),
    jobs: int = typer.Option(1, "--jobs", help="local: jobs at once (cores are shared between them)."),
    partition: str = typer.Option(None, "--partition", help="slurm: the partition."),
    gpus: int = typer.Option(
        None, "--gpus", help="local, slurm: GPUs per job, 0 or 1 (local default: 1 where there are GPUs)."
    ),
    cpus: int = typer.Option(None, "--cpus", help="slurm: CPUs per job (also its torch threads)."),
    time_min: int = typer.Option(24 * 60, "--time", help="local, slurm: minutes a job may run."),
    mem: float = typer.Option(None, "--mem", help="slurm: memory per job, in GB."),
):
    """Extract and evaluate: every encoder x task; writes results/runs/*.json and the leaderboard.

    With --launcher local or slurm, the grid runs through submitit as one job per encoder and dataset group,
    its state under results/jobs/ (see `probebench status`); re-running submits only what is missing."""
    from probebench.pipeline import available_encoders
    from probebench.pipeline import run as run_pipeline
    from probebench.registry import get_entry
    from probebench.results import tables
    from probebench.tasks import get_suite, get_tasks, load_tasks

    opts = _options(batch_size, workers, device, strict, max_pixels)
    reg = _registry(registry)
    catalog = load_tasks(tasks_file)
    names = list(encoder) if encoder else available_encoders(reg)
    if not names:
        raise UserError(
            "no encoder has weights on this machine; pass --encoder NAME (see `probebench list encoders`)"
        )
    if weights and len(names) != 1:
        raise UserError("--weights needs exactly one --encoder")
    entries = [get_entry(reg, n, family) for n in names]
    if task and suite:
        raise UserError("give --task or --suite, not both")
    tasks = (
        [x for t in task for x in get_tasks(t, catalog)] if task else get_suite(suite or "default", catalog)
    )
    from probebench.tasks.features import FEATURE_KINDS

    if feature is not None and feature not in FEATURE_KINDS:
        raise UserError(f"--feature {feature!r}: use {', '.join(FEATURE_KINDS)}")
    typer.echo(f"running {len(entries)} encoder(s) x {len(tasks)} task(s): {', '.join(names)}")
    res = _resources(launcher, jobs, partition, gpus, cpus, time_min, mem)
    if res is not None:
        from probebench.launch.grid import RunArgs
        from probebench.launch.submit import run_grid

        args = RunArgs(opts, force, dataset, weights, datasets, data_root, _layers(layer), feature, seed)
        # print, not typer.echo: click writes to stdout's buffer, under the live view of running jobs
        failed = run_grid(entries, tasks, args, launcher, res, functools.partial(print, flush=True))
        if launcher == "local":
            board, paths = tables.refresh()
            _left_out(board)
            typer.echo(f"leaderboard: {paths['leaderboard.csv']}")
        if failed:
            raise UserError(f"{failed} job(s) failed (each named above, with its log); re-run to retry them")
        return
    run_pipeline(
        entries,
        tasks,
        opts,
        force=force,
        weights=weights,
        dataset=dataset,
        datasets=datasets,
        data_root=data_root,
        layers=_layers(layer),
        feature=feature,
        seed=seed,
        report=lambda out: print(out.line(), flush=True),  # as each result is written; above the bars
    )
    board, paths = tables.refresh()
    _left_out(board)
    typer.echo(f"leaderboard: {paths['leaderboard.csv']}")


def _torch_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _resources(launcher: str, jobs: int, partition, gpus: int | None, cpus, time_min: int, mem):
    """What each job of a grid asks for; None when the run stays in this process (`--launcher none`)."""
    from probebench.launch.submit import LAUNCHERS, Resources

    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher!r}: use one of {', '.join(LAUNCHERS)}")
    slurm_only = {"--partition": partition, "--cpus": cpus, "--mem": mem}
    if launcher == "local" and (named := [flag for flag, value in slurm_only.items() if value is not None]):
        raise UserError(
            f"{', '.join(named)} apply to --launcher slurm; a local job gets its share of the cores"
        )
    if launcher != "none":
        if gpus is None:  # local jobs use the GPUs there are, one each; Slurm jobs ask for none unless told
            from probebench.launch.submit import visible_gpus

            gpus = 1 if launcher == "local" and visible_gpus() else 0
        return Resources(partition, gpus, cpus, time_min, mem, jobs)
    given = {"--jobs": jobs != 1, "--partition": partition, "--gpus": gpus is not None, "--cpus": cpus}
    given["--mem"] = mem is not None
    given["--time"] = time_min != 24 * 60
    if named := [flag for flag, value in given.items() if value]:
        raise UserError(f"{', '.join(named)} apply to jobs: add --launcher local or --launcher slurm")
    return None


def _left_out(board) -> None:
    """Name every record file the leaderboard could not read, then one line per kind of thing left out."""
    for line in board.problems:
        typer.echo(f"left out {line}", err=True)
    for line in board.notes:
        typer.echo(f"leaderboard: {line}", err=True)


VIEWS = ("wide", "long", "families", "papers")  # tables.VIEWS, named here so --help needs no pandas


@app.command()
def status(
    watch: bool = typer.Option(False, "--watch", help="Redraw until no job is running or pending."),
    every: float = typer.Option(10.0, "--every", help="--watch: seconds between redraws."),
):
    """The jobs under results/jobs/ as a table: done, running, failed or pending; failures with their log."""
    import time

    from tabulate import tabulate

    from probebench.launch.status import counts, grid

    if every <= 0:
        raise UserError(f"--every {every}: give a positive number of seconds")
    while True:
        rows = grid()
        if not rows:
            raise UserError("no jobs under results/jobs/: submit some with `probebench run --launcher local`")
        table = [[r.job, r.state, r.records, r.job_id, r.doing or r.why] for r in rows]
        n = counts(rows)
        if watch and sys.stdout.isatty():
            typer.echo("\033[2J\033[H", nl=False)  # clear the terminal: each redraw replaces the last
        headers = ["job", "state", "records", "job id", "now (running) or why (failed, pending)"]
        typer.echo(tabulate(table, headers=headers, tablefmt="simple"))
        typer.echo(f"{len(rows)} jobs: " + ", ".join(f"{v} {k}" for k, v in n.items()))
        if not watch or n["running"] + n["pending"] == 0:
            return
        time.sleep(every)


@app.command()
def leaderboard(
    view: str = typer.Option("wide", "--view", help=f"Which table to print: {', '.join(VIEWS)}."),
    fmt: str = typer.Option("markdown", "--format", help="csv, markdown or json."),
    task: list[str] = typer.Option(None, "--task", "-t", help="Only these tasks (repeatable)."),
    level: list[str] = typer.Option(None, "--level", help="Only these levels: object, part, discovery."),
    family: list[str] = typer.Option(None, "--family", help="Only these encoder families (repeatable)."),
    encoder: list[str] = typer.Option(None, "--encoder", "-e", help="Only these encoders (repeatable)."),
    dataset: list[str] = typer.Option(None, "--dataset", "-d", help="Only these datasets (repeatable)."),
):
    """Merge results/runs/*.json into results/leaderboard*.csv and print one view of it, filtered."""
    from probebench.results import tables

    if view not in VIEWS:
        raise UserError(f"--view {view!r}: use one of {', '.join(VIEWS)}")
    if fmt not in tables.FORMATS:
        raise UserError(f"--format {fmt!r}: use one of {', '.join(tables.FORMATS)}")
    board, paths = tables.refresh()
    long = tables.select(board.long, task=task, level=level, family=family, encoder=encoder, dataset=dataset)
    shown = tables.VIEWS[view](long)
    typer.echo(tables.render(shown, fmt) if not shown.empty else "(no results)")
    _left_out(board)
    typer.echo(f"written: {', '.join(str(p) for p in paths.values())}", err=True)


@app.command()
def report(
    grids: str = typer.Option(
        "all",
        "--grids",
        help="Discovery image grids: all, synthetic (draw no photos: for a report you share) or none.",
    ),
):
    """Write results/report.html (self-contained) and report.md, with the plots under results/plots/."""
    from probebench.report.build import build

    out = build(grids=grids)
    typer.echo(f"report: {out.html}")
    typer.echo(f"markdown: {out.markdown}")
    typer.echo(f"plots: {len(out.plots)} files in {out.html.parent / 'plots'}")


@app.command()
def doctor(datasets: Path = DatasetsOpt, data_root: Path = DataRootOpt):
    """Check every named and user dataset: found, image counts against those expected, one image decoded,
    every annotation against its image and every label map's values against the class list."""
    from probebench.data.catalog import CATALOG, check_counts, named_root, read_named
    from probebench.data.checks import check_label_values
    from probebench.data.config import build_dataset, config_path, load_datasets, resolve_root
    from probebench.data.loader import read_rgb

    user = load_datasets(datasets)
    rows, failed = [], 0
    for name in [*user, *CATALOG]:
        named = CATALOG.get(name)
        try:
            if name in user:
                root = resolve_root(user[name], config_path(datasets).parent, data_root)
                ds = build_dataset(user[name], root)
            else:
                ds = read_named(named, named_root(named, data_root))
            short = check_counts(named, ds) if named else []
            problems = [] if len(ds) else ["no images found"]
            if len(ds):
                read_rgb(str(ds.root / ds.samples[0].path))
            problems += check_label_values(ds)
            found = " ".join(f"{sp}={n}" for sp, n in ds.describe()["splits"].items())
        except (UserError, OSError, ValueError) as exc:
            missing = named is not None and ("not found" in str(exc) or "no data root" in str(exc))
            status, found, fix = ("missing" if missing else "error"), "-", str(exc)
            failed += not missing or name in user
            rows.append(
                {
                    "dataset": name,
                    "source": "user" if name in user else "named",
                    "status": status,
                    "found": found,
                    "fix": fix.removeprefix(f"dataset {name!r}: "),  # the rest names the file and the fix
                }
            )
            continue
        failed += bool(problems or short)
        # "partial": readable but fewer images than the named set has; "error": something in it is wrong.
        fix = "; ".join(problems + short) + (f"; {named.how}" if short else "")
        rows.append(
            {
                "dataset": name,
                "source": "user" if name in user else "named",
                "status": "error" if problems else "partial" if short else "ok",
                "found": found,
                "fix": fix or "; ".join(f"note: {w}" for w in ds.warnings),
            }
        )
    typer.echo(_table(rows))
    if failed:
        typer.echo(f"{failed} dataset(s) need attention (see fix)", err=True)
        raise typer.Exit(1)


@data_app.command("download")
def data_download(
    name: str = typer.Argument(..., help="A named dataset (see `probebench doctor`)."),
    data_root: Path = DataRootOpt,
):
    """Download, verify and extract a named dataset under the data root; or say exactly what to do by hand."""
    from probebench.data.catalog import CATALOG, load_named
    from probebench.data.download import extract as extract_archive
    from probebench.data.download import fetch
    from probebench.paths import data_root as find_data_root

    if name not in CATALOG:
        raise UserError(f"unknown dataset {name!r}; named datasets: {', '.join(CATALOG)}")
    named = CATALOG[name]
    base = find_data_root(data_root)
    if named.download is None:
        typer.echo(f"{name} needs a manual step: {named.how}")
        raise typer.Exit(1)
    if base is None:
        raise UserError("no data root: set PROBEBENCH_DATA or pass --data-root to the folder datasets go in")
    url, filename, spec = named.download
    archive = fetch(url, base / ".downloads" / filename, spec)
    extract_archive(archive, base / named.path)
    ds = load_named(name, base)
    typer.echo(
        f"{name}: {len(ds)} images in {base / named.path} ({archive.name} verified, {spec.split(':')[0]})"
    )


@cache_app.command("ls")
def cache_ls():
    """One line per cache entry: encoder, dataset, key, shards done, size."""
    from probebench.cache.store import list_stores

    stores = list_stores()
    rows = [
        {
            "encoder": s.root.parent.parent.name,
            "dataset": s.root.parent.name,
            "key": s.root.name,
            "images": "-" if s.damaged else s.n,
            "shards": "damaged" if s.damaged else f"{s.num_shards - len(s.missing_shards())}/{s.num_shards}",
            "arrays": s.damaged or ",".join(s.arrays()),
            "MB": f"{s.size_bytes() / 1e6:.1f}",
        }
        for s in stores
    ]
    typer.echo(_table(rows))
    if damaged := sum(s.damaged is not None for s in stores):
        typer.echo(
            f"{damaged} damaged entr{'y' if damaged == 1 else 'ies'}: `probebench run` recomputes them, "
            "`probebench cache rm` removes them",
            err=True,
        )


@cache_app.command("du")
def cache_du():
    """Disk use of the feature cache, per encoder."""
    from probebench.cache.store import list_stores
    from probebench.paths import features_dir

    per: dict[str, int] = {}
    for s in list_stores():
        per[s.root.parent.parent.name] = per.get(s.root.parent.parent.name, 0) + s.size_bytes()
    typer.echo(_table([{"encoder": k, "MB": f"{v / 1e6:.1f}"} for k, v in sorted(per.items())]))
    typer.echo(f"total {sum(per.values()) / 1e6:.1f} MB in {features_dir()}")


@cache_app.command("rm")
def cache_rm(
    encoder: str = typer.Option(None, "--encoder"),
    dataset: str = typer.Option(None, "--dataset"),
    all_: bool = typer.Option(False, "--all", help="Remove every entry."),
):
    """Remove cache entries of an encoder and/or dataset (or --all)."""
    from probebench.cache.store import remove_stores

    if not (encoder or dataset or all_):
        raise UserError("say what to remove: --encoder NAME, --dataset NAME, or --all")
    removed = remove_stores(encoder, dataset)
    typer.echo(f"removed {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'}")


class _Stderr(logging.StreamHandler):
    """Log lines to whatever `sys.stderr` is when they are written: while progress bars are drawn it is
    their console, which prints the line above the bars instead of through them."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler sets it once; the property always looks again
        pass


def main() -> None:
    from probebench import progress
    from probebench.allocator import keep_freed_memory

    keep_freed_memory()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", handlers=[_Stderr()])
    progress.show_on_terminal()  # bars on a terminal only: logs and CI output stay short
    try:
        code = app(standalone_mode=False)  # click returns, rather than raises, the code of typer.Exit here
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:  # one line per problem
            typer.echo(f"error: {line}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: completed shards and results are kept; re-run to continue", err=True)
        sys.exit(130)
    except Exception as exc:  # click's own usage errors
        usage, aborts = _click_errors()
        if isinstance(exc, usage):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, aborts):
            sys.exit(1)
        if _out_of_memory(exc):
            said = " ".join(str(exc).split())[:200] or _where(exc)
            typer.echo(
                f"error: out of memory ({said}); lower --batch-size, --max-pixels or the task's sizes "
                "(max_side, crop, short, long, batch_size); finished shards and results are kept",
                err=True,
            )
            sys.exit(2)
        raise


def _where(exc: BaseException) -> str:
    """Where an exception without a message was raised: `while in voc.py, read_image_set`."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    return f"while in {Path(frames[-1].filename).name}, {frames[-1].name}" if frames else "no detail"


def _out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: Python's, numpy's (a MemoryError), or torch's on the CPU or a GPU."""
    text = str(exc)
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def _click_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage errors, aborts) as the command line may raise them. Newer typer releases carry their own copy
    of click, whose exceptions do not derive from the installed click's: both are caught."""
    import click

    vendored = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    return (click.exceptions.ClickException, vendored), (click.exceptions.Abort, typer.Abort)
