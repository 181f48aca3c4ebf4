"""A study as a grid of jobs: one job per encoder and group of tasks whose datasets overlap, so the tasks
on a dataset share one extraction and no two jobs write one cache entry.

A job is plain data (the registry entry, the tasks bound to their datasets); the run's `RunConfig` goes with
it whole. submitit pickles both with `run_job`, which runs in the job's own process, on this machine or on a
cluster node, and calls the same pipeline as `probebench run`: a job's records are the records a single
process writes.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from probebench.encoders.load import resolve_encoder
from probebench.encoders.registry import EncoderEntry
from probebench.paths import MAX_NAME, safe_name, slug
from probebench.pipeline.config import RunConfig
from probebench.pipeline.plan import plan_run
from probebench.pipeline.runner import finished_outcomes
from probebench.tasks.catalog import Task


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

    def records(self, cfg: RunConfig) -> list[Path]:
        """The records the job writes (a layer sweep writes `<record stem>__layer<n>.json` beside each)."""
        return [t.path for t in plan_run(self.entry, list(self.tasks), cfg).targets]


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


def is_finished(job: Job, cfg: RunConfig, loaded: dict) -> bool:
    """Every record of the job exists with the current config hash (nothing extracted, no model built)."""
    if cfg.force:
        return False
    return (
        finished_outcomes(resolve_encoder(job.entry, cfg.weights), list(job.tasks), loaded, cfg) is not None
    )


def run_job(job: Job, cfg: RunConfig) -> list[str]:
    """The body of one job, in its own process: the pipeline on one encoder and one dataset's tasks, then the
    leaderboard (under its lock). Returns one line per record, as `probebench run` prints them."""
    from probebench.allocator import keep_freed_memory
    from probebench.pipeline.runner import run_tasks
    from probebench.results import tables

    keep_freed_memory()
    outcomes = run_tasks([job.entry], list(job.tasks), cfg)
    try:
        tables.refresh(cfg.results_root)
    except Exception as exc:  # noqa: BLE001  the records are written: a later run or `leaderboard` redoes this
        logging.getLogger(__name__).warning(
            "leaderboard not rebuilt by this job (%s); the records are safe", exc
        )
    return [o.line() for o in outcomes]
