"""Linear segmentation probe (Zhu et al. Table 4 and Figure 6, the authors' mmseg configs; protocols.md 1.3
O2).

Head: mmseg's `FCNHead(num_convs=0, concat_input=False, dropout=0)` over `resize_concat` inputs: the token
grids of L layers (B, C_l, h_l, w_l) resized bilinearly to the finest grid, concatenated (B, sum C_l, h, w),
one 1x1 convolution to K logits, no normalisation before it; logits are upsampled bilinearly
(align_corners=False) to the label size and trained with cross-entropy that skips the ignore index. Because a
1x1 convolution and a bilinear resize are both linear and act on different axes, the head applies each layer's
slice of the convolution at that layer's own grid and resizes K channels instead of C_l (the same numbers, and
a CNN's stride-4 stage no longer needs its 1280-channel last map blown up to 56 x 56); a test checks the
textbook form.

Training (the configs' optimiser): AdamW (betas 0.9, 0.999; weight decay on the weight, none on the bias, as
the configs' layer-decay constructor does), poly decay (power 1, min 0) after a linear warm-up from 1e-6 x lr,
a fixed number of iterations, no model selection (the final head is evaluated). Batches are windows of equal
grid size read from the memory-mapped cache, labels from a temporary memory-mapped file: neither the features
nor the labels of the training set are ever in memory at once.

Deliberate deviations, written into every record: no augmentation (random rescale, crop, flip and photometric
distortion need the backbone on every step; features are frozen and cached once), so the training crops are
the sliding windows of the test-time layout; fp32 instead of AMP; the loss averages over labelled pixels
(mmseg's default divides by all pixels, a constant factor that AdamW's update does not feel).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probebench import progress
from probebench.learners import defaults

# Logits upsampled to label size are the memory peak: (B, K, H, W) floats are chunked to about this many.
MAX_LOGIT_ELEMENTS = 2**21


class LinearSegHead(nn.Module):
    """One 1x1 convolution over the concatenation of L token grids: [(B, C_l, h_l, w_l)] -> (B, K, h, w),
    where (h, w) is the finest grid (the one with the most cells; all equal for a ViT)."""

    def __init__(self, dims: list[int], num_classes: int) -> None:
        super().__init__()
        self.dims = list(dims)
        self.conv = nn.Conv2d(sum(dims), num_classes, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)  # mmseg's `conv_seg` initialisation
        nn.init.zeros_(self.conv.bias)

    def forward(self, grids: list[torch.Tensor]) -> torch.Tensor:
        size = max((g.shape[-2:] for g in grids), key=lambda s: s[0] * s[1])
        out = self.conv.bias.view(1, -1, 1, 1)
        for grid, weight in zip(grids, self.conv.weight.split(self.dims, dim=1), strict=True):
            y = F.conv2d(grid, weight)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out = out + y
        return out


def learning_rate(
    it: int, iterations: int, lr: float, warmup: int, ratio: float = defaults.SEGHEAD_WARMUP_RATIO
) -> float:
    """mmcv's poly schedule (power 1, min 0) with its linear warm-up, at iteration `it` (0-based)."""
    regular = lr * (1 - it / iterations)
    if it < warmup:
        return regular * (1 - (1 - it / warmup) * (1 - ratio))
    return regular


# -- data ------------------------------------------------------------------------------------------------
GridReader = Callable[[np.ndarray], list[np.ndarray]]  # window positions (n,) -> per layer (n, h_l, w_l, C_l)


@dataclass
class Windows:
    """One role's windows: how to read their token grids, their input size and where they lie.

    read: positions (n,) of windows sharing one bucket -> per layer (n, h_l, w_l, C_l).
    bucket: (n,) a key per window; windows with equal keys have equal grids and input size.
    input_hw: (n, 2) the input (padded window) size in pixels.
    """

    read: GridReader
    bucket: np.ndarray
    input_hw: np.ndarray


def _to_tensors(grids: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    return [
        torch.as_tensor(np.asarray(g), dtype=torch.float32, device=device).permute(0, 3, 1, 2) for g in grids
    ]


def label_dtype(num_classes: int, ignore: int) -> np.dtype:
    """The narrowest store for labels 0..num_classes - 1 and the ignore index: uint8 while every value fits
    (the common case, a quarter of int32's disk), else uint16, else int32. A store narrower than its labels
    would wrap them (ADE20K's full label set in uint8 trains on label mod 256)."""
    top = max(num_classes - 1, ignore)
    if ignore < 0:
        return np.dtype(np.int32)
    return np.dtype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.int32)


def label_store(
    n: int, height: int, width: int, fill: Callable[[int], np.ndarray], ignore: int, num_classes: int = 256
) -> tuple[np.memmap, np.ndarray]:
    """(n, height, width) labels in an anonymous temporary file, window i's labels from `fill(i)` at the top
    left, the rest `ignore`: training labels are memory-mapped like the features. Returns the store and the
    labelled (not ignored) pixels of each class (K,): a head trained on one class scores 100 on it, so the
    caller needs to know which classes it saw. Every value written must fit the store's type."""
    dtype = label_dtype(num_classes, ignore)
    handle = tempfile.TemporaryFile(prefix="probebench-labels-")
    out = np.memmap(handle, dtype=dtype, mode="w+", shape=(max(n, 1), height, width))
    counts, info = np.zeros(num_classes, dtype=np.int64), np.iinfo(dtype)
    for i in range(n):
        lab = np.asarray(fill(i))
        if lab.size and (lab.min() < info.min or lab.max() > info.max):
            raise ValueError(f"labels {lab.min()}..{lab.max()} do not fit a {dtype} label store")
        out[i] = ignore
        out[i, : lab.shape[0], : lab.shape[1]] = lab
        seen = np.bincount(lab[lab != ignore].ravel().astype(np.int64), minlength=num_classes)
        if len(seen) > num_classes:
            raise ValueError(f"label {len(seen) - 1} is not one of the {num_classes} classes")
        counts += seen
    return out, counts


