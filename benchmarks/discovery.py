"""Object discovery costs, side by side in one run (issue 11).

Features are real: EfficientNet-Lite0 (the ImageNet weights that install here) on car photos from
../shared/data/carparts, each resized so that its final map is a g x g grid (32 g px), its patch features
standing in for keys as the discovery task does for CNNs. No ViT weights can be had here, so ViT keys are not
measured; the graphs' sizes are the point.

eigen:     TokenCut's graph (cos > 0.2, else 1e-5) on grids of 14 x 14 to 60 x 60 patches, 3 images each,
           solved
           (a) by probebench (`discovery.spectral.second_eigenvector`: deflated Lanczos on the normalised
               affinity), (b) as TokenCut does, `scipy.linalg.eigh(D - W, D, subset_by_index=[1, 2])`, and
           (c) the dense symmetric solve a careful user would try first, `eigh(S, subset_by_index=[N-2, N-2])`
               on S = D^-1/2 W D^-1/2;
           whether (a)'s partitions (split at the mean, flipped by the seed) equal (b)'s on every graph, and
           the speed-ups. Target: (a) at least 10x faster than (b) at 40 x 40 and above, identical partitions.
methods:   images per second of LOST, TokenCut (with (a)) and HEAP inference on the cached grids at 32 x 32,
           and HEAP's training throughput (images per second through forward and backward, default head).

    python benchmarks/discovery.py [eigen|methods]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "carparts" / "test" / "JPEGImages"
GRIDS = (14, 20, 30, 40, 50, 60)


def grids(side: int, count: int) -> list[np.ndarray]:
    """(side, side, C) Lite0 feature maps of the first `count` car photos resized to 32 * side px."""
    import torch
    from PIL import Image

    from probebench.api import load_encoder

    enc = load_encoder("efficientnet_lite0")
    pre = enc.preprocess
    out = []
    for path in sorted(DATA.glob("*.jpg"))[:count]:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((32 * side, 32 * side), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        x = (x - torch.tensor(pre.mean)[:, None, None]) / torch.tensor(pre.std)[:, None, None]
        out.append(enc(x[None], [-1]).patches[enc.num_blocks - 1][0].numpy())
    return out


def graph(keys: np.ndarray) -> np.ndarray:
    f = keys.reshape(-1, keys.shape[-1]).astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True) + 1e-12  # as F.normalize: an all-zero feature stays zero
    return np.where(f @ f.T > 0.2, 1.0, 1e-5)


def partition(y: np.ndarray) -> np.ndarray:
    part = y > y.mean()
    return part if part[np.argmax(np.abs(y))] else ~part


REPEATS = 5  # each solve is timed this many times per graph and the median kept: single runs vary 3x here


def timed(solve, w: np.ndarray) -> tuple[np.ndarray, float]:
    """(solve(w), the median of REPEATS wall times in seconds)."""
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        y = solve(w)
        times.append(time.perf_counter() - t)
    return y, float(np.median(times))


def dense_normalised(w: np.ndarray) -> np.ndarray:
    """(c): the top-but-one eigenvector of S = D^-1/2 W D^-1/2 by a dense symmetric solve, mapped back."""
    import scipy.linalg

    d = w.sum(1)
    s = w / np.sqrt(d)[:, None] / np.sqrt(d)[None]
    n = len(d)
    return scipy.linalg.eigh(s, subset_by_index=[n - 2, n - 2])[1][:, 0] / np.sqrt(d)


def eigen() -> None:
    from probebench.discovery.spectral import second_eigenvector, second_eigenvector_dense

    print(f"median of {REPEATS} runs per graph, mean over 3 graphs per grid")
    print(
        f"{'grid':>7} {'N':>5}  {'(a) ours':>10} {'(b) eigh(D-W,D)':>16} {'(c) eigh(S)':>12}  "
        f"{'b/a':>6} {'c/a':>6}  same"
    )
    all_same = True
    for side in GRIDS:
        ta = tb = tc = 0.0
        same = True
        for keys in grids(side, 3):
            w = graph(keys)
            ya, t = timed(second_eigenvector, w)
            ta += t
            yb, t = timed(second_eigenvector_dense, w)
            tb += t
            yc, t = timed(dense_normalised, w)
            tc += t
            same &= bool((partition(ya) == partition(yb)).all() and (partition(yc) == partition(yb)).all())
        all_same &= same
        print(
            f"{side:>3}x{side:<3} {side * side:>5}  {ta / 3:>9.3f}s {tb / 3:>15.3f}s {tc / 3:>11.3f}s  "
            f"{tb / ta:>5.1f}x {tc / ta:>5.1f}x  {'yes' if same else 'NO'}"
        )
    print(f"identical partitions on every graph: {'yes' if all_same else 'NO'}")


def methods() -> None:
    import torch

    from probebench.discovery import baselines, configs, heap
    from probebench.discovery.base import ImageFeatures
    from probebench.geometry import Geometry

    side = 32
    feats = [
        ImageFeatures(
            k,
            None,
            k,
            Geometry(*(32 * side,) * 2, *(32 * side,) * 2, 0, 0, *(32 * side,) * 2, side, side, 32),
            True,
        )
        for k in grids(side, 24)
    ]
    print(
        f"{len(feats)} images, grid {side}x{side}, {feats[0].keys.shape[-1]} channels (Lite0 patch features)"
    )
    for name, fn in (("LOST", baselines.lost), ("TokenCut", baselines.tokencut)):
        t = time.perf_counter()
        for f in feats:
            fn(f)
        print(f"  {name:<22} {len(feats) / (time.perf_counter() - t):8.1f} images/s")
    cfg = configs.HeapConfig(iterations=10, batch=16)
    t = time.perf_counter()
    head, _ = heap.train_heap(lambda pos: [feats[int(p)] for p in pos], len(feats), cfg, seed=0)
    train_s = time.perf_counter() - t
    head.eval()
    t = time.perf_counter()
    for f in feats:
        heap.predict_heap(head, f)
    print(f"  {'HEAP inference':<22} {len(feats) / (time.perf_counter() - t):8.1f} images/s")
    print(
        f"  {'HEAP training':<22} {cfg.iterations * cfg.batch / train_s:8.1f} images/s "
        f"({cfg.iterations} steps of {cfg.batch}, K={cfg.groups}, L={cfg.layers}, d={cfg.dim})"
    )
    print(f"  threads: {torch.get_num_threads()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="?", choices=("eigen", "methods"), default=None)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"benchmarks/discovery.py needs ../shared/data/carparts (not found at {DATA})")
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    for what in [args.what] if args.what else ["eigen", "methods"]:
        print(f"\n== {what} ==")
        {"eigen": eigen, "methods": methods}[what]()


if __name__ == "__main__":
    main()
