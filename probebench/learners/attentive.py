"""Attentive probe (CAE's protocol, as Zhu et al. use it): a learnable query cross-attends over frozen tokens.

Head: one cross-attention block (pre-LayerNorms on query, keys and values; q and v biases, no k bias; an
output projection; no FFN, no residual), then `BatchNorm1d(affine=False)` and a linear classifier. Trained on
cached tokens with SGD (momentum 0.9, no weight decay), linear warm-up then cosine decay, and the epoch is
selected on a validation split carved from the training split. (The authors' part-classification script
reports the best test accuracy over epochs, i.e. it selects on test; probebench does not.)

With a single query the block never needs to project every token. For head h with query q_h,
    logit_t = q_h . W_k,h LN_k(x_t) = (gamma_k * W_k,h^T q_h) . xhat_t + const,
    out_h   = W_v,h LN_v(sum_t a_t x_t) = W_v,h (gamma_v * sum_t a_t xhat_t) + W_v,h beta_v + b_v,h,
where xhat is the token normalised without affine, because the attention weights sum to one. So the cost per
image is O(T C H) instead of O(T C^2); `forward` computes exactly the standard block (the tests check it
against the textbook form).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probebench import progress
from probebench.learners import defaults
from probebench.learners.split import carve_val
from probebench.metrics.classification import classification_metrics


def num_heads(dim: int, head_dim: int = defaults.ATTENTIVE_HEAD_DIM) -> int:
    """ViT-B's 12 heads of 64 channels, generalised: dim // head_dim when it divides, else one head."""
    return dim // head_dim if dim % head_dim == 0 else 1


class AttentivePooler(nn.Module):
    """Cross-attention of one learnable query over tokens (B, T, C) -> (B, C)."""

    def __init__(self, dim: int, heads: int | None = None) -> None:
        super().__init__()
        self.dim, self.heads = dim, heads or num_heads(dim)
        self.query = nn.Parameter(torch.zeros(1, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=True)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, c = self.heads, self.dim
        d = c // h
        xhat = F.layer_norm(tokens, (c,), eps=self.norm_k.eps)  # (B, T, C); LN_k and LN_v share it
        q = self.q(self.norm_q(self.query)).view(h, d) * d**-0.5  # (H, d)
        u = torch.einsum("hd,hdc->hc", q, self.k.weight.view(h, d, c)) * self.norm_k.weight  # (H, C)
        attn = torch.einsum("btc,hc->bht", xhat, u).softmax(-1)  # (B, H, T)
        z = torch.einsum("bht,btc->bhc", attn, xhat) * self.norm_v.weight  # (B, H, C)
        v_const = self.v.weight @ self.norm_v.bias + self.v.bias  # (C,)
        out = torch.einsum("bhc,hdc->bhd", z, self.v.weight.view(h, d, c)).reshape(len(tokens), c)
        return self.proj(out + v_const)


class AttentiveHead(nn.Module):
    """AttentivePooler -> BatchNorm1d(affine=False) -> Linear: tokens (B, T, C) -> logits (B, K)."""

    def __init__(self, dim: int, num_classes: int, heads: int | None = None) -> None:
        super().__init__()
        self.pool = AttentivePooler(dim, heads)
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.pool(tokens)))


TokenReader = Callable[[np.ndarray], np.ndarray]  # row positions (n,) -> tokens (n, T, C)