def _batches(windows: Windows, batch_size: int, gen: torch.Generator) -> Iterator[np.ndarray]:
    """One epoch: windows shuffled, cut into batches within their bucket, batches shuffled; rows sorted in a
    batch so reads run forward through the memory map."""
    order = torch.randperm(len(windows.bucket), generator=gen).numpy()
    batches = []
    for key in np.unique(windows.bucket):
        members = order[windows.bucket[order] == key]
        batches += [np.sort(members[i : i + batch_size]) for i in range(0, len(members), batch_size)]
    for i in torch.randperm(len(batches), generator=gen).tolist():
        yield batches[i]


def _loss_backward(logits: torch.Tensor, labels: torch.Tensor, size: tuple[int, int], ignore: int) -> float:
    """Cross-entropy of logits (B, K, h, w) upsampled to `size` against labels (B, H, W), averaged over the
    labelled pixels of the batch; backward in chunks of windows so (B, K, H, W) never exists at once."""
    labelled = int((labels != ignore).sum())
    if labelled == 0:
        return 0.0
    per = max(1, MAX_LOGIT_ELEMENTS // (logits.shape[1] * size[0] * size[1]))
    total = 0.0
    for i in range(0, len(logits), per):
        up = F.interpolate(logits[i : i + per], size=size, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(up, labels[i : i + per], ignore_index=ignore, reduction="sum") / labelled
        loss.backward(retain_graph=i + per < len(logits))
        total += loss.item()
    return total


def train_head(
    windows: Windows,
    labels: np.ndarray,
    dims: list[int],
    num_classes: int,
    *,
    ignore: int = 255,
    iterations: int = defaults.SEGHEAD_ITERATIONS,
    batch_size: int = defaults.SEGHEAD_BATCH_SIZE,
    lr: float = defaults.SEGHEAD_LR,
    weight_decay: float = defaults.SEGHEAD_WEIGHT_DECAY,
    warmup_iters: int = defaults.SEGHEAD_WARMUP_ITERS,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[LinearSegHead, dict]:
    """Train the head for `iterations` steps on the windows. labels: (n, H, W) at least as large as every
    window's input, ignore outside the window. Returns the head and a details dict (loss curve by 1/20th)."""
    if len(windows.bucket) == 0:  # an epoch of no batch would never reach `iterations`
        raise ValueError("no training windows to fit the head on")
    t0 = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    head = LinearSegHead(dims, num_classes).to(device)
    opt = torch.optim.AdamW(
        [
            {"params": [head.conv.weight], "weight_decay": weight_decay},
            {"params": [head.conv.bias], "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.999),
    )
    head.train()
    curve, losses, it = [], [], 0
    every = max(1, iterations // 20)
    with progress.stage("segmentation head: iterations", total=iterations, unit="it") as advance:
        while it < iterations:
            for batch in _batches(windows, batch_size, gen):
                if it >= iterations:
                    break
                for group in opt.param_groups:
                    group["lr"] = learning_rate(it, iterations, lr, warmup_iters)
                in_h, in_w = (int(v) for v in windows.input_hw[batch[0]])
                y = torch.from_numpy(np.asarray(labels[batch, :in_h, :in_w]).astype(np.int64)).to(device)
                opt.zero_grad(set_to_none=True)
                losses.append(
                    _loss_backward(head(_to_tensors(windows.read(batch), device)), y, (in_h, in_w), ignore)
                )
                opt.step()
                it += 1
                advance()
                if it % every == 0:
                    curve.append(round(float(np.mean(losses)), 5))
                    losses = []
    details = {
        "iterations": iterations,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_iters": warmup_iters,
        "loss_curve": curve,
        "train_s": round(time.perf_counter() - t0, 3),
    }
    return head, details


@torch.no_grad()
def predict_image(
    head: LinearSegHead,
    grids: list[np.ndarray],
    boxes: np.ndarray,
    input_hw: tuple[int, int],
    scaled_wh: tuple[int, int],
    out_hw: tuple[int, int],
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """mmseg's slide inference for one image: window logits upsampled to the input size, cut to the window,
    summed onto the rescaled image and divided by the overlap count, then resized bilinearly to the label size
    `out_hw`; returns the (H, W) int64 argmax. grids: per layer (n, h_l, w_l, C_l) of the image's n windows;
    boxes: (n, 4) windows [x0, y0, x1, y1) in rescaled pixels."""
    head.eval()
    logits = head(_to_tensors(grids, torch.device(device)))
    logits = F.interpolate(logits, size=input_hw, mode="bilinear", align_corners=False).cpu()
    width, height = scaled_wh
    canvas = torch.zeros(logits.shape[1], height, width)
    count = torch.zeros(1, height, width)
    for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=np.int64).tolist()):
        canvas[:, y0:y1, x0:x1] += logits[k, :, : y1 - y0, : x1 - x0]
        count[:, y0:y1, x0:x1] += 1
    canvas = (canvas / count.clamp(min=1))[None]
    if canvas.shape[-2:] != out_hw:
        canvas = F.interpolate(canvas, size=out_hw, mode="bilinear", align_corners=False)
    return canvas[0].argmax(0).numpy().astype(np.int64)
