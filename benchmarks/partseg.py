"""Part-level probe costs, side by side in one run (issue 10).

retrieval: the all-pairs AP step of part retrieval on 10,000 synthetic crops (768-d features in 50 part
           classes, the size of a CUB keypoint database), with
             (a) probebench's chunked AP (`probes.retrieval.average_precisions`: queries in chunks of 64
                 against all crops, sorted once per chunk) and
             (b) the authors' loop, which a careful user would also write: one cosine-similarity row per
                 query and scikit-learn's `average_precision_score` on it,
           on the same features; time, the largest difference in per-query AP, and peak resident memory of
           (a) in its own subprocess. Target: peak memory under 1 GB. (b) runs on a 1,000-query sample and is
           scaled to 10,000 (its cost is linear in the number of queries), said as such in the output.

segmentation: the segmentation probe's training on cached tokens: 400 windows of ViT-B/16 size (14 x 14 patch
           tokens, 768 channels, float16) at 4 layers written as a real cache entry, 19 classes, 224 x 224
           labels, 200 iterations of batch 16, with
             (a) the tokens read from the memory-mapped cache, as the probe reads them, and
             (b) the same tokens loaded whole into memory first (what a user without a cache would do);
           each in its own subprocess: patch samples per second (windows x tokens per window trained on per
           second) and the peak of anonymous resident memory (heap: what the process holds besides the
           page cache) above its level before the step. Target: (a) peaks under a third of the features' size.

    python benchmarks/partseg.py [retrieval|segmentation]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

N, D, CLASSES, SAMPLE = 10_000, 768, 50, 1_000


def data():
    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, N)
    centres = rng.normal(size=(CLASSES, D)).astype(np.float32)
    x = centres[labels] * 0.5 + rng.normal(size=(N, D)).astype(np.float32)
    return x.astype(np.float32), labels


def ours() -> dict:
    import torch

    from probebench.learners.retrieval import average_precisions

    x, y = data()
    torch.set_num_threads(os.cpu_count() or 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    ap = average_precisions(x, y)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak, "before_mb": before, "ap": ap[:SAMPLE].tolist()}


def sklearn_loop() -> dict:
    import numpy as np
    from sklearn.metrics import average_precision_score

    x, y = data()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    t = time.perf_counter()
    ap = [average_precision_score(y == y[i], xn @ xn[i]) for i in range(SAMPLE)]
    return {"seconds": time.perf_counter() - t, "ap": ap}


# -- segmentation -------------------------------------------------------------------------------------------
WINDOWS, LAYERS, SIDE, DIM, SEG_CLASSES, ITERS, BATCH = 400, 4, 14, 768, 19, 200, 16


def _anon_kb() -> int:
    """Anonymous resident memory of this process (kB): the heap, not the file pages a memory map shares."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


class _Peak:
    """Samples `_anon_kb` every 5 ms on a thread; `.peak` is the largest value seen."""

    def __init__(self) -> None:
        import threading

        self.peak, self._stop = _anon_kb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _anon_kb())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _anon_kb())


def _seg_store(folder: str):
    """A real cache entry of synthetic ViT-B tokens (written once per folder), and its features' size."""
    import numpy as np

    from probebench.cache.store import FeatureStore
    from probebench.geometry import Geometry

    os.environ["PROBEBENCH_HOME"] = folder
    names = [f"patches.L{layer}" for layer in (3, 5, 7, 11)][:LAYERS]
    store = FeatureStore.open("bench", "windows", "0" * 64, {"bench": True}, WINDOWS, 100)
    if store.missing_shards():
        rng = np.random.default_rng(0)
        store.set_meta(token_arrays=names, token_strides={n: 16 for n in names}, layers=[3, 5, 7, 11])
        for shard in store.missing_shards():
            rows = store.shard_rows(shard)
            arrays = {n: rng.normal(size=(len(rows) * SIDE * SIDE, DIM)).astype(np.float16) for n in names}
            arrays["grids"] = np.full((len(rows), len(names), 2), SIDE, dtype=np.int64)
            geo = Geometry(224, 224, 224, 224, 0, 0, 224, 224, SIDE, SIDE, 16).to_row()
            arrays["geometry"] = np.repeat(geo[None], len(rows), 0)
            arrays["valid"] = np.ones(len(rows), dtype=bool)
            store.write_shard(shard, arrays)
    size = sum((store.root / f).stat().st_size for f in os.listdir(store.root) if f.startswith("patches."))
    return store, names, size


