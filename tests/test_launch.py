"""The job grid: one job per (encoder, dataset) through submitit, local processes or Slurm, and its status.

The local launcher runs real jobs in real processes. Slurm is a fake `sbatch` and `sacct` on PATH: the
submission script submitit writes, and the states sacct reports, are the real interfaces.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import sys
from pathlib import Path

import pytest
from conftest import call_cli, class_folders, use_registry

from probebench.encoders.registry import parse_registry
from probebench.launch.grid import plan_jobs
from probebench.launch.status import failure, grid
from probebench.pipeline.config import Resources, RunConfig
from probebench.tasks import get_suite, get_tasks, load_tasks

# Three tiny random ViTs at 32 px: three jobs per dataset, each a few seconds.
REGISTRY = "".join(
    f"""
tiny{i}:
  family: control
  method: random init
  arch: ViT-Ti/16
  source: {{kind: random, arch: vit_tiny_patch16_224, seed: {i}, arch_kwargs: {{img_size: 32, depth: 2}}}}
  preprocess: {{input_size: 32}}
"""
    for i in range(3)
)


@pytest.fixture
def study(tmp_path, monkeypatch):
    """Two small image-folder datasets and a kNN task on each; returns the CLI arguments that select them."""
    use_registry(tmp_path, monkeypatch, REGISTRY)
    for name in ("pets", "cars"):
        class_folders(tmp_path / "data" / name, {"train": {"a": 3, "b": 3}, "test": {"a": 2, "b": 2}})
    (tmp_path / "datasets.yaml").write_text(
        "pets: {format: image_folder, root: pets}\ncars: {format: image_folder, root: cars}\n"
    )
    (tmp_path / "tasks.yaml").write_text(
        "knn_pets: {probe: knn, dataset: pets}\nknn_cars: {probe: knn, dataset: cars}\n"
    )
    return [
        "--datasets",
        str(tmp_path / "datasets.yaml"),
        "--data-root",
        str(tmp_path / "data"),
        "--tasks",
        str(tmp_path / "tasks.yaml"),
        "--workers",
        "0",
    ]


def results() -> Path:
    return Path(os.environ["PROBEBENCH_RESULTS"])


def primaries(root: Path) -> dict[str, float]:
    out = {}
    for path in sorted((root / "runs").glob("*.json")):
        rec = json.loads(path.read_text())
        out[path.name] = rec["metrics"][rec["primary"]["name"]]
    return out


# -- the grid ---------------------------------------------------------------------------------------------
def test_a_job_is_one_encoder_on_the_tasks_of_one_dataset():
    reg = parse_registry(REGISTRY)
    catalog = load_tasks(None)
    tasks = get_suite("default", catalog) + get_tasks("knn", catalog)
    tasks += [t.on_dataset("cub100") for t in get_tasks("linear", catalog)]
    jobs = plan_jobs([reg["tiny0"], reg["tiny1"]], tasks)
    assert [j.name for j in jobs] == [
        "tiny0__embedded",
        "tiny0__cub100",
        "tiny1__embedded",
        "tiny1__cub100",
    ], "encoders in the order given, datasets in the order their tasks come"
    assert [t.name for t in jobs[0].tasks] == [t.name for t in get_suite("default", catalog)] + ["knn"]
    assert [t.name for t in jobs[1].tasks] == ["linear"], "the same task on another dataset is another job"
    records = jobs[0].records(RunConfig(results_root=Path("/r")))
    assert records[0] == Path("/r/runs/tiny0__embedded__linear.json") and len(records) == 14


def test_tasks_that_share_a_dataset_are_one_job_so_no_two_jobs_write_one_cache_entry():
    """The papers' discovery tasks all train HEAP and FOUND on DUTS-TR: one job, one DUTS-TR extraction."""
    reg = parse_registry(REGISTRY)
    papers = get_suite("papers", load_tasks(None))
    jobs = plan_jobs([reg["tiny0"]], papers)
    (discovery,) = [j for j in jobs if any(d == "duts_tr" for t in j.tasks for d, _ in t.bindings.values())]
    # eight datasets joined by -and- make a name too long for a file: the first, a count and a hash
    assert discovery.name.startswith("tiny0__coco20k-and-7-more-") and len(discovery.name) <= 64 + 7
    reading = [t for t in papers if any(d == "duts_tr" for d, _ in t.bindings.values())]
    assert len(reading) >= 3 and {t.name for t in reading} <= {t.name for t in discovery.tasks}
    assert {"voc07", "voc12", "coco20k"} <= {d for t in discovery.tasks for d, _ in t.bindings.values()}
    datasets = [{d for t in j.tasks for d, _ in t.bindings.values()} for j in jobs]
    assert all(not (a & b) for i, a in enumerate(datasets) for b in datasets[i + 1 :]), "disjoint jobs"
    assert sum(len(j.tasks) for j in jobs) == len(papers), "every task in exactly one job"


