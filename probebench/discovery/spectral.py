"""The second generalised eigenvector of a TokenCut graph, (D - W) y = lambda D y, without a dense eigensolve.

TokenCut calls `scipy.linalg.eigh(D - W, D, subset_by_index=[1, 2])`: a dense generalised solve, O(N^3) for
N patches (0.4 images/s in FOUND's Table 4). The same vector comes from the normalised affinity
S = D^-1/2 W D^-1/2: y = D^-1/2 z where z is the eigenvector of S with the second-largest eigenvalue
(mu = 1 - lambda). S's top eigenvector is known in closed form, z0 = sqrt(d) / |sqrt(d)| with mu = 1
(W 1 = d), so it is deflated away and ARPACK's Lanczos iteration (`scipy.sparse.linalg.eigsh`, largest
algebraic) finds the next one with O(N^2) matrix-vector products. TokenCut's graph has every weight
positive (eps for non-edges), so it is connected and mu = 1 is simple. `benchmarks/discovery.py` checks the
partitions against the dense solve on grids of 14 x 14 to 60 x 60 patches and measures the speed-up.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

DEGENERATE = 1e-8  # relative gap below which the second and third eigenvalues count as equal
TOL = 1e-10  # Lanczos' relative accuracy: partitions equal the dense solve's on every benchmark graph


def second_eigenvector_dense(w: np.ndarray) -> np.ndarray:
    """TokenCut's own solve: the second-smallest generalised eigenvector of (D - W, D), (N,)."""
    d = np.diag(w.sum(axis=1))
    return scipy.linalg.eigh(d - w, d, subset_by_index=[1, 2])[1][:, 0]


def second_eigenvector(w: np.ndarray) -> np.ndarray:
    """The same eigenvector (up to sign and scale) by deflated Lanczos on the normalised affinity, (N,).

    w: (N, N) symmetric, positive weights. Falls back to the dense solve when Lanczos does not converge or the
    second and third eigenvalues are equal (a uniform image's graph), where the partition is the solver's
    choice and only the dense solve makes TokenCut's.
    """
    n = w.shape[0]
    if n < 4:
        return second_eigenvector_dense(w)
    d = w.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(d)
    s = w * inv_sqrt[:, None]
    s *= inv_sqrt[None, :]
    z0 = np.sqrt(d) / np.linalg.norm(np.sqrt(d))

    def deflated(v: np.ndarray) -> np.ndarray:  # S - 3 z0 z0^T: mu = 1 moves to -2, below all others
        v = v.ravel()
        return s @ v - 3.0 * z0 * (z0 @ v)

    op = LinearOperator((n, n), matvec=deflated, dtype=np.float64)
    v0 = np.cos(np.arange(n) + 1.0)  # fixed start vector: the same answer on every run
    try:
        vals, vecs = eigsh(op, k=2, which="LA", v0=v0, tol=TOL, maxiter=20 * n)
    except ArpackNoConvergence:
        return second_eigenvector_dense(w)
    # A repeated eigenvalue leaves the eigenvector (and the partition) arbitrary: ARPACK's restarts then draw
    # from a random state that persists across calls, so the dense solve decides, as in TokenCut.
    if vals[1] - vals[0] < DEGENERATE * max(1.0, abs(vals[1])):
        return second_eigenvector_dense(w)
    return vecs[:, 1] * inv_sqrt
