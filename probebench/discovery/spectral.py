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

import functools

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from threadpoolctl import ThreadpoolController

DEGENERATE = 1e-8  # relative gap below which the second and third eigenvalues count as equal
FIRST_TOL = 1e-4  # one Lanczos pass (ncv = 20 products): residuals of 1e-7 to 1e-10 on the benchmark graphs
TOL = 1e-10  # the tight solve, used where the first pass cannot certify the partition


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def second_eigenvector_dense(w: np.ndarray) -> np.ndarray:
    """TokenCut's own solve: the second-smallest generalised eigenvector of (D - W, D), (N,)."""
    d = np.diag(w.sum(axis=1))
    return scipy.linalg.eigh(d - w, d, subset_by_index=[1, 2])[1][:, 0]


def second_eigenvector(w: np.ndarray) -> np.ndarray:
    """The same eigenvector (up to sign and scale) by deflated Lanczos on the normalised affinity, (N,).

    w: (N, N) symmetric, positive weights. A first, loose Lanczos pass is kept when its error bound proves
    TokenCut's partition and seed exact, else a tight pass is tried. The dense solve decides where neither
    can prove them (exact ties: patches with identical features sit exactly at the mean or share the
    largest |y|, and only the dense solve's rounding makes TokenCut's choice), where Lanczos does not
    converge, and where the second and third eigenvalues are equal (a uniform image's graph).
    """
    n = w.shape[0]
    if n < 4:
        return second_eigenvector_dense(w)
    d = w.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(d)
    z0 = np.sqrt(d) / np.linalg.norm(np.sqrt(d))

    # S v = D^-1/2 W D^-1/2 v, applied as two O(N) scalings around W's product: forming S itself would cost
    # as much as the whole Lanczos iteration on a 40 x 40 grid.
    def deflated(v: np.ndarray) -> np.ndarray:  # S - 3 z0 z0^T: mu = 1 moves to -2, below all others
        v = v.ravel()
        return inv_sqrt * (w @ (inv_sqrt * v)) - 3.0 * z0 * (z0 @ v)

    op = LinearOperator((n, n), matvec=deflated, dtype=np.float64)
    v0 = np.cos(np.arange(n) + 1.0)  # fixed start vector: the same answer on every run
    for tol in (FIRST_TOL, TOL):
        try:
            # One BLAS thread: each product is a memory-bound pass over W between ARPACK's steps, and a
            # second thread's wake-up cost more than it saved on every grid of the benchmark (2 cores).
            with _blas().limit(limits=1, user_api="blas"):
                vals, vecs = eigsh(op, k=2, which="LA", v0=v0, tol=tol, maxiter=20 * n)
        except ArpackNoConvergence:
            return second_eigenvector_dense(w)
        # A repeated eigenvalue leaves the eigenvector (and the partition) arbitrary: ARPACK's restarts then
        # draw from a random state that persists across calls, so the dense solve decides, as in TokenCut.
        if vals[1] - vals[0] < DEGENERATE * max(1.0, abs(vals[1])):
            return second_eigenvector_dense(w)
        y = vecs[:, 1] * inv_sqrt
        residuals = np.linalg.norm(
            inv_sqrt[:, None] * (w @ (inv_sqrt[:, None] * vecs))
            - 3.0 * np.outer(z0, z0 @ vecs)
            - vecs * vals,
            axis=0,
        )
        gap = vals[1] - vals[0] - residuals.sum()
        if gap > 0 and partition_is_certain(y, inv_sqrt, np.sqrt(2.0) * residuals[1] / gap):
            return y
    return second_eigenvector_dense(w)


def partition_is_certain(y: np.ndarray, scale: np.ndarray, error: float) -> bool:
    """Whether TokenCut's partition of y (split at the mean, flipped so that argmax |y| is in) is exact.

    y = scale * z with z a unit vector within `error` (2-norm) of the true eigenvector z* after sign alignment
    (Davis-Kahan: |z - z*| <= sqrt(2) |residual| / gap). Every y_i is then within scale_i * error of its true
    value and the mean within |scale|_2 * error / N, so an entry whose distance to the mean exceeds both is
    on its true side, and the seed (which picks the connected component) is certain if no other entry could
    overtake it.
    """
    bound = scale * error
    margin = np.abs(y - y.mean()) - bound - np.linalg.norm(scale) * error / len(y)
    if (margin <= 0).any():
        return False
    seed = int(np.argmax(np.abs(y)))
    rivals = np.abs(y) + bound >= np.abs(y[seed]) - bound[seed]
    return int(rivals.sum()) == 1