# -- local jobs -------------------------------------------------------------------------------------------
def test_local_jobs_run_the_grid_side_by_side_like_one_process_and_rerun_only_what_is_missing(
    study, monkeypatch, capsys, tmp_path
):
    code, out, err = call_cli(monkeypatch, capsys, "run", *study, "-t", "knn_pets", "-t", "knn_cars",
                              "--launcher", "local", "--jobs", "3")  # fmt: skip
    assert code == 0, err
    assert "jobs: 6 in the grid, 0 finished before, 0 still queued or running, 6 to run" in out
    assert out.count("done ") == 6 and "tiny2 x cars x knn_cars: top1_k20=" in out
    rows = grid()
    assert {r.state for r in rows} == {"done"} and len(rows) == 6 and rows[0].records == "1/1"
    note = json.loads((results() / "jobs" / "tiny0__pets" / "job.json").read_text())
    assert note["launcher"] == "local" and note["records"] == ["runs/tiny0__pets__knn_pets.json"]
    assert note["threads"] == max(1, len(os.sched_getaffinity(0)) // 3), "the cores shared between jobs"
    board = (results() / "leaderboard.csv").read_text()
    assert all(f"tiny{i},control,knn_{d}" in board for i in range(3) for d in ("pets", "cars")), (
        "six jobs wrote records and the leaderboard at once: none lost"
    )
    rec = json.loads((results() / "runs" / "tiny1__cars__knn_cars.json").read_text())
    assert rec["knobs"]["threads"] == note["threads"]

    # The same grid in one process gives the same numbers.
    first = results()
    monkeypatch.setenv("PROBEBENCH_RESULTS", str(tmp_path / "one-process"))
    code, _, err = call_cli(monkeypatch, capsys, "run", *study, "-t", "knn_pets", "-t", "knn_cars")
    assert code == 0, err
    assert primaries(tmp_path / "one-process") == primaries(first) and len(primaries(first)) == 6

    # Re-running submits nothing; a lost record is the one job submitted again.
    monkeypatch.setenv("PROBEBENCH_RESULTS", str(first))
    (first / "runs" / "tiny2__pets__knn_pets.json").unlink()
    code, out, err = call_cli(monkeypatch, capsys, "run", *study, "-t", "knn_pets", "-t", "knn_cars",
                              "--launcher", "local", "--jobs", "3")  # fmt: skip
    assert code == 0, err
    assert "jobs: 6 in the grid, 5 finished before, 0 still queued or running, 1 to run" in out
    assert out.count("done ") == 1 and "tiny2 x pets x knn_pets" in out
    assert {r.state for r in grid()} == {"done"}


def test_a_failed_job_names_its_log_and_error_and_a_rerun_retries_it(study, monkeypatch, capsys, tmp_path):
    bad = tmp_path / "data" / "cars" / "train" / "a" / "0.png"
    good = bad.read_bytes()
    bad.write_bytes(b"not a png")
    args = [*study, "-e", "tiny0", "-t", "knn_pets", "-t", "knn_cars", "--strict", "--launcher", "local"]
    code, out, err = call_cli(monkeypatch, capsys, "run", *args)
    assert code == 2 and "1 job(s) failed" in err and "Traceback" not in out + err
    assert "done     tiny0 x pets x knn_pets" in out
    line = next(x for x in out.splitlines() if x.startswith("failed"))
    assert "tiny0__cars" in line and "train/a/0.png" in line and "_0_log.err" in line
    rows = {r.job: r for r in grid()}
    assert rows["tiny0__pets"].state == "done" and rows["tiny0__cars"].state == "failed"
    assert "train/a/0.png" in rows["tiny0__cars"].why and rows["tiny0__cars"].records == "0/1"

    code, out, _ = call_cli(monkeypatch, capsys, "status")
    assert code == 0 and "2 jobs: 1 done, 0 running, 1 failed, 0 pending" in out

    bad.write_bytes(good)
    code, out, err = call_cli(monkeypatch, capsys, "run", *args)
    assert code == 0, err
    assert (
        "1 finished before, 0 still queued or running, 1 to run" in out
        and "done     tiny0 x cars x knn_cars" in out
    )
    assert {r.state for r in grid()} == {"done"}


def test_a_rerun_leaves_a_live_job_alone_and_a_stopped_grid_marks_what_never_started(
    study, monkeypatch, capsys
):
    import subprocess

    from probebench.launch.submit import launch_jobs

    # A job that still runs (its controller's command line names submitit) is not submitted again.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit"])
    try:
        folder = results() / "jobs" / "tiny0__pets"
        folder.mkdir(parents=True)
        note = {
            "job": "tiny0__pets",
            "encoder": "tiny0",
            "dataset": "pets",
            "records": [],
            "state": "submitted",
        }
        (folder / "job.json").write_text(
            json.dumps({**note, "launcher": "local", "job_id": str(sleeper.pid)})
        )
        code, out, err = call_cli(monkeypatch, capsys, "run", *study, "-e", "tiny0", "-t", "knn_pets",
                                  "--launcher", "local")  # fmt: skip
        assert code == 0, err
        assert f"not submitted again, still live: tiny0__pets (running, job {sleeper.pid})" in out
        assert "1 still queued or running, 0 to run" in out
        assert not (results() / "runs" / "tiny0__pets__knn_pets.json").exists()
    finally:
        sleeper.kill()

    # The grid's parent stops after its first job: the running ones are cancelled, the queued ones say so.
    from probebench.pipeline.data import load_task_data

    reg = parse_registry(REGISTRY)
    catalog = load_tasks(Path(study[study.index("--tasks") + 1]))
    datasets, root = Path(study[1]), Path(study[3])
    cfg = RunConfig(datasets=datasets, data_root=root, results_root=results(), launcher="local")
    tasks, loaded = load_task_data(get_tasks("knn_cars", catalog), cfg)
    grid_run = launch_jobs(plan_jobs([reg[f"tiny{i}"] for i in range(3)], tasks), cfg, Resources(), loaded)
    first = next(grid_run)
    grid_run.close()  # what Ctrl-C does to the loop
    assert first.ok and first.job.name == "tiny0__cars"
    rows = {r.job: r for r in grid()}
    assert rows["tiny0__cars"].state == "done"
    for name in ("tiny1__cars", "tiny2__cars"):
        assert rows[name].state == "failed" and "cancelled before it started" in rows[name].why


def test_failure_reads_the_last_exception_or_the_last_line(tmp_path):
    log = tmp_path / "7_0_log.err"
    log.write_text(
        "Traceback (most recent call last):\n  File 'x.py', line 1\n"
        "probebench.errors.UserError: cars: train/a/0.png is not an image; fix or remove it\n"
        "submitit ERROR (2026-11-25 12:00:00,000) - Submitted job triggered an exception\n"
    )
    assert failure(tmp_path, "7") == (log, "cars: train/a/0.png is not an image; fix or remove it")
    log.write_text("Traceback (most recent call last):\n  ...\nKeyError: 'x'\n")
    assert failure(tmp_path, "7")[1] == "KeyError: 'x'"
    log.write_text("loading\nextracting 3/10\n")
    assert failure(tmp_path, "7")[1].endswith("; its last line: extracting 3/10"), "killed: its last words"
    assert failure(tmp_path, "7")[1].startswith("stopped from outside before it finished")
    assert failure(tmp_path, "8")[1] == "no log: the job never started"


# -- Slurm ------------------------------------------------------------------------------------------------
FAKE_SBATCH = """#!/bin/sh
cp "$1" "$FAKE_SLURM/script.sh"
echo "Submitted batch job 4242"
"""
FAKE_SACCT = """#!/bin/sh
echo "JobID|State|NodeList"
echo "4242|$(cat "$FAKE_SLURM/state")|node1"
"""


def test_slurm_jobs_ask_for_what_was_given_and_status_reads_sacct(study, monkeypatch, capsys, tmp_path):
    fake = tmp_path / "slurm"
    fake.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", "#!/bin/sh\n")):
        (fake / name).write_text(text)
        (fake / name).chmod((fake / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(fake))
    args = [*study, "-e", "tiny1", "-t", "knn_pets", "--launcher", "slurm", "--partition", "gpu"]
    args += ["--gpus", "1", "--cpus", "8", "--time", "90", "--mem", "32"]
    code, out, err = call_cli(monkeypatch, capsys, "run", *args)
    assert code == 0, err
    assert "submitted tiny1__pets: slurm job 4242" in out and "probebench status --watch" in out
    script = (fake / "script.sh").read_text()
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=90", "--mem=32GB",
                 "--job-name=tiny1__pets"):  # fmt: skip
        assert f"#SBATCH {line}" in script, line
    note = json.loads((results() / "jobs" / "tiny1__pets" / "job.json").read_text())
    assert note["job_id"] == "4242" and note["threads"] == 8, "torch threads: the CPUs Slurm gives"

    for state, ours in (("PENDING", "pending"), ("RUNNING", "running"), ("TIMEOUT", "failed")):
        (fake / "state").write_text(state)
        (row,) = grid()
        assert row.state == ours, state
    assert row.why.startswith("Slurm: TIMEOUT; no log: the job never started")


# -- many writers ------------------------------------------------------------------------------------------
def _write_and_refresh(root: str, i: int, first_read) -> None:
    """Write record `enc<i>` and rebuild the leaderboard. Writer 0 reads the records before anyone else has
    written theirs, then dawdles: without the lock its stale tables would land last."""
    import time

    from probebench.results import records, tables

    rec = json.loads((Path(root) / "template.json").read_text())
    rec["encoder"]["name"] = f"enc{i}"
    if i != 0:
        first_read.wait(60)
    (Path(root) / "runs" / f"enc{i}__embedded__knn.json").write_text(json.dumps(rec))
    real = records.read_records

    def slow_read(root=None):
        out = real(root)
        if i == 0:
            first_read.set()
            time.sleep(2)
        return out

    tables.read_records = slow_read
    tables.refresh(Path(root))


def test_many_processes_refreshing_the_leaderboard_at_once_lose_no_record(study, monkeypatch, capsys):
    code, _, err = call_cli(monkeypatch, capsys, "run", *study, "-e", "tiny0", "-t", "knn_pets")
    assert code == 0, err
    root = results()
    (root / "template.json").write_text((root / "runs" / "tiny0__pets__knn_pets.json").read_text())
    ctx = multiprocessing.get_context("spawn")
    first_read = ctx.Event()
    procs = [ctx.Process(target=_write_and_refresh, args=(str(root), i, first_read)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 6
    board = (root / "leaderboard.csv").read_text()
    assert all(f"\nenc{i}," in board for i in range(6)), "the last tables written hold every record"


# -- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--launcher", "cloud"], "--launcher 'cloud': use one of none, local, slurm"),
        (["--jobs", "2"], "--jobs apply to jobs: add --launcher local or --launcher slurm"),
        (["--partition", "gpu", "--mem", "8"], "--partition, --mem apply to jobs"),
        (["--launcher", "local", "--jobs", "0"], "--jobs 0: give a positive number"),
        (["--launcher", "local", "--cpus", "4"], "--cpus apply to --launcher slurm"),
        (["--launcher", "slurm", "--gpus", "2"], "--gpus 2: a job runs on one GPU"),
        (["--launcher", "local", "--gpus", "1"], "--gpus 1: this machine has no GPU"),
    ],
)
def test_bad_launcher_options_are_one_line(study, monkeypatch, capsys, args, expected):
    code, out, err = call_cli(monkeypatch, capsys, "run", *study, "-e", "tiny0", "-t", "knn_pets", *args)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not (results() / "runs").exists() or not list((results() / "runs").iterdir())


def test_status_without_jobs_says_how_to_start_some(monkeypatch, capsys):
    code, _, err = call_cli(monkeypatch, capsys, "status")
    assert code == 2 and "probebench run --launcher local" in err


def test_slurm_refusals_are_one_line(study, monkeypatch, capsys, tmp_path):
    args = [*study, "-e", "tiny1", "-t", "knn_pets", "--launcher", "slurm", "--partition", "gpu"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no Slurm commands at all
    code, _, err = call_cli(monkeypatch, capsys, "run", *args)
    assert code == 2 and "sbatch, srun or sacct is not on PATH" in err and len(err.splitlines()) == 1

    fake = tmp_path / "slurm"
    fake.mkdir()
    refuse = "#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n"
    for name, text in (("sbatch", refuse), ("sacct", "#!/bin/sh\n"), ("srun", "#!/bin/sh\n")):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}/usr/bin{os.pathsep}/bin")
    code, _, err = call_cli(monkeypatch, capsys, "run", *args)
    assert code == 2 and len(err.splitlines()) == 1
    assert "sbatch refused tiny1__pets: sbatch: error: invalid partition specified: gpu" in err


def test_status_watch_redraws_until_nothing_runs_or_waits(monkeypatch, capsys):
    """A queued job shows as pending; --watch draws again after --every seconds and stops once it is done."""
    import probebench.launch.submit as submit
    from probebench.launch.grid import plan_jobs

    reg = parse_registry(REGISTRY)
    (job,) = plan_jobs([reg["tiny0"]], get_tasks("knn", load_tasks(None)))
    submit._write_note(job, RunConfig(results_root=results(), launcher="local"), None, "queued")
    folder = results() / "jobs" / "tiny0__embedded"
    naps = []

    def nap(seconds: float) -> None:  # the job finishes while status sleeps
        naps.append(seconds)
        (folder / "outcome.json").write_text('{"lines": [], "finished": "now"}')

    monkeypatch.setattr("time.sleep", nap)
    code, out, err = call_cli(monkeypatch, capsys, "status", "--watch", "--every", "0.5")
    assert code == 0, err
    assert naps == [0.5] and out.count("records") == 2, "two tables: before and after the nap"
    assert "1 jobs: 0 done, 0 running, 0 failed, 1 pending" in out
    assert out.rstrip().endswith("1 jobs: 1 done, 0 running, 0 failed, 0 pending")


# -- notes read back, Slurm that does not answer, Ctrl-C ---------------------------------------------------
NOTE = '"job": "a__b", "encoder": "a", "dataset": "b", "launcher": "local"'


@pytest.mark.parametrize(
    ("note", "said"),
    [
        ("{not json", "not valid JSON"),
        ("{" + NOTE + ', "records": [], "job_id": {"x": 1}}', "job_id {'x': 1} is not a job id"),
        ("{" + NOTE + ', "records": 3}', "'records' is not"),
        ("{" + NOTE + ', "records": ["../../etc/x.json"]}', "leaves the dataset's folder"),
        ("{" + NOTE.replace("a__b", "c__d") + ', "records": []}', "the note of job"),
    ],
)
def test_a_damaged_job_note_is_a_row_saying_so(monkeypatch, capsys, note, said):
    folder = results() / "jobs" / "a__b"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(note)
    other = results() / "jobs" / "c__d"
    other.mkdir()
    (other / "job.json").write_text(
        '{"job": "c__d", "encoder": "c", "dataset": "d", "records": [], "launcher": "local", "job_id": null, '
        '"state": "cancelled"}'
    )
    code, out, err = call_cli(monkeypatch, capsys, "status")
    assert code == 0 and "Traceback" not in err, err
    assert "2 jobs: 0 done, 0 running, 2 failed" in out
    (row,) = [r for r in grid() if r.job == "a__b"]
    assert row.state == "failed" and "its note cannot be read" in row.why and said in row.why


def _fake_slurm(tmp_path, sacct: str, squeue: str | None) -> Path:
    fake = tmp_path / "slurm"
    fake.mkdir(exist_ok=True)
    scripts = {"sbatch": FAKE_SBATCH, "srun": "#!/bin/sh\n", "sacct": sacct}
    if squeue is not None:
        scripts["squeue"] = squeue
    for name, text in scripts.items():
        (fake / name).write_text(text)
        (fake / name).chmod((fake / name).stat().st_mode | stat.S_IEXEC)
    return fake


def test_slurm_without_accounting_asks_the_queue_and_a_job_it_lost_is_resubmitted(
    study, monkeypatch, capsys, tmp_path
):
    no_accounting = "#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n"
    queue = '#!/bin/sh\n[ -f "$FAKE_SLURM/queued" ] && echo "4242 PENDING"\nexit 0\n'
    fake = _fake_slurm(tmp_path, no_accounting, queue)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(fake))
    args = ["run", *study, "-e", "tiny1", "-t", "knn_pets", "--launcher", "slurm", "--partition", "gpu"]
    code, out, err = call_cli(monkeypatch, capsys, *args)
    assert code == 0 and "submitted tiny1__pets: slurm job 4242" in out, err
    (fake / "queued").write_text("")
    (row,) = grid()
    assert row.state == "pending" and not row.why
    code, out, err = call_cli(monkeypatch, capsys, *args)
    assert "not submitted again, still live: tiny1__pets (pending, job 4242)" in out
    assert "accounting storage is disabled" not in err, "sacct's complaint is not printed raw"
    (fake / "queued").unlink()  # the queue no longer lists it, and it wrote no outcome: it ended, failed
    (row,) = grid()
    assert row.state == "failed", row
    code, out, err = call_cli(monkeypatch, capsys, *args)
    assert "submitted tiny1__pets" in out and "0 still queued or running, 1 to run" in out


