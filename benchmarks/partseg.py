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

    python benchmarks/partseg.py [retrieval]
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

    from probebench.probes.retrieval import average_precisions

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="retrieval", choices=["retrieval"])
    ap.add_argument("--side", choices=["ours", "sklearn"], help=argparse.SUPPRESS)
    args = ap.parse_args()
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
