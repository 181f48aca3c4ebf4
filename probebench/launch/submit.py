"""Submit a grid of jobs through submitit: to Slurm, or as local processes (which is also the test path).

Each job has a folder `results/jobs/<encoder>__<dataset>/` holding submitit's files (the pickled call, the
logs) and two notes of ours, both plain JSON: `job.json`, written at submission (what the job runs, the
records it writes, launcher and job id), and `outcome.json`, written by the job when it has finished. They
and the records are the grid's whole state: `probebench status` reads them and asks only whether each job
still runs (`/proc` for a local one, one `sacct` for Slurm's); a re-run submits only the jobs whose records
are not all there and that are not still queued or running.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from probebench.errors import UserError
from probebench.io import BadFile, atomic_write, read_json
from probebench.launch.grid import Job, is_finished, run_job
from probebench.paths import check_writable, results_dir, writable_dir
from probebench.pipeline.config import Resources, RunConfig

POLL_S = 0.5  # how often the local pool looks at its running jobs


def jobs_dir(results_root: Path | None = None) -> Path:
    return (results_root or results_dir()) / "jobs"


def job_folder(job: Job, results_root: Path | None = None) -> Path:
    return jobs_dir(results_root) / job.name


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=1, default=str).encode())


def _write_note(
    job: Job, cfg: RunConfig, job_id: str | None, state: str, time_min: float | None = None
) -> None:
    """`job.json`. Record paths are relative to the results folder, which may sit elsewhere on a node;
    `time_min`, the job's time limit, bounds how long a Slurm job nobody can see counts as live."""
    root = cfg.results_root or results_dir()
    note = {
        "job": job.name,
        "encoder": job.entry.name,
        "dataset": job.dataset,
        "tasks": [t.name for t in job.tasks],
        "records": [os.path.relpath(p, root) for p in job.records(cfg)],
        "launcher": cfg.launcher,
        "job_id": job_id,
        # submitted; queued (waiting in the local pool); cancelled (queued, then the `probebench run` that
        # queued it stopped); found (its records were all there)
        "state": state,
        "threads": cfg.threads,
        "submitted": _now(),
        **({"time_min": time_min} if time_min is not None else {}),
    }
    folder = job_folder(job, cfg.results_root)
    if state == "queued":  # an earlier attempt's outcome is not this one's (`_submit` clears it too)
        (folder / "outcome.json").unlink(missing_ok=True)
    _write_json(folder / "job.json", note)


def run_and_note(job: Job, cfg: RunConfig, folder: str) -> list[str]:
    """What a submitted job runs: the job's work (its progress kept in `progress.json` beside its notes,
    for the run that waits for it and for `probebench status`), then `outcome.json` saying it finished."""
    from probebench import progress

    progress.write_to(Path(folder))
    lines = run_job(job, cfg)
    _write_json(Path(folder) / "outcome.json", {"lines": lines, "finished": _now()})
    return lines


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def executor(launcher: str, folder: Path, res: Resources, name: str, gpu_ids: list[int] | None = None):
    """submitit's executor for one job, its files in `folder`. Slurm gets partition, GPUs, CPUs, time and
    memory; a local job sees only the GPUs in `gpu_ids` (each local job its own)."""
    import submitit

    if launcher == "local":
        _own_sessions()
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=res.time_min, gpus_per_node=res.gpus, visible_gpus=gpu_ids or ())
        return ex
    ex = submitit.SlurmExecutor(folder=folder)
    params: dict = {"job_name": name, "time": res.time_min, "gpus_per_node": res.gpus or None}
    params |= {"partition": res.partition, "cpus_per_task": res.cpus}
    params["mem"] = f"{res.mem_gb:g}GB" if res.mem_gb is not None else None
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


class _NewSession:
    """The `subprocess` module as submitit's local launcher sees it, starting each job's controller in a
    session of its own: Ctrl-C in the terminal then reaches `probebench run` alone, which stops the jobs
    itself (no KeyboardInterrupt tracebacks from the controllers, no signal landing in a job's imports)."""

    def __getattr__(self, name: str):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args, **kwargs):  # noqa: N802 - subprocess's name
        return subprocess.Popen(*args, **{**kwargs, "start_new_session": True})