def test_a_job_no_slurm_command_can_see_is_live_until_its_time_limit(study, monkeypatch, capsys, tmp_path):
    from datetime import datetime, timedelta, timezone

    fake = _fake_slurm(tmp_path, "#!/bin/sh\nexit 1\n", None)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(fake))
    args = ["run", *study, "-e", "tiny1", "-t", "knn_pets", "--launcher", "slurm", "--time", "30"]
    code, out, err = call_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    (row,) = grid()
    assert row.state == "pending" and "counted live until its time limit" in row.why
    note_path = results() / "jobs" / "tiny1__pets" / "job.json"
    note = json.loads(note_path.read_text())
    assert note["time_min"] == 30
    note["submitted"] = (datetime.now(timezone.utc) - timedelta(minutes=31)).isoformat()
    note_path.write_text(json.dumps(note))
    (row,) = grid()
    assert row.state == "failed", "past its time limit, a job nobody lists has ended"


def test_a_local_grid_is_not_stopped_by_slurm_notes_copied_from_a_cluster(study, monkeypatch, capsys):
    folder = results() / "jobs" / "tiny9__far"
    folder.mkdir(parents=True)
    note = {"job": "tiny9__far", "encoder": "tiny9", "dataset": "far", "records": [], "launcher": "slurm",
            "job_id": "77", "state": "submitted", "submitted": "2026-01-01T00:00:00+00:00"}  # fmt: skip
    (folder / "job.json").write_text(json.dumps(note))
    args = ["run", *study, "-e", "tiny0", "-t", "knn_pets", "--launcher", "local"]
    code, out, err = call_cli(monkeypatch, capsys, *args)
    assert code == 0 and "done     tiny0 x pets x knn_pets" in out, err
    code, out, err = call_cli(monkeypatch, capsys, "status")
    assert code == 0 and "tiny9__far" in out


