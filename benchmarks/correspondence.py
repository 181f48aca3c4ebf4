"""Keypoint correspondence from the cache: pairs per second, and peak memory against the number of pairs.

A real cache entry of synthetic ViT-B/16 grids (1,000 images of 14 x 14 x 768 float16 patch tokens at 224
px, 18 categories, 12 keypoints per image, one box each; written once), read by the probe's own evaluation
with 1,000, 4,000, 12,000 and 36,000 sampled same-category pairs (SPair-71k's test split has 12,234), each
count in its own subprocess. Reported per count: seconds, pairs per second, cache reads (each image's grid
should be read about once, not once per pair) and the peak of anonymous resident memory above the process's
start (sampled every 20 ms; the cache's memory-mapped shards are file-backed, not counted). It includes the
record's bootstrap intervals (a fixed ~270 MB of resample chunks) and the per-pair outputs themselves (items,
pairs.csv), which grow with the pairs by nature. Target (issue 25): the matching's memory flat in the pairs.

    python benchmarks/correspondence.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

IMAGES, CATEGORIES, SIDE, DIM, KEYPOINTS = 1000, 18, 14, 768, 12
COUNTS = (1000, 4000, 12000, 36000)


def _store(folder: str):
    import numpy as np

    from probebench.cache.store import FeatureStore
    from probebench.geometry import Geometry

    os.environ["PROBEBENCH_HOME"] = folder
    store = FeatureStore.open("bench", "pairs", "0" * 64, {"bench": True}, IMAGES, 256)
    if store.missing_shards():
        rng = np.random.default_rng(0)
        store.set_meta(token_arrays=["patches.L11"], token_strides={"patches.L11": 16}, layers=[11])
        for shard in store.missing_shards():
            rows = store.shard_rows(shard)
            arrays = {"patches.L11": rng.normal(size=(len(rows) * SIDE * SIDE, DIM)).astype(np.float16)}
            arrays["grids"] = np.full((len(rows), 1, 2), SIDE, dtype=np.int64)
            geo = Geometry(500, 375, 224, 224, 0, 0, 224, 224, SIDE, SIDE, 16).to_row()
            arrays["geometry"] = np.repeat(geo[None], len(rows), 0)
            arrays["valid"] = np.ones(len(rows), dtype=bool)
            store.write_shard(shard, arrays)
    return store


def _dataset():
    import numpy as np

    from probebench.data.base import ImageDataset, Sample

    rng = np.random.default_rng(1)
    samples = []
    for i in range(IMAGES):
        kps = [[float(rng.uniform(0, 500)), float(rng.uniform(0, 375)), 1, k] for k in range(KEYPOINTS)]
        ann = {"keypoints": kps, "boxes": [[50, 40, 450, 330, 0]]}
        samples.append(Sample(f"{i}.jpg", i % CATEGORIES, "test", ann))
    return ImageDataset("pairs", Path("."), [f"c{c}" for c in range(CATEGORIES)], samples)


def side(count: int, folder: str) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from neighbours import _anon_mb, _measure

    from probebench.tasks.contract import Context, RoleData
    from probebench.tasks.probes import get_probe

    torch.set_num_threads(os.cpu_count() or 1)
    store, ds = _store(folder), _dataset()
    probe = get_probe("keypoint_correspondence")
    per = -(-count // CATEGORIES)
    knobs = probe.defaults() | {"pairs_per_category": per}
    role = RoleData(ds, "test", store, np.arange(IMAGES), np.array([s.label for s in ds.samples]))
    ctx = Context({"test": role}, [11], "pooled", knobs, 0, 0, torch.device("cpu"), None)  # type: ignore[arg-type]
    start = _anon_mb()
    ev, seconds, peak = _measure(lambda: probe.evaluate(ctx))
    n = ev.metrics["n_pairs"]
    return {"pairs": n, "seconds": seconds, "peak_mb": peak - start, "reads": ev.details["image_reads"]}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--side":
        print(json.dumps(side(int(sys.argv[2]), sys.argv[3])))
        return
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"cache: {IMAGES} images of {SIDE} x {SIDE} x {DIM} float16 tokens, {CATEGORIES} categories")
    with tempfile.TemporaryDirectory(prefix="pb-pairs-") as folder:
        _store(folder)
        base = None
        for count in COUNTS:
            cmd = [sys.executable, __file__, "--side", str(count), folder]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            base = base or r["peak_mb"]
            rate, ratio = r["pairs"] / r["seconds"], r["peak_mb"] / base
            print(
                f"  {r['pairs']:6d} pairs  {r['seconds']:7.1f} s  {rate:7.0f} pairs/s  "
                f"{r['reads']:5d} grid reads  peak {r['peak_mb']:6.0f} MB ({ratio:.2f}x the first)"
            )


if __name__ == "__main__":
    main()
