"""Extraction split over processes by torchrun: two CPU processes over gloo write the cache one process
writes, bit for bit; a rank that dies leaves shards the next run reuses, and never an entry read as complete.

Each run is a real `probebench extract` in a subprocess (torchrun's own launcher, its standalone rendezvous).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import call_cli, class_folders, use_registry

from probebench.cache.store import FeatureStore

REGISTRY = """
tiny:
  family: control
  method: random init
  arch: ViT-Ti/16
  source: {kind: random, arch: vit_tiny_patch16_224, seed: 0, arch_kwargs: {img_size: 32, depth: 2}}
  preprocess: {input_size: 32}
"""
# 300 images: shard 0 holds 256 rows, shard 1 the other 44.
LAYOUT = {"train": {"a": 120, "b": 120}, "test": {"a": 30, "b": 30}}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    use_registry(tmp_path, monkeypatch, REGISTRY)
    return class_folders(tmp_path / "imgs", LAYOUT)


def extract_cmd(folder: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "probebench", "extract", "-e", "tiny", "-d", str(folder), "--tokens", "cls",
            "--tokens", "patches", "--workers", "0", *extra]  # fmt: skip


def run(cmd: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROBEBENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def entry(home: Path) -> FeatureStore:
    (root,) = (home / "features" / "tiny").glob("*/*")
    return FeatureStore(root)


def digests(store: FeatureStore) -> dict[str, str]:
    """Every shard file of the entry and its sha256, read from disk (not from the manifest)."""
    files = [f for info in store.manifest["shards"].values() for f in info["files"]]
    return {f: hashlib.sha256((store.root / f).read_bytes()).hexdigest() for f in sorted(files)}


def test_two_processes_write_the_cache_one_process_writes(folder, tmp_path):
    one = run(extract_cmd(folder), tmp_path / "one")
    assert one.returncode == 0, one.stderr
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2"]
    two = run([*torchrun, *extract_cmd(folder)[1:]], tmp_path / "two")  # torchrun ... -m probebench extract
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("extracted") == 1, "rank 0 speaks for the run"
    a, b = entry(tmp_path / "one"), entry(tmp_path / "two")
    assert a.complete and b.complete and a.num_shards == 2
    assert digests(a) == digests(b) and len(digests(a)) == 2 * len(a.arrays())
    assert a.manifest["shards"] == b.manifest["shards"], "the same files, sizes and checksums"
    assert a.manifest["layers"] == b.manifest["layers"] and a.manifest["encoder"] == b.manifest["encoder"]
    assert not list(b.root.glob("shard-*.json")), "rank 0 listed every rank's shards and removed the notes"


def _pid_of_rank(home: Path, rank: int) -> int | None:
    """The worker process torchrun started for `rank` of the run writing to `home`."""
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"PROBEBENCH_HOME={home}".encode() in env and f"RANK={rank}".encode() in env:
            if b"LOCAL_RANK=%d" % rank in env:
                return int(proc.name)
    return None


def test_a_dead_rank_leaves_shards_the_next_run_reuses_and_no_complete_entry(folder, tmp_path):
    home = tmp_path / "killed"
    env = {**os.environ, "PROBEBENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(extract_cmd(folder, "--nproc", "2"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    note = None
    while time.monotonic() < deadline and proc.poll() is None:
        note = next(home.glob("features/tiny/*/*/shard-00001.json"), None)
        if note is not None:
            break
        time.sleep(0.02)
    assert note is not None, "rank 1 wrote its shard (44 rows) long before rank 0 finished 256"
    pid = _pid_of_rank(home, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "extraction rank 1 of 2 was killed by signal 9" in err
    assert "Traceback" not in err
    store = entry(home)
    assert not store.complete and store.manifest["shards"] == {}, "nothing listed before every rank was done"
    written = {f: (store.root / f).stat().st_mtime_ns for f in json.loads(note.read_text())["files"]}

    again = run(extract_cmd(folder), home)  # one process finishes what the ranks left
    assert again.returncode == 0, again.stderr
    # Rank 0 may or may not have finished shard 0 before torchrun stopped it; shard 1 is reused either way.
    assert "shards are already done and reused" in again.stderr or "already cached" in again.stdout
    assert {f: (store.root / f).stat().st_mtime_ns for f in written} == written, "shard 1 was not redone"
    clean = run(extract_cmd(folder), tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    assert digests(entry(home)) == digests(entry(tmp_path / "clean"))


def test_sidecars_are_listed_only_when_their_files_are_whole():
    store = FeatureStore.open("tiny", "imgs", "k" * 64, {}, n=300, shard_size=256)
    arrays = {"pooled.L1": np.ones((256, 4), np.float16)}
    store.write_shard(0, arrays, publish=False)
    store.write_shard(1, {"pooled.L1": np.ones((44, 4), np.float16)}, ["x.png"], publish=False)
    assert FeatureStore(store.root).manifest["shards"] == {}, "a rank's shard is not listed by itself"
    with open(store.root / "pooled.L1.00001.npy", "r+b") as f:
        f.truncate(10)  # rank 1 died mid-write
    assert store.adopt_sidecars() == 1
    again = FeatureStore(store.root)
    assert list(again.manifest["shards"]) == ["0"] and again.missing_shards() == [1]
    assert not list(store.root.glob("shard-*.json"))
    assert json.loads((store.root / "manifest.json").read_text())["skipped"] == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--nproc", "0"], "--nproc 0: give a positive number"),
        (["-e", "no_such", "--nproc", "2"], "unknown encoder 'no_such'"),
    ],
)
def test_bad_nproc_input_is_one_line_before_any_process_starts(folder, monkeypatch, capsys, args, expected):
    code, _, err = call_cli(monkeypatch, capsys, "extract", "-e", "tiny", "-d", str(folder), *args)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
