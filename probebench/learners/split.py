"""The validation split that probes tune on, carved from the training split with a fixed seed.

Hyper-parameters (the regularisation C, the attentive probe's epoch) are chosen here, never on the test split.
"""

from __future__ import annotations

import numpy as np

from probebench.learners import defaults


def carve_val(
    labels: np.ndarray, fraction: float = defaults.VAL_FRACTION, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of row positions into (fit, val). labels (N,) -> two sorted index arrays.

    Each class gives round(fraction * n) of its n rows to validation, but always keeps at least one row for
    fitting; a class with a single row stays entirely in the fitting part.
    """
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        take = min(int(round(fraction * len(rows))), len(rows) - 1)
        val.extend(rng.permutation(rows)[:take])
    val = np.sort(np.array(val, dtype=np.int64))
    fit = np.setdiff1d(np.arange(len(labels)), val)
    return fit, val
