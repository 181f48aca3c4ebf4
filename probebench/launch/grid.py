"""A study as a grid of jobs: one job per encoder and group of tasks whose datasets overlap, so the tasks
on a dataset share one extraction and no two jobs write one cache entry.

A job is plain data (the registry entry, the tasks bound to their datasets, the run's options). submitit
pickles it with `run_job`, which runs in the job's own process, on this machine or on a cluster node, and
calls the same pipeline as `probebench run`: a job's records are the records a single process writes.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from probebench.encoders.load import resolve
from probebench.extract import Options
from probebench.paths import MAX_NAME, safe_name, slug
from probebench.pipeline import SEED, finished_outcomes, plan_run
from probebench.registry import EncoderEntry
from probebench.tasks.spec import Task


@dataclass(frozen=True)
class RunArgs:
    """The options of `probebench run` that every job of a grid carries. Paths are absolute: a cluster job
    does not start in the folder it was submitted from."""

    opts: Options = field(default_factory=Options)
    force: bool = False
    dataset: str | None = None  # `--dataset`: a name, or an absolute folder
    weights: Path | None = None
    datasets: Path | None = None
    data_root: Path | None = None
    layers: tuple[int | str, ...] | None = None
    feature: str | None = None
    seed: int = SEED
    results_root: Path | None = None
    threads: int | None = None  # torch's intra-op threads in the job: the cores it was given


@dataclass(frozen=True)
class Job:
    """One encoder on a group of tasks whose datasets overlap (`a-and-b`: a task that trains on a and tests
    on b, with every other task on a or b)."""

    entry: EncoderEntry
    dataset: str
    tasks: tuple[Task, ...]

    @property
    def name(self) -> str:
        """`<encoder>__<dataset>`: the job's folder under results/jobs/ and its name on the cluster."""
        return f"{slug(self.entry.name)}__{safe_name(self.dataset, 'dataset')}"

    def records(self, args: RunArgs) -> list[Path]:
        """The records the job writes (a layer sweep writes `<record stem>__layer<n>.json` beside each)."""
        plan = plan_run(self.entry, list(self.tasks), args.layers, args.results_root, args.feature, args.seed)
        return [t.path for t in plan.targets]


def plan_jobs(entries: list[EncoderEntry], tasks: list[Task]) -> list[Job]:
    """Encoders x groups of tasks, in the order given. Tasks that read a dataset in common are one group
    (a task that trains on DUTS-TR and tests on VOC07 joins every other task on either), so one job
    extracts each cache entry and no two jobs ever write the same one."""
    groups: list[tuple[set[str], list[Task]]] = []
    for task in tasks:
        reads = {dataset for dataset, _ in task.bindings.values()}
        hits = [i for i, (datasets, _) in enumerate(groups) if datasets & reads]
        if not hits:
            groups.append((reads, [task]))
            continue
        datasets, members = groups[hits[0]]
        for i in reversed(hits[1:]):  # the task bridges groups: they become one
            more, others = groups.pop(i)
            datasets |= more
            members += others
        datasets |= reads
        members.append(task)
    jobs = []
    for entry in entries:
        for datasets, members in groups:
            ids = {id(t) for t in members}
            jobs.append(Job(entry, group_name(datasets), tuple(t for t in tasks if id(t) in ids)))
    return jobs


def group_name(datasets: set[str]) -> str:
    """`a-and-b` for the datasets of a job; a long list becomes `a-and-3-more-<hash>`, so the job's folder
    name fits the file system (and Slurm's job name stays readable)."""
    names = sorted(datasets)
    joined = "-and-".join(names)
    if len(joined) <= MAX_NAME:
        return joined
    digest = hashlib.sha256(joined.encode()).hexdigest()[:8]
    return f"{names[0]}-and-{len(names) - 1}-more-{digest}"


def is_finished(job: Job, args: RunArgs, loaded: dict) -> bool:
    """Every record of the job exists with the current config hash (nothing extracted, no model built)."""
    if args.force:
        return False
    spec = resolve(job.entry, args.weights)
    done = finished_outcomes(
        spec,
        list(job.tasks),
        loaded,
        args.opts,
        layers=args.layers,
        feature=args.feature,
        seed=args.seed,
        results_root=args.results_root,
    )
    return done is not None


def run_job(job: Job, args: RunArgs) -> list[str]:
    """The body of one job, in its own process: the pipeline on one encoder and one dataset's tasks, then the
    leaderboard (under its lock). Returns one line per record, as `probebench run` prints them."""
    import torch

    from probebench.allocator import keep_freed_memory
    from probebench.pipeline import run
    from probebench.results import tables

    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    outcomes = run(
        [job.entry],
        list(job.tasks),
        args.opts,
        force=args.force,
        weights=args.weights,
        dataset=args.dataset,
        results_root=args.results_root,
        datasets=args.datasets,
        data_root=args.data_root,
        layers=args.layers,
        feature=args.feature,
        seed=args.seed,
    )
    try:
        tables.refresh(args.results_root)
    except Exception as exc:  # noqa: BLE001  the records are written: a later run or `leaderboard` redoes this
        logging.getLogger(__name__).warning(
            "leaderboard not rebuilt by this job (%s); the records are safe", exc
        )
    return [o.line() for o in outcomes]
