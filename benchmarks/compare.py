"""Paired comparisons at study scale, side by side in one run (issue 24).

The work: 50 encoders x 20 tasks, each task 5,000 test items (a top-1 hit per item, synthetic, each encoder
its own accuracy), 10,000 bootstrap resamples shared by every encoder of a task (paired), then for every pair
of encoders (1,225 a task) the difference's 95 % percentile interval and p-value.

  (a) probebench: `bootstrap_entrants` (a multiplicity matrix per chunk of resamples, times the (items x
      encoders) outcomes) and `pairwise_differences`;
  (b) scipy.stats.bootstrap used as fairly as it can be: one call per task on the (encoders x items) array
      with `axis=-1`, `vectorized=True` and `method="percentile"`, whose resample indices are shared by the
      leading axis (so it is paired), `batch` chosen to keep memory near (a)'s, its `bootstrap_distribution`
      then put through the same pairwise step as (a);
  (c) a plain Python loop over resamples, only as a correctness reference, timed on a small run and
      extrapolated.

Timed with time.perf_counter, peak memory by tracemalloc (numpy reports its buffers to it). (a) and (b) draw
the same resample indices from the same seed, so their intervals must agree to rounding; (a) must equal (c)
exactly on the draws they share.
Targets: (a) at least as fast as (b), under 1 GB.

    python benchmarks/compare.py [--tasks 20] [--encoders 50] [--items 5000] [--resamples 10000]
"""

from __future__ import annotations

import argparse
import platform
import time
import tracemalloc

import numpy as np
from scipy import stats as sps

from probebench.stats.bootstrap import Distribution, bootstrap_entrants, pairwise_differences
from probebench.stats.items import ItemMetric

MEAN = ItemMetric(kind="mean", group="items", array="hits")


def task_outcomes(task: int, encoders: int, items: int) -> np.ndarray:
    """(encoders, items) hits: encoder e's accuracy near 0.6 + 0.2 e / encoders; items share a difficulty."""
    rng = np.random.default_rng(task)
    difficulty = rng.random(items)
    skill = 0.6 + 0.2 * np.arange(encoders) / encoders
    return (difficulty[None, :] < skill[:, None]) ^ (rng.random((encoders, items)) < 0.1)


def ours(hits: np.ndarray, resamples: int, seed: int):
    dist = bootstrap_entrants(MEAN, [[h] for h in hits], resamples=resamples, seed=seed)
    return dist, pairwise_differences(dist)


def scipy_way(hits: np.ndarray, resamples: int, seed: int, batch: int):
    res = sps.bootstrap(
        (hits.astype(np.float64),),
        lambda x, axis: 100.0 * x.mean(axis=axis),
        axis=-1,
        vectorized=True,
        n_resamples=resamples,
        batch=batch,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    dist = Distribution(100.0 * hits.mean(1), res.bootstrap_distribution.T)
    return dist, pairwise_differences(dist)


def loop_way(hits: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """One resample at a time, one encoder at a time: the obvious code."""
    rng = np.random.default_rng(seed)
    n = hits.shape[1]
    out = np.empty((resamples, len(hits)))
    for b in range(resamples):
        idx = rng.integers(0, n, size=n)
        for e in range(len(hits)):
            out[b, e] = 100.0 * hits[e, idx].mean()
    return out


def measure(fn, *args):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--encoders", type=int, default=50)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--resamples", type=int, default=10_000)
    args = ap.parse_args()
    n_pairs = args.encoders * (args.encoders - 1) // 2
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, numpy {np.__version__}")
    print(
        f"work: {args.encoders} encoders x {args.tasks} tasks x {args.resamples} resamples x {args.items} "
        f"items; {n_pairs} pairs a task"
    )
    # scipy's batch: as many resamples as keep its (encoders, batch, items) float64 gather near 256 MB
    batch = max(1, 256 * 2**20 // (8 * args.encoders * args.items))
    totals = {"a": [0.0, 0], "b": [0.0, 0]}
    worst = 0.0
    for task in range(args.tasks):
        hits = task_outcomes(task, args.encoders, args.items)
        (da, pa), ta, ma = measure(ours, hits, args.resamples, task)
        (db, pb), tb, mb = measure(scipy_way, hits, args.resamples, task, batch)
        totals["a"][0] += ta
        totals["b"][0] += tb
        totals["a"][1] = max(totals["a"][1], ma)
        totals["b"][1] = max(totals["b"][1], mb)
        worst = max(worst, float(np.max(np.abs(pa.lo - pb.lo))), float(np.max(np.abs(pa.hi - pb.hi))))
        if task == 0:
            print(f"task 0: (a) {ta:.2f} s, (b) {tb:.2f} s (scipy batch {batch})")
    ta, ma = totals["a"]
    tb, mb = totals["b"]
    print(f"(a) probebench:       {ta:8.1f} s   peak {ma / 2**20:7.0f} MB")
    print(f"(b) scipy.bootstrap:  {tb:8.1f} s   peak {mb / 2**20:7.0f} MB   b/a {tb / ta:.2f}x (target >= 1)")
    print(f"largest gap between (a)'s and (b)'s interval ends: {worst:.3g} points")
    print("  (both draw rng.integers(0, items, (resamples, items)) from the same seed: the same resamples)")
    # (c): the plain loop on a small run, the same draws as (a)
    small = task_outcomes(0, 4, 500)
    reference, tc, _ = measure(loop_way, small, 200, 7)
    check = bootstrap_entrants(MEAN, [[h] for h in small], resamples=200, seed=7)
    same = np.allclose(check.draws, reference, atol=1e-9)
    per_cell = tc / (200 * 4 * 500)
    full = per_cell * args.resamples * args.encoders * args.items * args.tasks
    print(f"(c) plain loop: {tc:.2f} s for 4 encoders x 200 resamples x 500 items; extrapolated to the")
    print(f"    work: {full / 3600:.1f} h ({full / ta:.0f}x (a)); (a) equals it on the same draws: {same}")
    print(f"(a) under 1 GB: {ma < 2**30}")


if __name__ == "__main__":
    main()