def _own_sessions() -> None:
    import submitit.local.local as local

    local.subprocess = _NewSession()  # submitit's module only: no other code of this process sees it


class Stopped(KeyboardInterrupt):
    """A signal asked `probebench run` to stop (SIGTERM, SIGHUP): handled as Ctrl-C, so the jobs it started
    are stopped too and the queued ones marked."""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    def stop(signum, frame):
        raise Stopped(signal.Signals(signum).name)

    saved = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@dataclass
class Submitted:
    job: Job
    folder: Path
    handle: object  # submitit's Job
    gpu_ids: list[int]


def _submit(job: Job, cfg: RunConfig, res: Resources, gpu_ids: list[int]) -> Submitted:
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    folder = job_folder(job, cfg.results_root)
    # Cleared before submitting, never after: a job may finish and write its own before we note it.
    (folder / "outcome.json").unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    ex = executor(cfg.launcher, folder, res, job.name, gpu_ids)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's refusal; it is in `exc`
            handle = ex.submit(run_and_note, job, cfg, str(folder))
    except FailedJobError as exc:  # sbatch refused it: an unknown partition, a time over the limit, ...
        said = [x for x in str(exc).splitlines() if x.strip()]
        raise UserError(
            f"sbatch refused {job.name}: {said[-1] if said else exc}; fix the option it names"
        ) from None
    except FailedSubmissionError as exc:  # sbatch answered, but with no job id in what it said
        said = " ".join(str(exc).split("\n")[0].split())[:200]
        raise UserError(
            f"{job.name}: {said}; check that this `sbatch` is Slurm's (a wrapper that changes its output "
            "hides the job id)"
        ) from None
    _write_note(job, cfg, str(handle.job_id), "submitted", res.time_min)
    return Submitted(job, folder, handle, gpu_ids)


