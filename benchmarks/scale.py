"""Scale-out on one machine, each pair measured side by side in one run (issue 13).

  (1) extraction: EfficientNet-Lite0 (real weights) over the same 1,024 images (4 cache shards of 256) into
      an empty cache, once by one process with every core as torch threads (the fair peer: what
      `probebench extract` does alone) and once by `--nproc N` processes under torchrun, each with its
      share of the cores: images/s, the speed-up, and whether the two caches hold the same bytes.
  (2) the local launcher: the same four small jobs (kNN on 64 images at 32 px, four random tiny ViTs) run
      by one `probebench run` and by `probebench run --launcher local --jobs 1` (one job at a time, so
      nothing but the launcher differs): the extra seconds per job (a fresh interpreter, imports, submitit's
      pickles and polling).
  (3) the cache's disk cost: the bytes each array takes per 1,000 images, for one layer of ViT-S/16 and
      ViT-B/16 at 224 px (random init: the same shapes as trained weights), from the cache's manifest.
  (4) the loader's CPU cost, which bounds what a GPU can be fed: real JPEG photos (CCP, about 550 x 830;
      cub100, 227 x 227) decoded and framed as ViT-B/16's preprocessing does, images/s on one core.

  (5) local jobs on the default suite (what `make demo` does): EfficientNet-Lite0 and MobileNetV2 by one
      `probebench run` (two torch threads) and by `--launcher local --jobs 2` (two jobs, one thread each):
      wall seconds, the speed-up, and how many of the 20 records' primary numbers are equal.

(1) to (3) and (5) each run fresh subprocesses with an empty cache and results folder. Run on an idle machine:

    python benchmarks/scale.py [--nproc 2] [--only N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

TINY = "".join(
    f"tiny{i}:\n  family: control\n  method: random init\n  arch: ViT-Ti/16\n"
    f"  source: {{kind: random, arch: vit_tiny_patch16_224, seed: {i}, arch_kwargs: {{img_size: 32}}}}\n"
    "  preprocess: {input_size: 32}\n"
    for i in range(4)
)


def images(root: Path, n: int, size: int) -> Path:
    """root/{train,test}/<class>/<i>.png: `n` random RGB images of `size` px in two classes."""
    rng = np.random.default_rng(0)
    for i in range(n):
        split = "test" if i % 4 == 0 else "train"
        folder = root / split / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def timed(cmd: list[str], env: dict[str, str]) -> float:
    return timed_output(cmd, env)[0]


def timed_output(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def cache_digest(home: Path) -> str:
    """One sha256 over every shard file of every cache entry under `home` (names and bytes)."""
    h = hashlib.sha256()
    for path in sorted((home / "features").rglob("*.npy")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def extraction(tmp: Path, nproc: int) -> None:
    data = images(tmp / "imgs", 1024, 224)
    cores = len(os.sched_getaffinity(0))
    cmd = [sys.executable, "-m", "probebench", "extract", "-e", "efficientnet_lite0", "-d", str(data)]
    runs = {}
    for label, extra, threads in (("1 process", [], cores), ("N processes", ["--nproc", str(nproc)], None)):
        home = tmp / label.replace(" ", "-")
        env = {"PROBEBENCH_HOME": str(home)}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        seconds, out = timed_output(cmd + extra, env)
        loop = float(re.search(r"([0-9.]+) img/s", out).group(1))  # the forward loop of one process
        runs[label] = (seconds, loop, cache_digest(home))
    (one, loop1, d1), (many, loop_rank0, d2) = runs.values()
    per = max(1, cores // nproc)
    print(f"(1) extraction, EfficientNet-Lite0, 1,024 images at 224 px (4 shards), {cores} cores")
    print("  whole command (interpreters, rendezvous, model builds and data included):")
    print(f"    1 process, {cores} threads: {1024 / one:6.1f} img/s ({one:.1f} s)")
    print(f"    {nproc} processes, {per} thread(s) each: {1024 / many:6.1f} img/s ({many:.1f} s)")
    print(f"    speed-up {one / many:4.2f}x")
    print("  the extraction loop alone (each rank has an equal share of the shards):")
    total = nproc * loop_rank0
    print(f"    1 process {loop1:6.1f} img/s   {nproc} processes {total:6.1f} img/s (rank 0 x {nproc})")
    print(f"    speed-up {nproc * loop_rank0 / loop1:4.2f}x")
    print(f"  same cache bytes: {d1 == d2}")


def launcher(tmp: Path) -> None:
    data = images(tmp / "small", 64, 32)
    registry = tmp / "encoders.yaml"
    registry.write_text(TINY)
    base = [sys.executable, "-m", "probebench", "run", "-d", str(data), "-t", "knn", "--workers", "0"]
    base += [x for i in range(4) for x in ("-e", f"tiny{i}")]
    times = {}
    for label, extra in (("one process", []), ("local launcher", ["--launcher", "local", "--jobs", "1"])):
        folder = tmp / ("launcher-" + label.replace(" ", "-"))
        env = {
            "PROBEBENCH_HOME": str(folder / "home"),
            "PROBEBENCH_RESULTS": str(folder / "results"),
            "PROBEBENCH_REGISTRY": str(registry),
            "OMP_NUM_THREADS": "1",
        }
        times[label] = timed(base + extra, env)
        records = sorted((folder / "results" / "runs").glob("*.json"))
        assert len(records) == 4, records
        times[label + " top1"] = [json.loads(r.read_text())["metrics"]["top1_k20"] for r in records]
    one, local = times["one process"], times["local launcher"]
    print("(2) local launcher, 4 jobs of kNN on 64 images (random tiny ViTs), one job at a time")
    extra = (local - one) / 4
    print(f"  one process {one:5.1f} s   --launcher local {local:5.1f} s   overhead {extra:4.1f} s/job")
    print(f"  same numbers: {times['one process top1'] == times['local launcher top1']}")


def disk_cost(tmp: Path) -> None:
    data = images(tmp / "disk", 64, 224)
    print("(3) cache on disk per 1,000 images, one layer, 224 px (float16 tokens; MB = 10^6 bytes)")
    for name in ("random_vits16", "random_vitb"):
        home = tmp / f"disk-{name}"
        cmd = [sys.executable, "-m", "probebench", "extract", "-e", name, "-d", str(data)]
        cmd += [x for t in ("cls", "pooled", "patches", "keys", "attention") for x in ("--tokens", t)]
        timed(cmd, {"PROBEBENCH_HOME": str(home)})
        (manifest,) = (home / "features").rglob("manifest.json")
        info = json.loads(manifest.read_text())
        sizes: dict[str, int] = {}
        for shard in info["shards"].values():
            for fname, meta in shard["files"].items():
                array = fname.rsplit(".", 2)[0]
                sizes[array] = sizes.get(array, 0) + meta["bytes"]
        per_k = {a: b / info["n"] * 1000 / 1e6 for a, b in sorted(sizes.items())}
        shown = ", ".join(f"{a} {mb:.2f}" for a, mb in per_k.items())
        print(f"  {name:14s} total {sum(per_k.values()):7.1f} MB: {shown}")


def loader_rate() -> None:
    from probebench.data.loader import ImageRows
    from probebench.data.lookup import get_dataset
    from probebench.encoders.load import resolve_encoder
    from probebench.encoders.registry import get_entry, load_registry

    root = Path(__file__).resolve().parents[2] / "shared" / "data"
    examples = Path(__file__).resolve().parents[1] / "examples" / "datasets.yaml"
    framing = resolve_encoder(get_entry(load_registry(), "random_vitb")).preprocess.framing("resize")
    print("(4) loader on one core: decode + ViT-B/16 framing (resize, centre crop 224, normalise)")
    if not root.is_dir():
        print(f"  skipped: {root} (the real photos) is absent")
        return
    for name in ("ccp", "cub100"):
        ds = get_dataset(name, examples, root)
        rows = ImageRows(ds, range(min(300, len(ds))), framing)
        rows[0]  # warm-up: imports and the first file
        t0 = time.perf_counter()
        for i in range(len(rows)):
            rows[i]
        rate = len(rows) / (time.perf_counter() - t0)
        print(f"  {name:7s} {rate:6.1f} img/s per core ({len(rows)} photos)")


def default_suite_jobs(tmp: Path) -> None:
    base = [sys.executable, "-m", "probebench", "run", "-e", "efficientnet_lite0", "-e", "mobilenetv2"]
    times, numbers = {}, {}
    for label, extra in (("one process", []), ("two local jobs", ["--launcher", "local", "--jobs", "2"])):
        folder = tmp / ("suite-" + label.replace(" ", "-"))
        env = {"PROBEBENCH_HOME": str(folder / "home"), "PROBEBENCH_RESULTS": str(folder / "results")}
        times[label] = timed(base + extra, env)
        numbers[label] = {}
        for path in sorted((folder / "results" / "runs").glob("*.json")):
            rec = json.loads(path.read_text())
            numbers[label][path.name] = rec["metrics"][rec["primary"]["name"]]
    one, two = times.values()
    a, b = numbers.values()
    same = sum(a[k] == b.get(k) for k in a)
    print("(5) the default suite, EfficientNet-Lite0 + MobileNetV2, empty cache")
    print(f"  one process, 2 threads {one:6.1f} s   2 local jobs, 1 thread each {two:6.1f} s")
    print(f"  speed-up {one / two:4.2f}x   primary numbers equal: {same} of {len(a)}")
    print("  differ: " + (", ".join(k for k in a if a[k] != b.get(k)) or "none"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--only", type=int, default=None, help="run one measurement, by its number")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, {platform.platform()}")
    steps = {
        1: lambda tmp: extraction(tmp, args.nproc),
        2: launcher,
        3: disk_cost,
        4: lambda tmp: loader_rate(),
        5: default_suite_jobs,
    }
    with tempfile.TemporaryDirectory(prefix="probebench-scale-") as tmp:
        for number, step in steps.items():
            if args.only in (None, number):
                step(Path(tmp))


if __name__ == "__main__":
    main()
