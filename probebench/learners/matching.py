"""Dense matching of keypoints between two images' feature grids: no training.

Points are continuous grid coordinates (u, v) in cells, cell (row i, col j) covering [j, j + 1) x [i, i + 1)
with its centre at (j + 0.5, i + 0.5) (`probebench.geometry`). A source keypoint's feature is the patch it
falls in (`patch`) or the bilinear blend of the four nearest patch centres (`bilinear`, clamped at the
border). Its match is the target patch of highest cosine similarity (ties: the lowest patch index, row-major)
and the prediction is that patch's centre, or with `soft_radius` the softmax(similarity / temperature)
-weighted mean of the patch centres in a (2r + 1)^2 window around the peak (a window soft-argmax).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SAMPLING = ("patch", "bilinear")


def point_features(grid: torch.Tensor, uv: np.ndarray, sampling: str) -> torch.Tensor:
    """Features (K, C) float32 at points uv (K, 2) of a grid (h, w, C) of any float type."""
    h, w, _ = grid.shape
    uv = torch.as_tensor(np.asarray(uv, dtype=np.float64).reshape(-1, 2))
    if sampling == "patch":
        col = uv[:, 0].floor().long().clamp(0, w - 1)
        row = uv[:, 1].floor().long().clamp(0, h - 1)
        return grid[row.to(grid.device), col.to(grid.device)].float()
    if sampling != "bilinear":
        raise ValueError(f"sampling {sampling!r}: use one of {', '.join(SAMPLING)}")
    x = (uv[:, 0] - 0.5).clamp(0, w - 1)  # in patch-centre units
    y = (uv[:, 1] - 0.5).clamp(0, h - 1)
    x0, y0 = x.floor().long(), y.floor().long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    fx = (x - x0).float().to(grid.device)[:, None]
    fy = (y - y0).float().to(grid.device)[:, None]
    x0, x1, y0, y1 = (t.to(grid.device) for t in (x0, x1, y0, y1))
    top = grid[y0, x0].float() * (1 - fx) + grid[y0, x1].float() * fx
    bottom = grid[y1, x0].float() * (1 - fx) + grid[y1, x1].float() * fx
    return top * (1 - fy) + bottom * fy


def match_points(
    query: torch.Tensor,
    target: torch.Tensor,
    soft_radius: int = 0,
    temperature: float = 1.0,
    work: torch.Tensor | None = None,
) -> np.ndarray:
    """Predicted points (K, 2) in the target's grid coordinates. query (K, C) features, target (h, w, C)
    grid (any float type, scored in float32); both are L2-normalised here, so the scores are cosine
    similarities. soft_radius 0: the centre of
    the best patch; r > 0: the window soft-argmax around it. `work` (>= h*w, C) float32, reused across calls,
    holds the target in float32: a fresh (h*w, C) copy per pair fragmented the heap until memory grew with
    the number of pairs."""
    h, w, c = target.shape
    q = F.normalize(query.float(), dim=1)
    if work is None:
        work = torch.empty((h * w, c), dtype=torch.float32, device=target.device)
    t = work[: h * w]
    t.copy_(target.reshape(h * w, c))
    norms = torch.linalg.vector_norm(t, dim=1).clamp_min(1e-12)  # F.normalize's eps
    sims = (q @ t.T) / norms  # (K, h*w) cosine similarities
    best = sims.argmax(dim=1)  # the first maximum: the lowest patch index on a tie
    row, col = best // w, best % w
    if soft_radius <= 0:
        return torch.stack([col + 0.5, row + 0.5], dim=1).double().cpu().numpy()
    r = soft_radius
    padded = F.pad(sims.reshape(-1, h, w), (r, r, r, r), value=-float("inf"))
    offsets = torch.arange(-r, r + 1, device=sims.device)
    rows = row[:, None] + r + offsets[None, :]  # (K, 2r + 1) rows of the padded grid
    cols = col[:, None] + r + offsets[None, :]
    k = torch.arange(len(best), device=sims.device)[:, None, None]
    window = padded[k, rows[:, :, None], cols[:, None, :]]  # (K, 2r + 1, 2r + 1), -inf off the grid
    weights = torch.softmax(window.reshape(len(best), -1) / temperature, dim=1).reshape(window.shape)
    centre_x = (cols - r).double() + 0.5  # (K, 2r + 1) grid x of each window column's centre
    centre_y = (rows - r).double() + 0.5
    u = (weights.double().sum(1) * centre_x).sum(1)
    v = (weights.double().sum(2) * centre_y).sum(1)
    return torch.stack([u, v], dim=1).cpu().numpy()
