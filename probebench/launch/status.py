"""The grid's state, read from the job folders and the records: done, running, failed or pending.

A job is done when it wrote `outcome.json` (or its records were all there when the grid was submitted);
running while its local process or Slurm job runs; failed when that ended without an outcome (its log's path
and last error line say why); pending while it waits in the local pool or Slurm's queue.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from probebench.errors import UserError
from probebench.paths import results_dir

STATES = ("done", "running", "failed", "pending")
_SLURM = {  # Slurm's job states (sacct) -> ours; any other ended without an outcome: failed
    "PENDING": "pending",
    "REQUEUED": "pending",
    "CONFIGURING": "pending",
    "RESIZING": "pending",
    "SUSPENDED": "pending",
    "RUNNING": "running",
    "COMPLETING": "running",
}
# The last line of a Python traceback: `module.SomeError: message` (or a bare name).
_EXCEPTION = re.compile(
    r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit))(?::\s*(.*))?$"
)


@dataclass
class Row:
    job: str
    encoder: str
    dataset: str
    state: str
    records: str  # "found/planned"
    job_id: str
    why: str = ""  # failed: the last error line and the log


def failure(folder: Path, job_id: str) -> tuple[Path, str]:
    """The job's error log and the line that says what went wrong: the last exception raised, else the last
    line written (a job killed from outside, by the OOM killer or a time limit, raises none)."""
    from submitit.core.utils import JobPaths

    log = JobPaths(folder, job_id, 0).stderr
    try:
        lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return log, "no log: the job never started"
    for line in reversed(lines):
        if m := _EXCEPTION.match(line):
            name, message = m.groups()
            if name == "UserError" and message:  # probebench's own one-line message says it all
                return log, message
            return log, f"{name}: {message}" if message else name
    return log, lines[-1] if lines else "the job ended without a result and wrote nothing to its log"


def _records(note: dict, root: Path) -> tuple[int, int]:
    """Records of the job found on disk, out of those planned (a layer sweep counts when any layer is)."""
    found = 0
    for rel in note.get("records", []):
        path = root / rel
        found += path.is_file() or any(path.parent.glob(f"{path.stem}__layer*.json"))
    return found, len(note.get("records", []))


def _local_alive(pid: str) -> bool:
    """The local job's controller still runs (and the pid has not been reused by another program)."""
    try:
        return b"submitit" in Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False


def _slurm_states(jobs: list[tuple[Path, str]]) -> dict[str, str]:
    """Slurm's state of each (folder, job id), from one `sacct` call for them all; "UNKNOWN" for a job that
    accounting does not list (yet)."""
    if not jobs:
        return {}
    if shutil.which("sacct") is None:
        raise UserError(
            "results/jobs/ holds Slurm jobs, and sacct is not on PATH: run `probebench status` on a Slurm "
            "login node"
        )
    from submitit.slurm.slurm import SlurmJob

    handles = [SlurmJob(folder, job_id) for folder, job_id in jobs]
    handles[0].watcher.update()  # one sacct for every registered job
    return {h.job_id: h.watcher.get_state(h.job_id, mode="cache").split()[0] for h in handles}


def _notes(root: Path) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted((root / "jobs").glob("*/job.json")):
        try:
            note = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced: the next look sees it
        if isinstance(note, dict) and all(
            isinstance(note.get(k), str) for k in ("job", "encoder", "dataset")
        ):
            out.append((path.parent, note))  # anything else is not a note of ours
    return out


def job_row(folder: Path, note: dict, root: Path, slurm: dict[str, str]) -> Row:
    """One job's row; `slurm` holds Slurm's state of the Slurm jobs (`_slurm_states`)."""
    found, planned = _records(note, root)
    job_id = note.get("job_id")
    row = Row(note["job"], note["encoder"], note["dataset"], "pending", f"{found}/{planned}", job_id or "")
    done = (folder / "outcome.json").is_file
    if done():
        row.state = "done"
    elif job_id is None:  # never submitted
        state = note.get("state")
        if state == "found" and found == planned:
            row.state = "done"
        elif state in ("found", "cancelled"):
            row.state = "failed"
            row.why = (
                "its records were there when the grid was submitted and are gone now; re-run to redo them"
                if state == "found"
                else "cancelled before it started (the `probebench run` that queued it stopped); re-run it"
            )
            return row
    elif note.get("launcher") == "local":
        row.state = "running" if _local_alive(job_id) else "done" if done() else "failed"
    else:
        state = slurm.get(job_id, "UNKNOWN")
        row.state = _SLURM.get(state, "pending" if state == "UNKNOWN" else "failed")
        if state == "UNKNOWN":
            row.why = "Slurm's accounting (sacct) does not list this job (yet)"
        if done():  # it finished between the two looks
            row.state = "done"
    if row.state == "failed":
        log, line = failure(folder, job_id)
        ended = f"Slurm: {slurm[job_id]}; " if job_id in slurm else ""  # TIMEOUT, OUT_OF_MEMORY, ...
        row.why = f"{ended}{line} (log: {log})"
    return row


def grid(results_root: Path | None = None) -> list[Row]:
    """Every job under results/jobs/, by name."""
    root = results_root or results_dir()
    notes = _notes(root)
    slurm = _slurm_states(
        [(f, n["job_id"]) for f, n in notes if n.get("launcher") == "slurm" and n.get("job_id")]
    )
    return [job_row(folder, note, root, slurm) for folder, note in notes]


def live_jobs(results_root: Path | None = None) -> dict[str, str]:
    """Jobs submitted and not ended: name -> "running, job <id>" or "pending, job <id>". A job queued by a
    `probebench run` that is gone has no id and is not live (a re-run submits it)."""
    rows = grid(results_root)
    return {
        r.job: f"{r.state}, job {r.job_id}" for r in rows if r.state in ("running", "pending") and r.job_id
    }


def counts(rows: list[Row]) -> dict[str, int]:
    return {s: sum(r.state == s for r in rows) for s in STATES}
