"""Exact k-nearest-neighbour search by inner product, chunked so that memory stays bounded.

The bank may be far larger than memory (in-context retrieval's memory of 10^7 patches is 30 GB in float32):
it is read once per block of queries, `bank_chunk` rows at a time (from a memory map, float16 or float32,
copied into one reused float32 buffer), and each block of queries (as many as fit `block_bytes` of scores,
all 10,000 of a benchmark at once) is scored against it into one reused (queries x bank_chunk) matrix. A
running top-k per query is merged block by block. Once the top-k has settled, few scores of a block beat a
query's current k-th: the block is cut into 128-column slices, and only the slices whose maximum beats it are
partially sorted (a faiss heap does the same work one score at a time). Nothing of size (queries x bank) or
(bank x anything) is ever made.

Among the neighbours returned, equal similarities are listed by bank index, and a later bank row never
displaces an equal earlier one; which of several rows tied inside one block at the k-th place is kept is not
defined (as in faiss). This is what faiss's `IndexFlatIP` computes (`benchmarks/neighbours.py` compares the
two, time and memory).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

BANK_CHUNK = 4096
BLOCK_BYTES = 256 * 2**20  # the (queries x bank_chunk) float32 scores of one block
SUB = 128  # columns of a slice whose maximum decides whether it holds a candidate
SPARSE = 2  # slices per query above which a block's rows are sorted whole
NOT_FINITE = "a query or a bank row holds a value that is not finite"


def nearest_neighbours(
    queries: np.ndarray | torch.Tensor,
    bank: np.ndarray | torch.Tensor,
    k: int,
    *,
    bank_chunk: int = BANK_CHUNK,
    block_bytes: int = BLOCK_BYTES,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k inner products of each query (Q, D) against the bank (M, D): similarities (Q, k) float32 in
    decreasing order and bank indices (Q, k) int64. k larger than the bank is an error (a neighbour would be
    made up)."""
    m = len(bank)
    if k > m:
        raise ValueError(f"{k} neighbours asked of a bank of {m}")
    device = torch.device(device)
    q_all = queries if torch.is_tensor(queries) else torch.from_numpy(np.asarray(queries))
    per_block = max(1, block_bytes // (4 * bank_chunk))
    sims_out = torch.empty((len(q_all), k), dtype=torch.float32)
    index_out = torch.empty((len(q_all), k), dtype=torch.int64)
    buffer = torch.empty((min(bank_chunk, m), bank.shape[1]), dtype=torch.float32, device=device)
    for q0 in range(0, len(q_all), per_block):
        q = q_all[q0 : q0 + per_block].to(device, torch.float32).contiguous()
        scores = torch.empty((len(q), min(bank_chunk, m)), dtype=torch.float32, device=device)
        best_s = torch.full((len(q), k), -float("inf"), device=device)
        best_i = torch.full((len(q), k), -1, dtype=torch.int64, device=device)
        for b0 in range(0, m, bank_chunk):
            block = _read(bank, b0, bank_chunk, buffer)
            found = _candidates(_scores(q, block, scores), best_s[:, -1], k)
            if found is None:
                continue
            rows, cand_s, cand_i = found
            # the current top-k first: a stable sort keeps it ahead of this block's equal scores, so a later
            # bank row never displaces an equal earlier one
            cand_s = torch.cat([best_s[rows], cand_s], dim=1)
            cand_i = torch.cat([best_i[rows], cand_i + b0], dim=1)
            order = cand_s.argsort(dim=1, descending=True, stable=True)[:, :k]
            best_s[rows], best_i[rows] = cand_s.gather(1, order), cand_i.gather(1, order)
        # equal similarities listed by bank index: sort by index, then stably by similarity
        by_index = best_i.argsort(dim=1, stable=True)
        best_s, best_i = best_s.gather(1, by_index), best_i.gather(1, by_index)
        order = best_s.argsort(dim=1, descending=True, stable=True)
        sims_out[q0 : q0 + len(q)] = best_s.gather(1, order).cpu()
        index_out[q0 : q0 + len(q)] = best_i.gather(1, order).cpu()
    return sims_out, index_out


def _candidates(
    s: torch.Tensor, kth: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The rows (R,) of a block's scores s (c, b) that may improve their top-k (a score above their current
    k-th, `kth` (c,)), and for each up to k candidates per `SUB`-column slice holding such a score: scores
    (R, w) and columns (R, w), padded with -inf and -1. While few slices qualify (the top-k has settled),
    only those are partially sorted; early on, every row's whole block is."""
    c, b = s.shape
    subs = -(-b // SUB)
    if b % SUB:  # the last, shorter block: pad to whole slices
        s = torch.nn.functional.pad(s, (0, subs * SUB - b), value=-float("inf"))
    sliced = s.view(c, subs, SUB)
    peaks = sliced.amax(dim=2)  # (c, subs); NaN propagates, so one check covers every score
    if not torch.isfinite(peaks).all():
        raise ValueError(NOT_FINITE)
    hit = peaks > kth[:, None]
    r, j = hit.nonzero(as_tuple=True)  # row-major: grouped by row
    if len(r) == 0:
        return None
    if len(r) > SPARSE * c:  # most rows qualify: one partial sort of whole rows
        top_s, top_i = s[:, :b].topk(min(k, b), dim=1, sorted=False)
        return torch.arange(c, device=s.device), top_s, top_i
    kk = min(k, SUB)
    top_s, top_i = sliced[r, j].topk(kk, dim=1, sorted=False)  # (P, kk)
    rows, counts = torch.unique_consecutive(r, return_counts=True)
    group = torch.repeat_interleave(torch.arange(len(rows), device=s.device), counts)
    first = torch.cumsum(counts, 0) - counts
    slot = (torch.arange(len(r), device=s.device) - first[group])[:, None] * kk + torch.arange(
        kk, device=s.device
    )
    width = int(counts.max()) * kk
    cand_s = torch.full((len(rows), width), -float("inf"), device=s.device)
    cand_i = torch.full((len(rows), width), -1, dtype=torch.int64, device=s.device)
    cand_s[group[:, None], slot] = top_s
    cand_i[group[:, None], slot] = top_i + j[:, None] * SUB
    return rows, cand_s, cand_i


def _scores(q: torch.Tensor, block: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """q (c, D) @ block (b, D).T into `scores` (c, >= b). On the CPU through numpy's BLAS (OpenBLAS): on the
    project's 2-core machine its sgemm ran these shapes 20-25 % faster than torch's, the gap that decides the
    race with faiss; both compute the same float32 products."""
    out = scores[:, : len(block)]
    if q.device.type != "cpu":
        return torch.mm(q, block.T, out=out)
    if len(block) == scores.shape[1]:
        np.matmul(q.numpy(), block.numpy().T, out=scores.numpy())
        return scores
    out = torch.from_numpy(q.numpy() @ block.numpy().T)  # the last, shorter block
    return out


def _read(bank: np.ndarray | torch.Tensor, start: int, count: int, buffer: torch.Tensor) -> torch.Tensor:
    """Bank rows [start, start + count) as float32 in `buffer` (one sequential read of a memory map)."""
    part = bank[start : start + count]
    out = buffer[: len(part)]
    if not torch.is_tensor(part):
        with warnings.catch_warnings():  # a read-only memory map: the tensor is only read, into `out`
            warnings.simplefilter("ignore", UserWarning)
            part = torch.from_numpy(np.ascontiguousarray(part))
    out.copy_(part)
    return out
