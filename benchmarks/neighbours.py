"""Exact nearest-neighbour search for in-context dense retrieval, side by side with faiss in one run.

A synthetic memory of 1,000,000 x 768 L2-normalised float32 patches (written once as a .npy memory map) and
10,000 normalised queries; k = 30 by inner product (cosine), each side in its own subprocess:
  (a) probebench's `nearest_neighbours` reading the bank from its memory map, block by block;
  (b) faiss's exact `IndexFlatIP`, as a careful faiss user writes it: the bank added to the index (faiss keeps
      its own copy in memory), then one `search` of all queries.
Both run with the same threads. Reported: time, the peak of anonymous resident memory (sampled every 20 ms
from /proc: pages of the bank's memory map are file-backed and the page cache's, not the process's), and how
many neighbour lists are equal, the rest checked to differ only among similarities tied within 1e-5.
Targets (issue 25): (a) no slower than (b), (a)'s peak under 2 GB beyond the bank's memory map.

    python benchmarks/neighbours.py [--bank 1000000] [--queries 10000] [--dim 768]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

K = 30


def _anon_mb() -> float:
    """Anonymous resident memory of this process now, in MB (/proc/self/status RssAnon)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _measure(fn):
    """(result, seconds, peak anonymous MB) of fn(), sampling memory in a thread."""
    peak, done = [_anon_mb()], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _anon_mb())

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    done.set()
    watcher.join()
    return out, seconds, max(peak[0], _anon_mb())


def _side(which: str, folder: Path) -> None:
    """One side in this process: prints a json line, writes its neighbours beside the bank."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    bank = np.load(folder / "bank.npy", mmap_mode="r")
    queries = np.load(folder / "queries.npy")
    base = _anon_mb()
    if which == "probebench":
        from probebench.learners.neighbours import nearest_neighbours

        (sims, index), seconds, peak = _measure(lambda: nearest_neighbours(queries, bank, K))
        sims, index = sims.numpy(), index.numpy()
    else:
        import faiss

        faiss.omp_set_num_threads(os.cpu_count() or 1)

        def run():
            idx = faiss.IndexFlatIP(bank.shape[1])
            idx.add(np.ascontiguousarray(bank))
            return idx.search(queries, K)

        (sims, index), seconds, peak = _measure(run)
    np.save(folder / f"{which}_index.npy", index)
    np.save(folder / f"{which}_sims.npy", sims)
    print(json.dumps({"side": which, "seconds": seconds, "peak_mb": peak - base, "base_mb": base}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bank", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--side", choices=["probebench", "faiss"])
    ap.add_argument("--folder", type=Path)
    args = ap.parse_args()
    if args.side:
        _side(args.side, args.folder)
        return
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="pb-neighbours-") as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        bank = np.lib.format.open_memmap(folder / "bank.npy", "w+", np.float32, (args.bank, args.dim))
        for lo in range(0, args.bank, 100_000):
            block = rng.standard_normal((min(100_000, args.bank - lo), args.dim), dtype=np.float32)
            bank[lo : lo + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        bank.flush()
        del bank
        q = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
        np.save(folder / "queries.npy", q / np.linalg.norm(q, axis=1, keepdims=True))
        gb = args.bank * args.dim * 4 / 2**30
        print(
            f"bank {args.bank} x {args.dim} float32 ({gb:.2f} GB memory map), {args.queries} queries, k {K}"
        )
        results = {}
        for side in ("probebench", "faiss"):
            cmd = [sys.executable, __file__, "--side", side, "--folder", str(folder)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[side] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[side]
            print(f"  ({'a' if side == 'probebench' else 'b'}) {side:<10} {r['seconds']:8.1f} s   "
                  f"peak anonymous memory {r['peak_mb']:7.0f} MB above its start")  # fmt: skip
        ia, ib = (np.load(folder / f"{s}_index.npy") for s in ("probebench", "faiss"))
        sa, sb = (np.load(folder / f"{s}_sims.npy") for s in ("probebench", "faiss"))
        same = (ia == ib).all(1)
        # a differing list must differ only where similarities tie: the same similarity at every rank
        ties = bool((np.abs(sa - sb).max(1) <= 1e-5)[~same].all())
        gap = np.abs(sa - sb).max()
        print(f"neighbour lists equal: {same.mean() * 100:.2f} %; the others differ only among ties: {ties} "
              f"(largest similarity difference {gap:.2e})")  # fmt: skip
        ratio = results["faiss"]["seconds"] / results["probebench"]["seconds"]
        peak = results["probebench"]["peak_mb"]
        print(f"(b)/(a) time: {ratio:.2f}x (target >= 1.0); (a) peak {peak:.0f} MB (target < 2048)")


if __name__ == "__main__":
    main()
