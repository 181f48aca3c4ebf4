"""FOUND (Simeoni et al., CVPR 2023): a background seed from the class attention, and a 1x1 conv on the keys
trained in a few hundred steps to segment what is not background.

Seed and coarse mask (their `bkg_seg.compute_img_bkg_seg`): heads are weighted by the sparsity of their
attention (beta_h = log(sum_j (Q_j + eps) / (Q_h + eps)), Q_h the share of patches whose attention exceeds the
image's mean over all heads); the seed is the patch of least beta-weighted attention; the background is every
patch whose cosine to the seed, on keys scaled per head by beta, exceeds 0.3.

Training (their `main_found_train.py` and `configs/found_DUTS-TR.yaml`): one Conv2d(C, 1, 1); AdamW at 5e-2,
StepLR every 50 steps by 0.95, 501 steps of 50 images (at most 3 epochs); BCE-with-logits over all patches of
the batch. For the first 100 steps, BCE against the coarse foreground plus 1.5 x BCE against the binarised
prediction; after, 1.5 + 4.0 = 5.5 x BCE against the binarised prediction. Deviations (also in every record):
no bilateral solver (no maintained implementation installs here, so its refinement of both targets is the
identity), and no augmentation (random scale, 224 crops, blur): the head trains on the cached keys of each
image at its own size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probebench import progress
from probebench.discovery.base import Discovery, ImageFeatures, from_mask
from probebench.discovery.configs import FoundConfig

EPSILON = 1e-10
STEP = 50
GAMMA = 0.95
STOP_SEED_LOSS = 100
W_BS = 1.5
W_SELF = 4.0


def head_weights(attention: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    """(h, w, H) class attention -> (H,) FOUND's per-head sparsity weights beta."""
    att = torch.from_numpy(np.array(attention, dtype=np.float32)).reshape(-1, attention.shape[-1])
    q = (att > att.mean()).sum(dim=0) / att.shape[0]
    return torch.log((q + epsilon).sum() / (q + epsilon)).numpy()


def background(feats: ImageFeatures, threshold: float = FoundConfig.threshold) -> tuple[np.ndarray, int]:
    """(h, w) bool background mask and the seed patch (raster index) of FOUND's coarse segmentation."""
    h, w = feats.grid
    att = np.array(feats.attention, dtype=np.float32).reshape(h * w, -1)  # a copy: cache arrays are read-only
    beta = torch.from_numpy(head_weights(feats.attention))
    heads = att.shape[1]
    keys = torch.from_numpy(np.array(feats.keys, dtype=np.float32)).reshape(h * w, heads, -1)
    descs = F.normalize((keys * beta[None, :, None]).reshape(h * w, -1), dim=-1, p=2)
    seed = int(torch.argmin((torch.from_numpy(att) * beta[None]).sum(dim=1)))
    return (descs @ descs[seed] > threshold).reshape(h, w).numpy(), seed


def train_found(
    load: Callable[[np.ndarray], list[ImageFeatures]], n: int, config: FoundConfig, seed: int
) -> tuple[nn.Conv2d, dict]:
    """Train FOUND's head on `n` images read by `load(positions)`; returns the head and the loss curve.

    Steps: the authors' loop stops after the step numbered `max_iter` (so 501 steps for 500) or after
    `nb_epochs` passes over the data, whichever comes first."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    first = load(np.array([0]))[0]
    head = nn.Conv2d(first.keys.shape[-1], 1, 1)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=STEP, gamma=GAMMA)
    order, cursor, losses = torch.randperm(n, generator=gen), 0, []
    bce = nn.BCEWithLogitsLoss()
    targets: dict[int, torch.Tensor] = {}
    steps = min(config.iterations + 1, config.epochs * -(-n // config.batch))
    with progress.stage("FOUND: training", total=steps, unit="it") as advance:
        for step in range(steps):
            if cursor >= n:  # a new epoch, reshuffled, as the authors' DataLoader(shuffle=True)
                order, cursor = torch.randperm(n, generator=gen), 0
            positions = order[cursor : cursor + config.batch].tolist()
            batch = load(np.asarray(positions))
            cursor += config.batch
            logits = torch.cat([_logits(head, f).reshape(-1) for f in batch])
            binary = (logits.detach().sigmoid() > 0.5).float()
            loss = W_BS * bce(logits, binary)
            if step < STOP_SEED_LOSS:
                for p, f in zip(
                    positions, batch, strict=True
                ):  # each image's pseudo-label once, not per visit
                    if p not in targets:
                        targets[p] = torch.from_numpy(~background(f, config.threshold)[0]).reshape(-1).float()
                coarse = torch.cat([targets[p] for p in positions])
                loss = loss + bce(logits, coarse)
            else:
                loss = loss + W_SELF * bce(logits, binary)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            advance()
    return head, {"loss_first": losses[0], "loss_last": losses[-1], "steps": len(losses)}


def _logits(head: nn.Conv2d, feats: ImageFeatures) -> torch.Tensor:
    """(h, w) logits of one image."""
    x = torch.from_numpy(np.array(feats.keys, dtype=np.float32)).permute(2, 0, 1)[None]
    return head(x)[0, 0]


def predict_found(head: nn.Conv2d, feats: ImageFeatures) -> Discovery:
    """FOUND's "single" mode on the grid: the soft map, its binarisation, the largest component's box."""
    with torch.no_grad():
        logits = _logits(head, feats)
    soft = logits.sigmoid().numpy()
    found_ = from_mask(soft > 0.5, soft)
    found_.logits = logits.numpy()
    return found_
