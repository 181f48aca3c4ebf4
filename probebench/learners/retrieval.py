"""Part retrieval metrics (Zhu et al. Table 3, left): every crop queries all crops by cosine similarity, and
each query's ranking is scored by average precision against "same part label".

AP is scikit-learn's `average_precision_score` (what the authors' code calls per query): the sum over distinct
score thresholds of (recall gain) x (precision at that threshold), so tied similarities count as one step.
The authors rank each query against all crops *including itself* (`include_self`, the default). Queries are
processed in chunks against the whole database, so 10k crops never need a 10k x 10k matrix in memory: the
peak is a few (chunk x N) blocks (64 queries at a time: about 5 MB per block for 10k crops; larger
chunks were no faster on 2 cores and raised the peak by several hundred MB).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from probebench.metrics.classification import CI_LEVEL, RESAMPLES


def average_precisions(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    *,
    include_self: bool = True,
    chunk: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Per-query AP (N,) in [0, 1] of cosine retrieval. features (N, D), labels (N,) part classes.

    A query whose label has no other member (and `include_self` False) has no positive: its AP is NaN.
    """
    x = F.normalize(torch.as_tensor(np.asarray(features), dtype=torch.float32, device=device), dim=1)
    y = torch.as_tensor(np.asarray(labels), device=device)
    n = len(x)
    out = torch.empty(n, dtype=torch.float64)
    ranks = torch.arange(1, n + 1, device=device, dtype=torch.float64)
    for lo in range(0, n, chunk):
        q = slice(lo, min(n, lo + chunk))
        sims = x[q] @ x.T  # (c, N)
        positive = y[q, None] == y[None, :]
        if not include_self:
            rows = torch.arange(q.stop - q.start, device=device)
            sims[rows, rows + lo] = -float("inf")  # ranked last, and not a positive
            positive[rows, rows + lo] = False
        s, order = sims.sort(dim=1, descending=True, stable=True)
        tp = positive.gather(1, order).to(torch.float64).cumsum(1)  # (c, N) true positives so far
        # A threshold step ends where the next similarity differs (the last position always ends one).
        end = torch.ones_like(s, dtype=torch.bool)
        end[:, :-1] = s[:, :-1] != s[:, 1:]
        if not include_self:
            end &= torch.isfinite(s)  # the query itself sits below every threshold
        tp_at_end = torch.where(end, tp, torch.zeros_like(tp))
        before = torch.cummax(tp_at_end, dim=1).values  # tp at the latest step end, per position
        previous = torch.cat([torch.zeros_like(before[:, :1]), before[:, :-1]], dim=1)
        gain = torch.where(end, tp - previous, torch.zeros_like(tp))  # new positives in this step
        total = tp[:, -1]
        ap = (gain * tp / ranks).sum(1) / total
        out[q] = torch.where(total > 0, ap, torch.full_like(ap, float("nan"))).cpu()
    return out.numpy()


def retrieval_metrics(
    ap: np.ndarray, labels: np.ndarray, *, seed: int = 0, resamples: int = RESAMPLES
) -> dict:
    """AP (mean over queries) and mAP (mean over part classes of their queries' mean AP), in %, each with a
    95 % percentile bootstrap interval over queries, and the per-class APs. ap (N,), labels (N,)."""
    keep = ~np.isnan(ap)
    ap, labels = np.asarray(ap)[keep], np.asarray(labels)[keep]
    classes, inverse = np.unique(labels, return_inverse=True)
    k = len(classes)

    def per_class(a: np.ndarray, inv: np.ndarray) -> float:
        sums = np.bincount(inv, weights=a, minlength=k)
        counts = np.bincount(inv, minlength=k)
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(np.nanmean(sums / counts))

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ap), size=(resamples, len(ap)))
    boot_ap = ap[idx].mean(1)
    boot_map = np.array([per_class(ap[i], inverse[i]) for i in idx])
    q = [(100 - CI_LEVEL) / 2, 100 - (100 - CI_LEVEL) / 2]
    class_ap = np.bincount(inverse, weights=ap, minlength=k) / np.bincount(inverse, minlength=k)
    return {
        "ap": float(ap.mean() * 100),
        "ap_ci95": [float(v) * 100 for v in np.percentile(boot_ap, q)],
        "map": float(class_ap.mean() * 100),
        "map_ci95": [float(v) * 100 for v in np.percentile(boot_map, q)],
        "per_class_ap": {str(c): float(v * 100) for c, v in zip(classes, class_ap, strict=True)},
        "n_queries": int(len(ap)),
        "n_without_positive": int((~keep).sum()),
    }