def _threads(launcher: str, res: Resources, running: int) -> int | None:
    """torch threads per job: the job's CPUs on Slurm; locally, this machine's cores shared between the jobs
    that run at once (two jobs of one thread each on two cores did the default suite 1.3x to 1.4x faster
    than one process of two threads: `benchmarks/scale.py`)."""
    if launcher == "slurm":
        return res.cpus
    return max(1, len(os.sched_getaffinity(0)) // running)


def visible_gpus() -> list[int]:
    """This machine's GPUs as CUDA numbers them for us: `CUDA_VISIBLE_DEVICES` when set, else all."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        import torch

        return list(range(torch.cuda.device_count()))
    try:
        return [int(x) for x in listed.split(",") if x.strip()]
    except ValueError:
        raise UserError(
            f"CUDA_VISIBLE_DEVICES={listed!r}: the local launcher hands out GPUs by index; list indices, not "
            "UUIDs"
        ) from None


def _gpu_pool(res: Resources, gpus: list[int]) -> tuple[list[int], int]:
    """Local GPUs to hand out, and how many jobs can run at once with `res.gpus` (0 or 1) each."""
    if res.gpus == 0:
        return [], res.parallel
    if not gpus:
        raise UserError("--gpus 1: this machine has no GPU; leave --gpus out to run the jobs on the CPU")
    return list(gpus), min(res.parallel, len(gpus))


@dataclass
class Finished:
    job: Job
    ok: bool
    lines: list[str]  # the job's outcome lines, or its log's path and last error line


def launch_jobs(
    jobs: list[Job],
    cfg: RunConfig,
    res: Resources,
    loaded: dict,
    echo: Callable[[str], None] = print,
    watch: Callable[[list, list], None] | None = None,
) -> Iterator[Finished]:
    """Submit every job whose records are not all finished and that is not already queued or running.
    Slurm: submit and return. Local: run them, `res.parallel` at a time, and yield each as it ends."""
    from probebench.launch.status import live_jobs

    launcher = cfg.launcher

    if launcher == "slurm" and not all(shutil.which(c) for c in ("sbatch", "srun", "sacct")):
        raise UserError(
            "--launcher slurm: sbatch, srun or sacct is not on PATH; submit from a Slurm login node, or run "
            "the jobs here with --launcher local"
        )
    writable_dir(jobs_dir(cfg.results_root), "jobs folder", "set PROBEBENCH_RESULTS to a writable folder")
    live = live_jobs(cfg.results_root)  # a re-run while jobs still run must not start them twice
    todo, finished, busy = [], 0, []
    for job in jobs:
        if job.name in live:
            busy.append(f"{job.name} ({live[job.name]})")
        elif is_finished(job, cfg, loaded):
            finished += 1
            _write_note(job, cfg, None, "found")
        else:
            todo.append(job)
    echo(
        f"jobs: {len(jobs)} in the grid, {finished} finished before, {len(busy)} still queued or running, "
        f"{len(todo)} to run"
    )
    for line in busy:
        echo(f"not submitted again, still live: {line}")
    if launcher == "slurm":
        cfg = cfg.replace(threads=cfg.threads or _threads(launcher, res, 1))
        for job in todo:
            sub = _submit(job, cfg, res, [])
            echo(f"submitted {job.name}: slurm job {sub.handle.job_id}, files in {sub.folder}")
        return
    yield from _run_local(todo, cfg, res, watch)


def _run_local(
    todo: list[Job], cfg: RunConfig, res: Resources, watch: Callable[[list, list], None] | None = None
) -> Iterator[Finished]:
    """Run the jobs as local processes, `res.parallel` at a time; yield each as it ends. `watch(running,
    queued)` is called at every look at the jobs (the parent's live view of them)."""
    free, parallel = _gpu_pool(res, visible_gpus() if res.gpus else [])
    parallel = max(1, min(parallel, len(todo)))
    cfg = cfg.replace(threads=cfg.threads or _threads("local", res, parallel))
    if cfg.workers is None:  # a job's share of the cores is its machine: no loader workers on top
        cfg = cfg.replace(workers=max(0, cfg.threads - 1))
    for job in todo:  # pending in `probebench status` until a slot frees
        _write_note(job, cfg, None, "queued")
    queue, running = list(todo), []
    try:
        with _stop_on_signals():
            while queue or running:
                while queue and len(running) < parallel:
                    ids, free = free[: res.gpus], free[res.gpus :]
                    running.append(_submit(queue[0], cfg, res, ids))
                    queue.pop(0)  # only once submitted: a job whose submission failed is marked below
                time.sleep(POLL_S)
                if watch is not None:
                    watch(running, queue)
                for sub in [s for s in running if s.handle.done()]:
                    running.remove(sub)
                    free += sub.gpu_ids
                    yield _finished(sub)
    finally:  # stopped (Ctrl-C, a signal, an error): no orphan job, no job left looking queued
        for sub in running:
            _stop(sub)
            _write_note(sub.job, cfg, str(sub.handle.job_id), "interrupted")
        for job in queue:
            _write_note(job, cfg, None, "cancelled")


def _stop(sub: Submitted) -> None:
    """Stop a running local job: its controller leads a process group of its own (`_NewSession`) holding
    the job and the job's loader workers, and SIGKILL ends them all at once and quietly. (submitit's own
    cancel sends SIGINT, which makes the controller and the job print KeyboardInterrupt tracebacks; the job
    ignores SIGTERM, as submitit sets it up.) Records and cache files are written whole or not at all."""
    try:
        pid = int(sub.handle.job_id)
        if os.getpgid(pid) == pid:  # never our own group
            os.killpg(pid, signal.SIGKILL)
        else:
            sub.handle.cancel(check=False)
    except (OSError, ValueError):
        pass  # already gone


def _finished(sub: Submitted) -> Finished:
    from probebench.launch.status import failure

    outcome = sub.folder / "outcome.json"
    if outcome.is_file():
        try:
            lines = read_json(outcome)["lines"]
            if isinstance(lines, list) and all(isinstance(x, str) for x in lines):
                return Finished(sub.job, True, lines)
        except (BadFile, KeyError, TypeError):
            pass
        return Finished(sub.job, True, [f"done     {sub.job.name} (its outcome note {outcome} is damaged)"])
    log, line = failure(sub.folder, str(sub.handle.job_id))
    return Finished(sub.job, False, [f"failed   {sub.job.name}: {line} (log: {log})"])


@dataclass
class GridRun:
    jobs: list[Job]
    failed: int  # local jobs that failed (Slurm's run on)
    outcomes: list  # RecordOutcome of every record finished now: "done" by a job of this run, else "skipped"


def run_grid(entries: list, tasks: list, cfg: RunConfig, echo: Callable[[str], None]) -> GridRun:
    """`probebench run --launcher local|slurm`: the datasets made here once (a generated one is written
    before any job starts), then the grid. Slurm's jobs run on after this returns; local ones have ended."""
    from probebench.launch.grid import plan_jobs
    from probebench.pipeline.data import load_task_data

    check_writable(cfg.results_root)
    cfg = cfg.with_absolute_paths()
    bound, loaded = load_task_data(tasks, cfg)
    gpus = cfg.gpus  # local jobs use the GPUs there are, one each; Slurm jobs ask for none unless told
    if gpus is None:
        gpus = 1 if cfg.launcher == "local" and visible_gpus() else 0
    jobs, failed, ran = plan_jobs(entries, bound), 0, set()
    with live_view(cfg.launcher == "local") as watch:
        for fin in launch_jobs(jobs, cfg, cfg.resources(gpus), loaded, echo, watch):
            for line in fin.lines:
                echo(line)
            failed += not fin.ok
            ran.add(fin.job.name)
    if cfg.launcher == "slurm":
        echo("follow them with `probebench status --watch`; re-run this command to resubmit what failed")
        return GridRun(jobs, failed, [])
    return GridRun(jobs, failed, _read_back(jobs, ran, cfg, loaded))


def _read_back(jobs: list[Job], ran: set[str], cfg: RunConfig, loaded: dict) -> list:
    """The outcome of every record the jobs have finished, read from the records (a failed job has none)."""
    from probebench.encoders.load import resolve_encoder
    from probebench.pipeline.runner import finished_outcomes

    outcomes = []
    for job in jobs:
        done = finished_outcomes(resolve_encoder(job.entry, cfg.weights), list(job.tasks), loaded, cfg)
        status = "done" if job.name in ran else "skipped"
        outcomes += [replace(o, status=status) for o in done or []]
    return outcomes


@contextlib.contextmanager
def live_view(wanted: bool) -> Iterator[Callable[[list, list], None] | None]:
    """A view of the running jobs, redrawn at every look: each job's own stage, rate and time left (from
    its `progress.json`) and how many wait. Only on a terminal: a log gets the finished lines alone."""
    if not (wanted and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from probebench import progress

    started: dict[str, float] = {}

    def table(running: list[Submitted], queue: list) -> Table:
        view = Table(box=None, pad_edge=False)
        for column in ("job", "running for", "now"):
            view.add_column(column)
        for sub in running:
            since = started.setdefault(sub.job.name, time.time())
            doing = progress.job_line(sub.folder) or "starting"
            view.add_row(sub.job.name, progress.duration(time.time() - since), doing)
        if queue:
            view.add_row(
                f"{len(queue)} queued",
                "",
                ", ".join(j.name for j in queue[:3]) + (" ..." if len(queue) > 3 else ""),
            )
        return view

    # Lines printed meanwhile go above the view; stdout only when it is this terminal too (rich would send a
    # redirected stdout's lines to the terminal instead of the file).
    console = Console(stderr=True)
    redirect = {"redirect_stdout": sys.stdout.isatty(), "redirect_stderr": True}
    with Live(console=console, transient=True, **redirect) as live:
        yield lambda running, queue: live.update(table(running, queue))
