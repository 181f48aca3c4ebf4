"""The untrained baselines on one image's keys, following their authors' code convention by convention.

- LOST (Simeoni et al. 2021, `object_discovery.lost`): raw key dot products (patch features standing in
  for keys are first layer-normalised over the whole map, as `main_lost.py` does for ResNet and VGG);
  degree = the number of positive similarities off the diagonal; the seed is the lowest-degree patch; the
  100 lowest-degree patches that are positively similar to the seed vote (sum of their rows, itself
  included); the box is the 4-connected component of the positive votes that holds the seed, cells times
  the patch size, ends clipped to the image.
- TokenCut (Wang et al. 2022, `object_discovery.ncut`): L2-normalised keys; binary graph cos > tau, other
  weights eps (diagonal included); second generalised eigenvector of (D - W, D) (`spectral`); split at its
  mean; the seed is the patch of largest |y|; the partition is flipped when the seed falls outside it; the
  box is the seed's connected component, as LOST.
- DINO-seg (Caron et al. 2021 as LOST's `dino_seg` runs it): one head's class attention, the patches that
  hold the top 60 % of its mass, the "largest" connected component by LOST's code (whose quirks are kept:
  with two or more components the last-numbered one is never chosen, and with a single one the box is that
  of the zero region), cells times the patch size, not clipped.
- The trivial boxes: the whole image, and the centred box covering the middle half of each side.

Ties: LOST sorts degrees with `torch.argsort`, which is not stable; the same call is made here, so among
equal degrees (at the seed and at the 100th place) the order is PyTorch's CPU sort's: deterministic for a
given PyTorch build (the record holds its version), not raster order. TokenCut's `np.argmax` takes the first
of equal |y|; where |y| ties, or entries sit exactly at the mean, the dense solve decides (`spectral`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from probebench.discovery.base import Discovery, ImageFeatures, cells_box, label_components
from probebench.discovery.configs import DINOSEG_HEAD, DINOSEG_MASS, LOST_K, TOKENCUT_EPS, TOKENCUT_TAU
from probebench.discovery.spectral import second_eigenvector


def _flat(keys: np.ndarray) -> torch.Tensor:
    """(h, w, C) keys -> (N, C) float32, raster order (row by row), as the authors' reshape."""
    return torch.from_numpy(np.array(keys, dtype=np.float32)).reshape(-1, keys.shape[-1])


def _seed_component(binary: np.ndarray, seed: int) -> np.ndarray:
    labels = label_components(binary)
    cc = labels[np.unravel_index(seed, binary.shape)]
    return labels == cc


def lost(feats: ImageFeatures, k_patches: int = LOST_K) -> Discovery:
    h, w = feats.grid
    f = _flat(feats.keys)
    if feats.keys_are_tokens:
        # LOST's ResNet and VGG path: `nn.LayerNorm(feats.size()[1:])`, freshly made, normalises the whole
        # (N, C) map by one mean and one variance, so that non-negative CNN features get signed similarities
        f = F.layer_norm(f, f.shape)
    a = f @ f.T
    off = a.clone()
    off.fill_diagonal_(0)
    off[off < 0] = 0
    degree = (off > 0).sum(dim=1)
    # LOST's own call, lowest degree first: among equal degrees the order is PyTorch's (unstable) CPU sort's,
    # fixed for a given PyTorch build. Equal degrees are common (they are integers), at the seed and at the
    # 100th place alike, so a stable sort would change LOST's boxes (`tests/test_authors_code.py`).
    order = torch.argsort(-degree.float(), descending=True)
    seed = int(order[0])
    potentials = order[:k_patches]
    similars = potentials[a[seed, potentials] > 0.0]
    votes = a[similars, :].sum(dim=0).reshape(h, w).numpy()
    mask = _seed_component(votes > 0.0, seed)
    return Discovery(mask, cells_box(mask))


TOKENCUT_MIN_PATCHES = 3  # the second generalised eigenvector of a graph needs three nodes


def tokencut(feats: ImageFeatures, tau: float = TOKENCUT_TAU, eps: float = TOKENCUT_EPS) -> Discovery:
    h, w = feats.grid
    if h * w < TOKENCUT_MIN_PATCHES:  # an image of one or two patches: no cut to make
        why = f"have fewer than {TOKENCUT_MIN_PATCHES} patches, too few for a normalised cut"
        return Discovery(np.zeros((h, w), dtype=bool), None, why=why)
    f = F.normalize(_flat(feats.keys), p=2, dim=1)
    graph = np.where((f @ f.T).numpy() > tau, 1.0, eps)
    y = second_eigenvector(graph)
    partition = y > y.sum() / len(y)
    seed = int(np.argmax(np.abs(y)))
    if not partition[seed]:
        partition = ~partition
    mask = _seed_component(partition.reshape(h, w), seed)
    return Discovery(mask, cells_box(mask))


def dinoseg(feats: ImageFeatures, head: int = DINOSEG_HEAD, mass: float = DINOSEG_MASS) -> Discovery:
    h, w = feats.grid
    att = torch.from_numpy(np.array(feats.attention, dtype=np.float32)).reshape(h * w, -1).T
    val, idx = torch.sort(att)
    val = val / val.sum(dim=1, keepdim=True)
    kept = torch.cumsum(val, dim=1) > (1 - mass)
    kept = torch.gather(kept, 1, torch.argsort(idx, dim=1))  # back to patch order
    labels = label_components(kept[head].reshape(h, w).numpy())
    sizes = [int(np.sum(labels == c)) for c in range(int(labels.max()))]
    chosen = int(np.argmax(sizes[1:])) + 1 if len(sizes) > 1 else 0
    mask = labels == chosen
    return Discovery(mask, cells_box(mask), clip=False)


def whole(feats: ImageFeatures) -> Discovery:
    h, w = feats.grid
    return Discovery(np.ones((h, w), dtype=bool), (0, 0, w, h), image_fraction=(0.0, 0.0, 1.0, 1.0))


def centre(feats: ImageFeatures) -> Discovery:
    """The centred box covering the middle half of each side (a quarter of the image's area)."""
    h, w = feats.grid
    mask = np.zeros((h, w), dtype=bool)
    mask[h // 4 : max(h // 4 + 1, h - h // 4), w // 4 : max(w // 4 + 1, w - w // 4)] = True
    return Discovery(mask, cells_box(mask), image_fraction=(0.25, 0.25, 0.75, 0.75))
