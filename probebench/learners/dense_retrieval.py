"""In-context dense retrieval (Balažević et al., NeurIPS 2023, "Hummingbird"), as open-hummingbird-eval runs
it: a memory of training patches with each patch's label distribution, and test patches labelled by their
nearest memory patches. No training.

- A patch's label distribution is the share of each class among the pixels of its cell at the input size
  (the label map resized, nearest, as the image was). Pixels at the ignore index count as class 0, as
  open-hummingbird-eval sets `y[y == 255] = 0` when it fills the memory.
- A bounded memory keeps `count` patches of each training image, chosen as open-hummingbird-eval does: each
  patch scores the sum, over the classes it holds, of how many of the image's patches hold that class, times
  a uniform draw; the lowest scores are kept, so patches made only of an image's rarer classes come first.
- A test patch's distribution is the softmax(similarity / temperature)-weighted mean of its k nearest memory
  patches' distributions (cosine similarity: features are L2-normalised); the grid of distributions is
  sampled bilinearly at every pixel of the image (`grid_to_pixels`) and its argmax is the prediction.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from probebench.data.annotations import resize_nearest
from probebench.geometry import Geometry

ROW_BAND = 128  # image rows upsampled at once: K x 128 x W floats, not K x H x W


def input_labels(labels: np.ndarray, geometry: Geometry, ignore: int) -> np.ndarray:
    """(input_h, input_w) labels as the encoder saw the image: resized (nearest) like the image, cropped or
    padded (padding is `ignore`)."""
    g = geometry
    resized = resize_nearest(labels, g.resized_w, g.resized_h)
    out = np.full((g.input_h, g.input_w), ignore, dtype=np.int64)
    crop = resized[g.top : g.top + g.input_h, g.left : g.left + g.input_w]
    out[: crop.shape[0], : crop.shape[1]] = crop
    return out


def patch_shares(labels: np.ndarray, geometry: Geometry, num_classes: int, ignore: int) -> np.ndarray:
    """(grid_h * grid_w, K) share of each class among each cell's pixels. labels (H, W) at the image's
    stored size; ignored pixels count as class 0."""
    g = geometry
    seen = input_labels(labels, g, ignore)
    seen = np.where(seen == ignore, 0, seen)
    ys, xs = np.indices(seen.shape)
    cell = (ys // g.cell) * g.grid_w + xs // g.cell
    counts = np.bincount(
        (cell * num_classes + seen).ravel(), minlength=g.grid_h * g.grid_w * num_classes
    ).reshape(g.grid_h * g.grid_w, num_classes)
    return (counts / np.maximum(counts.sum(1, keepdims=True), 1)).astype(np.float32)


def sample_patches(shares: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (count,) of the patches a bounded memory keeps of one image (shares (n, K)), in increasing
    order: all of them when count >= n."""
    n = len(shares)
    if count >= n:
        return np.arange(n)
    holds = shares > 0
    score = holds.astype(np.float64) @ holds.sum(0).astype(np.float64)  # patches sharing each class held
    score = score * rng.uniform(size=n)
    return np.sort(np.argsort(score, kind="stable")[:count])


def transfer_labels(sims: torch.Tensor, neighbour_shares: torch.Tensor, temperature: float) -> torch.Tensor:
    """(Q, K) label distributions: the neighbours' (Q, k, K) weighted by softmax(sims (Q, k) / T)."""
    weights = torch.softmax(sims / temperature, dim=1)
    return torch.einsum("qk,qkc->qc", weights, neighbour_shares)


def grid_to_pixels(dist: torch.Tensor, geometry: Geometry) -> np.ndarray:
    """(H, W) argmax labels of a grid of distributions (grid_h, grid_w, K), sampled bilinearly at each
    pixel centre of the image as stored (between cell centres; the border cells' values beyond them)."""
    g = geometry
    grid = dist.permute(2, 0, 1)[None].float()  # (1, K, h, w)
    u = g.image_to_grid(np.stack([np.arange(g.width) + 0.5, np.zeros(g.width)], axis=1))[:, 0]
    v = g.image_to_grid(np.stack([np.zeros(g.height), np.arange(g.height) + 0.5], axis=1))[:, 1]
    # grid_sample's align_corners=False: -1 and 1 are the outer edges of the first and last cells
    x = torch.as_tensor(2 * u / g.grid_w - 1, dtype=torch.float32)
    y = torch.as_tensor(2 * v / g.grid_h - 1, dtype=torch.float32)
    out = np.empty((g.height, g.width), dtype=np.int64)
    for r0 in range(0, g.height, ROW_BAND):
        yy = y[r0 : r0 + ROW_BAND]
        where = torch.stack(torch.broadcast_tensors(x[None, :], yy[:, None]), dim=-1)[None]
        band = F.grid_sample(
            grid, where.to(grid.device), mode="bilinear", padding_mode="border", align_corners=False
        )
        out[r0 : r0 + len(yy)] = band[0].argmax(0).cpu().numpy()
    return out
