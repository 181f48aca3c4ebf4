"""`probebench run` (extract and evaluate, here or as a grid of jobs) and `probebench extract` (fill the cache
only)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from probebench.cli.app import app
from probebench.cli.common import (
    BatchSize,
    DataRoot,
    Datasets,
    Device,
    Family,
    Feature,
    FramingMode,
    Launcher,
    MaxPixels,
    Registry,
    Strict,
    TasksFile,
    Weights,
    Workers,
    left_out,
    metavar,
    one_of,
)
from probebench.data.base import MAX_PIXELS
from probebench.errors import UserError

# `probebench run`'s parameters whose RunConfig field has another name (a repeated option is named once)
_FIELDS = {"encoder": "encoders", "task": "tasks", "layer": "layers"}


@app.command("run")
def run_command(
    ctx: typer.Context,
    encoder: Annotated[
        list[str] | None,
        typer.Option(
            "--encoder",
            "-e",
            help="Registry names (default: all available), or models named directly: timm:NAME, "
            "hf:ORG/REPO@REV, open_clip:MODEL/TAG.",
        ),
    ] = None,
    family: Family = None,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", "-t", help="Task or group names, e.g. knn, linear, attentive, object."),
    ] = None,
    layer: Annotated[
        list[str] | None,
        typer.Option(
            "--layer", "-l", help="Probe these blocks (negative from the end, or 'all'): one result each."
        ),
    ] = None,
    feature: Annotated[
        str | None,
        typer.Option(
            "--feature",
            metavar=metavar(Feature),  # checked by RunConfig, as from the API
            help="Image feature for linear/kNN (head: the model's own pooling; default: per encoder).",
        ),
    ] = None,
    seeds: Annotated[
        list[str] | None,
        typer.Option(
            "--seeds",
            help="Training seeds, e.g. 0,1,2: a trained probe runs once per seed (training-free ones once).",
        ),
    ] = None,
    resampling_seed: Annotated[
        int, typer.Option("--resampling-seed", help="Seed of the bootstrap's draws of test items.")
    ] = 0,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Run the tasks on this dataset instead.")
    ] = None,
    suite: Annotated[
        str | None, typer.Option("--suite", help="A task suite: default (embedded data) or papers.")
    ] = None,
    batch_size: BatchSize = 64,
    workers: Workers = None,
    device: Device = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="torch's CPU threads (default: torch's own; a local job: its share)."),
    ] = None,
    weights: Weights = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute finished results.")] = False,
    strict: Strict = False,
    max_pixels: MaxPixels = MAX_PIXELS,
    shard_size: Annotated[
        int, typer.Option("--shard-size", help="Images per cache shard (a resumed run redoes one).")
    ] = 256,
    registry: Registry = None,
    datasets: Datasets = None,
    data_root: DataRoot = None,
    tasks_file: TasksFile = None,
    results_root: Annotated[
        Path | None,
        typer.Option("--results", help="Results folder (default: $PROBEBENCH_RESULTS, else ./results)."),
    ] = None,
    launcher: Annotated[
        str,
        typer.Option(
            "--launcher",
            callback=one_of(Launcher),
            metavar=metavar(Launcher),
            help="none: this process; local: a process per job (encoder x dataset group); slurm: Slurm jobs.",
        ),
    ] = "none",
    jobs: Annotated[int, typer.Option("--jobs", help="local: jobs at once (cores are shared).")] = 1,
    partition: Annotated[str | None, typer.Option("--partition", help="slurm: the partition.")] = None,
    gpus: Annotated[
        int | None,
        typer.Option(
            "--gpus", help="local, slurm: GPUs per job, 0 or 1 (local default: 1 where there are GPUs)."
        ),
    ] = None,
    cpus: Annotated[
        int | None, typer.Option("--cpus", help="slurm: CPUs per job (its torch threads).")
    ] = None,
    time_min: Annotated[int, typer.Option("--time", help="local, slurm: minutes a job may run.")] = 24 * 60,
    mem: Annotated[float | None, typer.Option("--mem", help="slurm: memory per job, in GB.")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="A YAML file of run settings (the options above); options given win."),
    ] = None,
):
    """Extract and evaluate: every encoder x task; writes results/runs/*.json and the leaderboard.

    With --launcher local or slurm, the grid runs through submitit as one job per encoder and dataset group,
    its state under results/jobs/ (see `probebench status`); re-running submits only what is missing."""
    from probebench.api import run as run_api
    from probebench.pipeline.config import RunConfig
    from probebench.results import tables

    given = {_FIELDS.get(n, n): _plain(v) for n, v in ctx.params.items() if n != "config"}
    if config is not None:  # the file's settings, with the options typed on this command line over them
        typed = {_FIELDS.get(n, n) for n in ctx.params if ctx.get_parameter_source(n).name == "COMMANDLINE"}
        cfg = RunConfig.from_yaml(config, **{n: v for n, v in given.items() if n in typed})
    else:
        cfg = RunConfig.from_settings({n: v for n, v in given.items() if v is not None and v not in ([], ())})
    echo = functools.partial(print, flush=True)  # print, not typer.echo: click writes under the live view
    run_api(config=cfg, echo=echo, report=lambda out: echo(out.line()))  # each result as it is written
    if cfg.launcher == "slurm":
        return
    board, paths = tables.refresh(cfg.results_root)
    left_out(board)
    typer.echo(f"leaderboard: {paths['leaderboard.csv']}")


def _plain(value):
    """An enum member as its value: the run configuration holds plain data (it is pickled into jobs)."""
    return value.value if hasattr(value, "value") else value


@app.command("extract")
def extract_command(
    encoder: Annotated[
        str,
        typer.Option(
            "--encoder",
            "-e",
            help="Registry name, or a model named directly (timm:NAME, hf:..., open_clip:...).",
        ),
    ],
    family: Family = None,
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="Dataset name or image-folder path.")
    ] = "embedded",
    layers: Annotated[
        list[str] | None,
        typer.Option("--layers", "-l", help="Block indices (negative from the end) or 'all' [default: -1]."),
    ] = None,
    tokens: Annotated[
        list[str] | None,
        typer.Option("--tokens", help="cls, patches, pooled, keys, projection [default: cls pooled]."),
    ] = None,
    geometry: Annotated[
        str,
        typer.Option(
            "--geometry",
            metavar=metavar(FramingMode),  # checked by FeatureRequest
            help="resize (the encoder's preprocessing), stretch (whole image to the input size) or native.",
        ),
    ] = "resize",
    max_side: Annotated[
        int | None, typer.Option("--max-side", help="native: cap the longer side at this many pixels.")
    ] = None,
    batch_size: BatchSize = 64,
    workers: Workers = None,
    device: Device = None,
    weights: Weights = None,
    strict: Strict = False,
    max_pixels: MaxPixels = MAX_PIXELS,
    registry: Registry = None,
    datasets: Datasets = None,
    data_root: DataRoot = None,
    nproc: Annotated[
        int,
        typer.Option("--nproc", help="Split the images over this many processes (one per GPU), by torchrun."),
    ] = 1,
):
    """Extract frozen features into the cache (resumes; skips what is cached).

    Under torchrun (`torchrun --nproc_per_node=N -m probebench extract ...`, or `--nproc N`), each process
    extracts its share of the cache entry's shards and rank 0 lists them all once every rank is done."""
    from probebench.data.lookup import get_dataset
    from probebench.encoders.load import resolve_encoder
    from probebench.encoders.registry import get_entry, load_registry
    from probebench.extraction import distributed
    from probebench.extraction.extract import extract_features
    from probebench.extraction.request import ExtractionOptions, FeatureRequest, device_and_precision
    from probebench.paths import features_dir, writable_dir
    from probebench.pipeline.config import parse_layers

    entry = get_entry(load_registry(registry), encoder, family)
    opts = ExtractionOptions(
        batch_size=batch_size, num_workers=workers, device=device, strict=strict, max_pixels=max_pixels
    )
    writable_dir(features_dir(), "feature cache", "set PROBEBENCH_HOME to a writable folder")
    spec = resolve_encoder(entry, weights)
    ds = get_dataset(dataset, datasets, data_root)
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: give a positive number of processes")
    if nproc > 1 and distributed.ranks().world == 1:  # checked here first: bad input is one line, not N
        if device_and_precision(opts)[0].type == "cuda" and nproc > (gpus := _torch_gpus()):
            raise UserError(f"--nproc {nproc}: one process per GPU, and this machine has {gpus}")
        distributed.launch_torchrun(nproc, distributed.without_flag(sys.argv[1:], "--nproc"))
        return
    request = FeatureRequest(
        layers=parse_layers(layers) if layers else (-1,),
        tokens=tuple(tokens) if tokens else ("cls", "pooled"),
        geometry=_plain(geometry),
        max_side=max_side,
    )
    res = extract_features(spec, ds, request, opts)
    if not distributed.ranks().main:
        return  # rank 0 speaks for the run
    world = distributed.ranks().world
    state = "already cached" if res.cached else f"extracted ({res.images_per_s:.1f} img/s)"
    if world > 1 and not res.cached:
        state = f"extracted by {world} processes (rank 0: {res.images_per_s:.1f} img/s)"
    skipped = f", {len(res.skipped)} unreadable images skipped" if res.skipped else ""
    typer.echo(f"{encoder} x {ds.name}: {state}{skipped} -> {res.store.root}")


def _torch_gpus() -> int:
    import torch

    return torch.cuda.device_count()
