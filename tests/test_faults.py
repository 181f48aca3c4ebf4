"""Faults (issue 9): what keeps working when a process is killed, the disk fills up, two runs share one cache,
or the features are larger than the memory a run is given. Kills are real SIGKILLs of child processes at
chosen points (mid-shard, mid-record, mid-generation); the disk is a small tmpfs where one can be mounted,
else a simulated ENOSPC; memory is a cgroup limit where one can be created."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_REGISTRY, call_cli, use_registry

import probebench.extraction.extract as ex
from probebench.cache.entries import list_stores
from probebench.cache.store import FeatureStore
from probebench.data.formats.folder import read_image_folder
from probebench.encoders.load import resolve_encoder
from probebench.encoders.registry import parse_registry
from probebench.errors import UserError
from probebench.extraction.request import ExtractionOptions, FeatureRequest
from probebench.results.records import read_records

OPTS = ExtractionOptions(batch_size=4, num_workers=0, shard_size=8, progress=False)
REPO = Path(__file__).resolve().parents[1]


def tiny_spec():
    return resolve_encoder(parse_registry(TINY_REGISTRY)["tiny_random"])


def python(
    code: str, *args: str, wait: bool = True, **popen
) -> subprocess.Popen | subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with this test's environment (home, results, registry)."""
    cmd = [sys.executable, "-c", textwrap.dedent(code), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, **popen)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def image_folder(root: Path, per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", per_class // 2)):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                from PIL import Image

                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


# A child that extracts the folder in argv[1] and SIGKILLs itself at a chosen write: the `os.replace` that
# would publish shard 1's second array file (its first file is in place, the manifest does not list it).
_KILLED_EXTRACTION = """
import os, signal, sys
from pathlib import Path
import probebench.extraction.extract as ex
from probebench.data.formats.folder import read_image_folder
from probebench.encoders.load import resolve_encoder
from probebench.encoders.registry import load_registry
from probebench.extraction.request import ExtractionOptions, FeatureRequest

real_replace, seen = os.replace, []
def dying_replace(src, dst):
    if ".00001.npy" in str(dst):
        seen.append(dst)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
os.replace = dying_replace  # probebench.io's atomic writes look it up on the module
opts = ExtractionOptions(batch_size=4, num_workers=0, shard_size=8, progress=False)
spec = resolve_encoder(load_registry()["tiny_random"])
ex.extract_features(spec, read_image_folder(Path(sys.argv[1])), FeatureRequest(), opts)
"""


def test_sigkill_mid_shard_resumes_bit_identical(tmp_path, monkeypatch, caplog):
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    root = image_folder(tmp_path / "imgs")  # 36 images: shards of 8 -> 5 shards
    child = python(_KILLED_EXTRACTION, str(root))
    assert child.returncode == -signal.SIGKILL, child.stderr
    (store,) = list_stores()
    assert store.missing_shards() == [1, 2, 3, 4], "shard 1 was half written: it must not look done"
    assert list(store.root.glob(".*.tmp")), "the kill left a temporary file, which nothing reads"
    resumed = ex.extract_features(tiny_spec(), read_image_folder(root), FeatureRequest(), OPTS)
    assert any("1 of 5 shards are already done and reused" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv("PROBEBENCH_HOME", str(tmp_path / "fresh-home"))
    fresh = ex.extract_features(tiny_spec(), read_image_folder(root), FeatureRequest(), OPTS)
    for name in ("cls.L11", "pooled.L11", "valid", "geometry"):
        np.testing.assert_array_equal(resumed.store.load(name), fresh.store.load(name))


_REWRITER = """
import json, sys
from pathlib import Path
from probebench.results import tables
from probebench.results.records import write_record
from probebench.results.schema import ResultRecord

path = Path(sys.argv[1])
record = ResultRecord.model_validate(json.loads(path.read_text()), context={"recorded": True})
print("ready", flush=True)
i = 0
while True:  # rewrite the record (with a large field, so writes take time) and the leaderboard, forever
    i += 1
    big = record.model_copy(update={"warnings": ["x" * (i % 7) * 400_000]})
    write_record(path, big)
    tables.write(tables.build_leaderboard())
"""


def test_sigkill_during_record_and_leaderboard_writes_never_leaves_a_half_file(tmp_path, monkeypatch, capsys):
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    root = image_folder(tmp_path / "imgs", per_class=4)
    code, _, _ = call_cli(monkeypatch, capsys, "run", "-e", "tiny_random", "-t", "knn", "-d", str(root))
    assert code == 0
    results = Path(os.environ["PROBEBENCH_RESULTS"])
    (record,) = (results / "runs").glob("*.json")
    rng = random.Random(0)
    for _ in range(4):
        child = python(_REWRITER, str(record), wait=False)
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        records, problems = read_records(results)
        assert len(records) == 1 and problems == []
        assert pd.read_csv(results / "leaderboard.csv").primary.sum() == 1


def test_two_concurrent_runs_share_one_cache_and_results_folder(tmp_path, monkeypatch):
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    root = image_folder(tmp_path / "imgs")
    run = "from probebench.cli import main; main()"
    args = ["run", "-e", "tiny_random", "-t", "knn", "-t", "linear", "-d", str(root), "--workers", "0"]
    children = [python(run, *args, wait=False) for _ in range(2)]
    outs = [c.communicate(timeout=300) for c in children]
    assert [c.returncode for c in children] == [0, 0], outs
    results = Path(os.environ["PROBEBENCH_RESULTS"])
    records, problems = read_records(results)
    assert problems == [] and sorted(r.task.name for r in records) == ["knn", "linear"]
    (store,) = list_stores()
    assert store.complete and not list(store.root.glob(".*.tmp"))
    for name in store.arrays():
        store.load(name)  # every shard passes its checksum
    monkeypatch.setenv("PROBEBENCH_HOME", str(tmp_path / "fresh-home"))
    fresh = ex.extract_features(tiny_spec(), read_image_folder(root), FeatureRequest(), OPTS)
    np.testing.assert_array_equal(store.load("pooled.L11"), fresh.store.load("pooled.L11"))


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def test_a_full_disk_during_a_cache_write_is_one_line_and_leaves_no_partial_shard(
    tmp_path, monkeypatch, tiny_embedded
):
    disk = tmp_path / "small-disk"
    mounted = _mount_tmpfs(disk, "1m")
    if not mounted:  # no tmpfs here (not root): the disk fills up after a few files instead
        disk.mkdir(exist_ok=True)
        real_fsync, calls = os.fsync, {"n": 0}

        def fsync(fd):
            calls["n"] += 1
            if calls["n"] > 12:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setenv("PROBEBENCH_HOME", str(disk / "home"))
    try:
        req = FeatureRequest(layers=("all",), tokens=("cls", "pooled", "patches"))  # about 2 MB of features
        with pytest.raises(UserError, match="No space left on device; free space there"):
            ex.extract_features(tiny_spec(), tiny_embedded, req, OPTS)
        (store,) = list_stores()
        assert not list(store.root.glob(".*.tmp")), "a failed write removes its temporary file"
        store = FeatureStore(store.root)
        done = [s for s in range(store.num_shards) if s not in store.missing_shards()]
        assert store.missing_shards(), "the disk filled up before the end"
        for name in store.arrays():
            for shard in done:
                store._shard_array(name, shard, verify=True)  # what the manifest lists is whole
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)


_KILLED_GENERATION = """
import os, signal, sys
from pathlib import Path
import probebench.data.synthetic as synthetic

real_save, n = synthetic.Image.Image.save, [0]
def dying_save(self, *a, **k):
    n[0] += 1
    if n[0] == 20:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(self, *a, **k)
synthetic.Image.Image.save = dying_save
synthetic.generate(Path(sys.argv[1]), per_class_train=2, per_class_test=1, image_size=32)
"""


def test_a_killed_generation_of_the_embedded_data_leaves_nothing_behind(tmp_path, caplog):
    from probebench.data import synthetic

    root = tmp_path / "embedded"
    child = python(_KILLED_GENERATION, str(root))
    assert child.returncode == -signal.SIGKILL, child.stderr
    (leftover,) = tmp_path.glob("embedded.tmp-*")
    synthetic.generate(root, per_class_train=2, per_class_test=1, image_size=32)
    assert not leftover.exists() and (root / "annotations.json").is_file()
    assert any(
        "removed 1 folder(s) left by an interrupted generation" in r.getMessage() for r in caplog.records
    )


def _memory_cgroup(limit: int) -> Path | None:
    """A new memory cgroup limited to `limit` bytes (v2 or v1), or None where none can be made here."""
    base = Path("/sys/fs/cgroup")
    for parent, knob in ((base, "memory.max"), (base / "memory", "memory.limit_in_bytes")):
        if (
            not (parent / "cgroup.procs").exists()
            or (knob == "memory.max") != (parent / "cgroup.controllers").exists()
        ):
            continue
        group = parent / f"probebench-test-{os.getpid()}"
        try:
            group.mkdir()
            (group / knob).write_text(str(limit))
            return group
        except OSError:
            if group.exists():
                group.rmdir()
    return None


# A child, inside the memory limit, that writes a synthetic cache entry shard by shard (as extraction does)
# and runs the kNN probe over it through the task contract.
_KNN_UNDER_LIMIT = """
import sys
import numpy as np, torch
from probebench.cache.store import FeatureStore
from probebench.data.base import ImageDataset, Sample
from probebench.tasks.contract import Context, RoleData
from probebench.tasks.probes.object import KnnProbe

n_train, n_test, width, shard = (int(a) for a in sys.argv[1:])
store = FeatureStore.open("big", "big", "0" * 64, {}, n_train + n_test, shard)
enc = {"num_prefix_tokens": 0, "num_blocks": 1}
store.set_meta(layers=[0], encoder=enc, token_arrays=[], token_strides={})
rng = np.random.default_rng(0)
centres = 3 * rng.standard_normal((10, width)).astype(np.float32)
for s in range(store.num_shards):
    rows = np.asarray(store.shard_rows(s))
    pooled = centres[rows % 10] + rng.standard_normal((len(rows), width), dtype=np.float32)
    store.write_shard(s, {"pooled.L0": pooled, "valid": np.ones(len(rows), bool)})
labels = np.arange(n_train + n_test) % 10


class Samples:  # a sample per row, made when read: a list of them would not fit the limit
    def __getitem__(self, i):
        return Sample(f"{i}.jpg", int(i % 10), "test")

    def __len__(self):
        return n_train + n_test


ds = ImageDataset("big", store.root, [str(c) for c in range(10)], Samples())
train, test = np.arange(n_train), np.arange(n_train, n_train + n_test)
ctx = Context(
    {"train": RoleData(ds, "train", store, train, labels[train]),
     "test": RoleData(ds, "test", store, test, labels[test])},
    [0], "pooled", KnnProbe().defaults(), 0, 0, torch.device("cpu"), store.manifest["encoder"],
)
size = sum(f.stat().st_size for f in store.root.glob("pooled.*"))
print(size, KnnProbe().evaluate(ctx).metrics["top1_k20"])
"""


def test_a_probe_over_features_larger_than_its_memory_completes(tmp_path):
    limit, width, shard = 1_000 * 2**20, 768, 8192
    n_train = 2_000 * 2**20 // (4 * width) // shard * shard  # 2 GB of training features, twice the limit
    group = _memory_cgroup(limit)
    if group is None:
        pytest.skip("no memory cgroup can be created here (needs root and cgroup v1 or v2)")

    def join_group():
        (group / "cgroup.procs").write_text(str(os.getpid()))

    try:
        args = (str(n_train), "256", str(width), str(shard))
        child = python(_KNN_UNDER_LIMIT, *args, preexec_fn=join_group)
    finally:
        group.rmdir()
    assert child.returncode == 0, child.stderr[-2000:]
    size, top1 = child.stdout.split()[-2:]
    assert int(size) > 2 * limit * 0.95 and float(top1) > 90, "10 well-separated clusters are found"
