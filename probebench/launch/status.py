"""The grid's state, read from the job folders and the records: done, running, failed or pending.

A job is done when it wrote `outcome.json` (or its records were all there when the grid was submitted);
running while its local process or Slurm job runs; failed when that ended without an outcome (its log's path
and last error line say why); pending while it waits in the local pool or Slurm's queue.

Slurm's state comes from one `sacct` call for every job; where accounting does not answer (disabled, or the
job aged out of it) `squeue` says whether the job is still queued or running, and a job neither lists has
ended. Where neither command answers, a job counts as live until its time limit has passed since it was
submitted, then as ended: a re-run then resubmits it, so no job is pending for ever.

Job notes are files probebench reads back: a note that is not one (damaged, foreign, a link) is a row of its
own saying so, never a job that silently vanishes from the table or a traceback.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from probebench import progress
from probebench.data.base import confined
from probebench.errors import UserError
from probebench.io import BadFile, read_json
from probebench.paths import results_dir

STATES = ("done", "running", "failed", "pending")
_SLURM = {  # Slurm's job states (sacct, squeue) -> ours; any other ended without an outcome: failed
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
_JOB_ID = re.compile(r"^[0-9]+(?:_[0-9]+)?$")  # what Slurm and the local launcher (a pid) give
MAX_NOTE_BYTES = 4 * 2**20
COMMAND_TIMEOUT_S = 60
ENDED = "ENDED"  # our name for a Slurm job that neither sacct nor squeue lists any more


@dataclass
class JobRow:
    job: str
    encoder: str
    dataset: str
    state: str
    records: str  # "found/planned"
    job_id: str
    why: str = ""  # failed: the last error line and the log
    doing: str = ""  # running: its current stage, rate and time left (`progress.json`)


def failure(folder: Path, job_id: str) -> tuple[Path, str]:
    """The job's error log and the line that says what went wrong: the last exception raised, else the last
    line written, said to be that of a job stopped from outside (a signal, the OOM killer, a time limit)."""
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
    if not lines:
        return log, "the job ended without a result and wrote nothing to its log"
    stopped = "stopped from outside before it finished (a signal, the OOM killer or a time limit?)"
    return log, f"{stopped}; its last line: {lines[-1]}"


def _records(note: dict, root: Path) -> tuple[int, int]:
    """Records of the job found on disk, out of those planned (a layer sweep counts when any layer is)."""
    found = 0
    for rel in note["records"]:
        path = confined(root, rel, "job note")
        found += path.is_file() or any(path.parent.glob(f"{path.stem}__layer*.json"))
    return found, len(note["records"])


def _local_alive(pid: str) -> bool:
    """The local job's controller still runs (and the pid has not been reused by another program)."""
    try:
        return b"submitit" in Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False


def _run(command: list[str]) -> tuple[bool, str]:
    """(answered, output) of a Slurm query; its complaints are kept for the row, never printed raw."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        return False, said[-1] if said else f"exit code {done.returncode}"
    return True, done.stdout


def _sacct(ids: list[str]) -> tuple[dict[str, str], str]:
    """Accounting's state of each job it lists, and its complaint when it did not answer."""
    if shutil.which("sacct") is None:
        return {}, "sacct is not on PATH"
    command = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]
    for job_id in ids:
        command += ["-j", job_id]
    answered, out = _run(command)
    if not answered:
        return {}, f"sacct: {out}"
    lines = out.splitlines()
    names = lines[0].split("|") if lines else []
    states = {}
    for line in lines[1:]:
        fields = dict(zip(names, line.split("|"), strict=False))
        job_id, state = fields.get("JobID", ""), fields.get("State", "")
        if job_id in ids and state:  # steps (4242.batch) are not the job
            states[job_id] = state.split()[0]  # "CANCELLED by 123" -> CANCELLED
    return states, ""


def _squeue(ids: list[str]) -> tuple[dict[str, str] | None, str]:
    """The queue's state of each job still queued or running (a job it does not list has ended), or None
    when squeue does not answer."""
    if shutil.which("squeue") is None:
        return None, "squeue is not on PATH"
    answered, out = _run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)])
    if not answered:
        return None, f"squeue: {out}"
    states = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ids:
            states[parts[0]] = parts[1]
    return {job_id: states.get(job_id, ENDED) for job_id in ids}, ""


def slurm_states(ids: list[str]) -> tuple[dict[str, str], str]:
    """Slurm's state of each job id ("UNKNOWN" where neither sacct nor squeue could say), and what the
    commands said when they did not answer."""
    if not ids:
        return {}, ""
    states, said = _sacct(ids)
    unlisted = [i for i in ids if i not in states]
    if unlisted:
        queued, why = _squeue(unlisted)
        said = "; ".join(x for x in (said, why) if x)
        for job_id in unlisted:
            states[job_id] = queued[job_id] if queued is not None else "UNKNOWN"
    return states, said