def seg_side(side: str, folder: str) -> dict:
    import numpy as np
    import torch

    from probebench.learners import seghead
    from probebench.tasks.contract import RoleData
    from probebench.tasks.probes.segmentation import read_windows

    torch.set_num_threads(os.cpu_count() or 1)
    store, names, size = _seg_store(folder)
    rows = np.arange(WINDOWS)
    label_mm, _ = seghead.label_store(
        WINDOWS,
        224,
        224,
        lambda i: np.random.default_rng(i).integers(0, SEG_CLASSES, (224, 224)),
        255,
        SEG_CLASSES,
    )
    base = _anon_kb()
    peak = _Peak()
    t = time.perf_counter()
    role = RoleData(dataset=None, split="train", store=store, rows=rows, labels=np.full(WINDOWS, -1))
    windows = read_windows(role, [3, 5, 7, 11][:LAYERS])
    if side == "loaded":  # every window's tokens in memory first, then the same training
        whole = windows.read(rows)
        windows.read = lambda pos: [g[pos] for g in whole]
    seghead.train_head(windows, label_mm, [DIM] * LAYERS, SEG_CLASSES, iterations=ITERS, batch_size=BATCH)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "peak_mb": (peak.stop() - base) / 1024, "features_mb": size / 2**20}


def segmentation() -> None:
    import tempfile

    import torch

    folder = tempfile.mkdtemp(prefix="probebench-bench-")
    out = {}
    for side in ("memmap", "loaded"):
        proc = subprocess.run(
            [sys.executable, __file__, "segmentation", "--side", side, "--folder", folder],
            capture_output=True,
            text=True,
            check=True,
        )
        out[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    size = out["memmap"]["features_mb"]
    samples = ITERS * BATCH * SIDE * SIDE
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(
        f"data: SYNTHETIC {WINDOWS} windows x {SIDE * SIDE} tokens x {DIM} ch x {LAYERS} layers, float16 "
        f"({size:.0f} MB of features); {SEG_CLASSES} classes, 224 x 224 labels"
    )
    print(f"training: {ITERS} iterations of batch {BATCH} = {samples:,} patch samples")
    for side, what in (("memmap", "(a) memory-mapped cache"), ("loaded", "(b) loaded whole      ")):
        r = out[side]
        print(
            f"  {what}  {r['seconds']:6.1f} s  {samples / r['seconds']:9,.0f} patch samples/s   "
            f"peak heap above start {r['peak_mb']:6.0f} MB ({r['peak_mb'] / size:.2f} of the features)"
        )
    print(
        f"peak of (a): {out['memmap']['peak_mb']:.0f} MB, {out['memmap']['peak_mb'] / size:.2f} of the "
        "features' size   (target < 0.33)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="retrieval", choices=["retrieval", "segmentation"])
    ap.add_argument("--side", choices=["ours", "sklearn", "memmap", "loaded"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.what == "segmentation":
        if args.side:
            print(json.dumps(seg_side(args.side, args.folder)))
        else:
            segmentation()
        return
    if args.side:
        print(json.dumps(ours() if args.side == "ours" else sklearn_loop()))
        return
    out = {}
    for side in ("ours", "sklearn"):
        proc = subprocess.run(
            [sys.executable, __file__, "retrieval", "--side", side],
            capture_output=True,
            text=True,
            check=True,
        )
        out[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    import numpy as np
    import torch

    a, b = out["ours"], out["sklearn"]
    diff = float(np.max(np.abs(np.array(a["ap"]) - np.array(b["ap"]))))
    scaled = b["seconds"] * N / SAMPLE
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"data: SYNTHETIC {N:,} crops x {D} dims, {CLASSES} part classes; each crop queries all {N:,}")
    print(
        f"  (a) probebench chunked AP     {a['seconds']:7.2f} s   peak RSS {a['peak_mb']:6.0f} MB "
        f"({a['before_mb']:.0f} MB before the step: Python, torch and the features)"
    )
    print(
        f"  (b) scikit-learn loop         {scaled:7.2f} s   "
        f"(measured {b['seconds']:.2f} s on {SAMPLE:,} queries, scaled by 10)"
    )
    print(
        f"speed-up (b)/(a): {scaled / a['seconds']:.1f}x; largest per-query AP difference on the "
        f"{SAMPLE:,} shared queries: {diff:.1e}"
    )
    print(f"peak RSS of (a): {a['peak_mb'] / 1024:.2f} GB   (target < 1 GB)")


if __name__ == "__main__":
    main()