def _lr(step: int, steps: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


@torch.no_grad()
def _predict(head: AttentiveHead, read: TokenReader, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    head.eval()
    out = [
        head(torch.as_tensor(read(rows[i : i + 512]), dtype=torch.float32, device=device)).cpu()
        for i in range(0, len(rows), 512)
    ]
    return torch.cat(out)


def attentive_probe(
    read_train: TokenReader,
    y_train: np.ndarray,
    read_test: TokenReader,
    y_test: np.ndarray,
    num_classes: int,
    dim: int,
    *,
    epochs: int = defaults.ATTENTIVE_EPOCHS,
    warmup_epochs: int = defaults.ATTENTIVE_WARMUP_EPOCHS,
    batch_size: int = defaults.ATTENTIVE_BATCH_SIZE,
    base_lr: float = defaults.ATTENTIVE_BASE_LR,
    head_dim: int = defaults.ATTENTIVE_HEAD_DIM,
    val_fraction: float = defaults.VAL_FRACTION,
    seed: int = 0,
    resampling_seed: int = 0,
    device: str | torch.device = "cpu",
    ranks: dict[str, np.ndarray] | None = None,
) -> tuple[dict, dict]:
    """Train the head on the fit part of train, pick the epoch with the best val top-1, test that model.

    Tokens are read on demand by row position (memory-mapped cache), so they never all sit in memory.
    Returns (metrics, details) with the chosen epoch and the per-epoch validation curve. `seed` (the
    training seed) carves the validation split and seeds initialisation and batch order, `resampling_seed`
    draws the intervals; `ranks` receives the test rows' true-class ranks (`classification_metrics`).
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    y_train = np.asarray(y_train)
    fit_rows, val_rows = carve_val(y_train, val_fraction, seed)
    head = AttentiveHead(dim, num_classes, num_heads(dim, head_dim)).to(device)
    lr = base_lr * batch_size / 256
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    per_epoch = math.ceil(len(fit_rows) / batch_size)
    steps, warmup = epochs * per_epoch, warmup_epochs * per_epoch
    labels = torch.as_tensor(y_train, dtype=torch.long)
    curve: list[float] = []
    best = (-1.0, 0, copy.deepcopy(head.state_dict()))
    step = 0
    with progress.stage("attentive probe: epochs", total=epochs, unit="epoch") as advance:
        for epoch in range(epochs):
            order = fit_rows[torch.randperm(len(fit_rows), generator=gen).numpy()]
            schedule = (step, steps, warmup, lr)
            step = _train_epoch(head, opt, read_train, labels, order, batch_size, schedule, device)
            val_pred = _predict(head, read_train, val_rows, device).argmax(1)
            acc = float((val_pred == labels[val_rows]).float().mean() * 100) if len(val_rows) else 0.0
            curve.append(acc)
            if acc > best[0]:  # the earliest epoch among equals
                best = (acc, epoch, copy.deepcopy(head.state_dict()))
            advance()
    head.load_state_dict(best[2])
    scores = _predict(head, read_test, np.arange(len(y_test)), device)
    metrics = classification_metrics(scores, np.asarray(y_test), seed=resampling_seed, ranks=ranks)
    details = {
        "probe": "attentive",
        "variant": "cae",
        "heads": head.pool.heads,
        "epochs": epochs,
        "warmup_epochs": warmup_epochs,
        "batch_size": batch_size,
        "lr": lr,
        "base_lr_per_256": base_lr,
        "chosen_epoch": best[1] + 1,
        "val_curve": curve,
        "val_fraction": val_fraction,
        "n_fit": len(fit_rows),
        "n_val": len(val_rows),
        "total_s": round(time.perf_counter() - t0, 3),
    }
    return metrics, details


def _train_epoch(
    head: AttentiveHead,
    opt: torch.optim.Optimizer,
    read_train: TokenReader,
    labels: torch.Tensor,
    order: np.ndarray,
    batch_size: int,
    schedule: tuple[int, int, int, float],
    device: torch.device,
) -> int:
    """One pass over `order` (train rows, shuffled) in batches; `schedule` is (step, steps, warmup, peak lr)
    of the warm-up + cosine schedule. Returns the step count after the epoch."""
    step, steps, warmup, lr = schedule
    head.train()
    for i in range(0, len(order), batch_size):
        batch = np.sort(order[i : i + batch_size])  # sorted reads are sequential in the memory map
        if len(batch) < 2:
            continue  # BatchNorm needs two rows to train
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, warmup, lr)
        x = torch.as_tensor(read_train(batch), dtype=torch.float32, device=device)
        loss = F.cross_entropy(head(x), labels[batch].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    return step