def read_job_note(path: Path) -> dict:
    """A `job.json` as probebench writes it, or `BadFile` saying what is wrong with it."""
    note = read_json(path, MAX_NOTE_BYTES)
    if not isinstance(note, dict):
        raise BadFile(f"{path}: not a job note (not an object)")
    for key in ("job", "encoder", "dataset"):
        if not isinstance(note.get(key), str):
            raise BadFile(f"{path}: not a job note (no {key!r})")
    if note.get("job") != path.parent.name:
        raise BadFile(f"{path}: the note of job {note['job']!r}, in the folder of {path.parent.name!r}")
    records = note.get("records", [])
    if not isinstance(records, list) or not all(isinstance(r, str) for r in records):
        raise BadFile(f"{path}: 'records' is not a list of record paths")
    job_id = note.get("job_id")
    if job_id is not None and not (isinstance(job_id, str) and _JOB_ID.match(job_id)):
        raise BadFile(f"{path}: job_id {job_id!r} is not a job id")
    if note.get("launcher") not in ("local", "slurm"):
        raise BadFile(f"{path}: launcher {note.get('launcher')!r} is neither local nor slurm")
    if job_id is not None and note["launcher"] == "slurm" and not isinstance(note.get("submitted"), str):
        raise BadFile(f"{path}: a Slurm job without the time it was submitted")
    return {**note, "records": records}


def _notes(root: Path) -> tuple[list[tuple[Path, dict]], list[JobRow]]:
    """Every job's note, and a row for each note that is not one."""
    out, damaged = [], []
    for folder in sorted(p for p in (root / "jobs").glob("*") if p.is_dir() and not p.is_symlink()):
        path = folder / "job.json"
        if not path.exists() and not path.is_symlink():
            continue  # a folder a submission is still making
        try:
            note = read_job_note(path)
            for rel in note["records"]:
                confined(root, rel, "job note")  # its record paths stay inside the results folder
        except (BadFile, UserError) as exc:
            said = str(exc).replace(f"{path}: ", "")
            why = f"its note cannot be read ({said}); remove {folder} and re-run"
            damaged.append(JobRow(folder.name, "?", "?", "failed", "?", "", why))
            continue
        out.append((folder, note))
    return out, damaged


def _expired(note: dict, now: datetime) -> bool:
    """The job's time limit has passed since it was submitted (a job no command can see is then over)."""
    try:
        submitted = datetime.fromisoformat(note["submitted"])
    except (KeyError, TypeError, ValueError):
        return True
    limit = note.get("time_min")
    limit = limit if isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0 else 24 * 60
    if submitted.tzinfo is None:
        submitted = submitted.replace(tzinfo=timezone.utc)
    return now > submitted + timedelta(minutes=float(limit))


def job_row(folder: Path, note: dict, root: Path, slurm: dict[str, str], said: str = "") -> JobRow:
    """One job's row; `slurm` holds Slurm's state of the Slurm jobs (`slurm_states`), `said` what its
    commands said when they did not answer."""
    found, planned = _records(note, root)
    job_id = note.get("job_id")
    row = JobRow(note["job"], note["encoder"], note["dataset"], "pending", f"{found}/{planned}", job_id or "")
    done = (folder / "outcome.json").is_file
    state = note.get("state")
    if done():
        row.state = "done"
    elif job_id is None:  # never submitted
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
        if row.state == "failed" and state == "interrupted":
            row.why = "stopped when the `probebench run` that started it was interrupted; re-run it"
            return row
    else:
        slurm_state = slurm.get(job_id, "UNKNOWN")
        if slurm_state == "UNKNOWN":
            if _expired(note, datetime.now(timezone.utc)):
                slurm_state = ENDED
            else:
                row.state = "pending"
                row.why = f"Slurm does not say ({said or 'no answer'}); counted live until its time limit"
                return row
        row.state = _SLURM.get(slurm_state, "failed")
        if done():  # it finished between the two looks
            row.state = "done"
    if row.state == "running":
        row.doing = progress.job_line(folder)
    if row.state == "failed":
        log, line = failure(folder, job_id)
        told = slurm.get(job_id, ENDED)
        ended = f"Slurm: {told}; " if told not in (ENDED, "UNKNOWN") else ""
        row.why = f"{ended}{line} (log: {log})"
    return row


def grid(results_root: Path | None = None) -> list[JobRow]:
    """Every job under results/jobs/, by name (a damaged note is a failed row saying so)."""
    root = results_root or results_dir()
    notes, damaged = _notes(root)
    ids = [n["job_id"] for _, n in notes if n.get("launcher") == "slurm" and n.get("job_id")]
    slurm, said = slurm_states(sorted(set(ids)))
    rows = [job_row(folder, note, root, slurm, said) for folder, note in notes]
    return sorted(rows + damaged, key=lambda r: r.job)


def live_jobs(results_root: Path | None = None) -> dict[str, str]:
    """Jobs submitted and not ended: name -> "running, job <id>" or "pending, job <id>" (with why, where
    Slurm could not say). A job queued by a `probebench run` that is gone has no id and is not live (a re-run
    submits it)."""
    rows = grid(results_root)
    return {
        r.job: f"{r.state}, job {r.job_id}" + (f"; {r.why}" if r.why else "")
        for r in rows
        if r.state in ("running", "pending") and r.job_id
    }


def counts(rows: list[JobRow]) -> dict[str, int]:
    return {s: sum(r.state == s for r in rows) for s in STATES}