def test_progress_is_quiet_where_stderr_is_not_a_terminal(capsys):
    """CI logs stay short: no bars and no live view of jobs unless stderr is a terminal."""
    from probebench import progress
    from probebench.launch.submit import live_view

    try:
        progress.show_on_terminal()  # pytest's captured stderr is not a terminal
        assert progress._SINKS == []
        with progress.stage("extract tiny x pets", total=10, unit="img") as advance:
            advance(10)
        with live_view(True) as watch:
            assert watch is None
    finally:
        progress.reset()
    assert capsys.readouterr().err == ""


def test_a_job_keeps_its_progress_where_the_parent_and_status_read_it(tmp_path):
    from probebench import progress

    try:
        progress.write_to(tmp_path)
        with progress.stage("extract tiny x pets", total=10, unit="img") as advance:
            advance(4)
            progress._SINKS[0]._write(force=True)
            line = progress.job_line(tmp_path)
            assert line.startswith("extract tiny x pets: 4/10 img") and "img/s" in line
        assert progress.job_line(tmp_path) == "", "a finished stage is gone from the note"
    finally:
        progress.reset()
    assert progress.Stage("discovery: tiny x pets", None, "step").line() == "discovery: tiny x pets"
    (tmp_path / "progress.json").write_text('{"stages": [{"label": 5}]}')
    assert progress.job_line(tmp_path) == "", "a damaged note reads as no stage, never an error"
