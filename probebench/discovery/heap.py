"""HEAP (Zhang et al., AAAI 2024), reconstructed: group tokens cross-attend to frozen patch features, patches
are assigned to groups, regions are split into foreground and background, and three contrastive losses train
the head. HEAP's code and hyper-parameters are not public; what follows is the reconstruction written down in
README.md, "HEAP, reconstructed" (every choice, why, and the knob that changes it).

Shapes: B images, N patches (padded per batch; `valid` marks real ones), C input channels, d head width,
K groups.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probebench import progress
from probebench.discovery import found
from probebench.discovery.base import Discovery, ImageFeatures, from_mask
from probebench.discovery.configs import HeapConfig

PAIR_SAMPLE = 256  # patches per image whose pairs L_intra scores
EPS = 1e-6


class CrossBlock(nn.Module):
    """Pre-LN cross-attention (group tokens query the patches), then an MLP; both residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, g: torch.Tensor, z: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """g (B, K, d) groups, z (B, N, d) patches, pad (B, N) True where padded -> (B, K, d)."""
        kv = self.norm_kv(z)
        g = g + self.attn(self.norm_q(g), kv, kv, key_padding_mask=pad, need_weights=False)[0]
        return g + self.mlp(self.norm_mlp(g))


class HeapHead(nn.Module):
    def __init__(self, in_dim: int, cfg: HeapConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, cfg.dim))
        self.group_tokens = nn.Parameter(torch.randn(cfg.groups, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(CrossBlock(cfg.dim, cfg.heads) for _ in range(cfg.layers))
        self.project = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim))
        self.score = nn.Linear(cfg.dim, 1)  # the learned foreground score of a group (fg_rule: learned)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, N, C), valid (B, N) -> z (B, N, d), groups (B, K, d), assign (B, N, K) soft (zero on
        padding), mass (B, K), regions (B, K, d) (assignment-weighted means of z)."""
        z = self.embed(x)
        g = self.group_tokens.expand(x.shape[0], -1, -1)
        for block in self.blocks:
            g = block(g, z, ~valid)
        logits = torch.einsum("bnd,bkd->bnk", F.normalize(z, dim=-1), F.normalize(g, dim=-1)) / self.cfg.tau
        assign = logits.softmax(dim=-1) * valid[..., None]
        mass = assign.sum(dim=1)
        regions = torch.einsum("bnk,bnd->bkd", assign, z) / (mass[..., None] + EPS)
        return {"z": z, "groups": g, "assign": assign, "mass": mass, "regions": regions}

    def foreground_weight(self, out: dict, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each region's foreground weight (B, K) in [0, 1], and the seed prior's (B, K) that anchors it.

        background (B, N): FOUND's coarse background (1), 0 elsewhere and on padding. The prior of region k is
        the share of its assignment mass outside the coarse background."""
        bg_share = torch.einsum("bnk,bn->bk", out["assign"], background) / (out["mass"] + EPS)
        prior = (1 - bg_share).clamp(0, 1)
        if self.cfg.fg_rule == "learned":
            return self.score(out["groups"]).squeeze(-1).sigmoid(), prior
        return prior, prior


# -- the three losses -----------------------------------------------------------------------------------
def loss_intra(
    x: torch.Tensor, valid: torch.Tensor, assign: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Intra-image grouping: two patches share a group (sum_k A_ik A_jk) as often as their frozen features are
    more similar than the image's average pair. BCE over pairs of up to PAIR_SAMPLE sampled patches."""
    total, count = x.new_zeros(()), 0
    for b in range(x.shape[0]):
        idx = torch.nonzero(valid[b]).squeeze(1)
        if len(idx) > PAIR_SAMPLE:
            idx = idx[torch.randperm(len(idx), generator=gen)[:PAIR_SAMPLE]]
        f = F.normalize(x[b, idx], dim=-1)
        sim = f @ f.T
        off = ~torch.eye(len(idx), dtype=torch.bool)
        target = (sim > sim[off].mean()).float()
        a = assign[b, idx]
        together = (a @ a.T).clamp(EPS, 1 - EPS)
        total = total + F.binary_cross_entropy(together[off], target[off], reduction="sum")
        count += int(off.sum())
    return total / max(count, 1)


def loss_neg(fg: torch.Tensor, bg: torch.Tensor, tau: float) -> torch.Tensor:
    """Foreground/background contrast at image level across the batch: fg (B, D) and bg (B, D), normalised;
    each embedding's positives are the other images' embeddings of its kind, its negatives the other kind's
    (a supervised-contrastive loss with the kinds as labels)."""
    e = torch.cat([fg, bg])
    kind = torch.cat([torch.zeros(len(fg)), torch.ones(len(bg))])
    sim = e @ e.T / tau
    self_mask = torch.eye(len(e), dtype=torch.bool)
    sim = sim.masked_fill(self_mask, float("-inf"))
    logp = sim.log_softmax(dim=1)
    pos = (kind[:, None] == kind[None]) & ~self_mask
    if not pos.any():  # a batch of one image: only the pair itself, pushed apart
        return (fg * bg).sum(dim=1).mean() / tau
    return -(logp.masked_fill(~pos, 0).sum(1) / pos.sum(1).clamp(min=1)).mean()


def loss_inter(regions: torch.Tensor, keep: torch.Tensor, topk: int, tau: float) -> torch.Tensor:
    """Inter-image region clustering: each region (B, K, D normalised; `keep` (B, K) marks regions holding
    patches) is pulled towards its `topk` most similar regions of other images, the r-th by weight 1 / r,
    against all other images' regions (InfoNCE with rank-weighted positives)."""
    b, k, _ = regions.shape
    flat, owner = regions.reshape(b * k, -1), torch.arange(b).repeat_interleave(k)
    alive = keep.reshape(-1)
    other = (owner[:, None] != owner[None]) & alive[None] & alive[:, None]
    sim = (flat @ flat.T / tau).masked_fill(~other, float("-inf"))
    rows = other.any(dim=1)
    if not rows.any():
        return flat.new_zeros(())
    sim, other = sim[rows], other[rows]
    n = min(topk, int(other.sum(1).min()))
    ranked = sim.detach().topk(n, dim=1).indices
    weight = 1.0 / torch.arange(1, n + 1, dtype=sim.dtype)
    logp = sim.log_softmax(dim=1).gather(1, ranked)
    return -(logp * weight).sum(1).mean() / weight.sum()


# -- foreground priors ----------------------------------------------------------------------------------
def border_background(feats: ImageFeatures, threshold: float) -> np.ndarray:
    """The background seed where there is no class attention: on per-image centred, normalised features, the
    border patch most similar to the mean border feature; background is every patch whose cosine to it
    exceeds `threshold`. (h, w) bool."""
    h, w = feats.grid
    f = np.asarray(feats.keys, dtype=np.float32).reshape(h * w, -1)
    f = f - f.mean(axis=0)
    f /= np.linalg.norm(f, axis=1, keepdims=True) + EPS
    edge = np.zeros((h, w), dtype=bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    border = np.nonzero(edge.ravel())[0]
    proto = f[border].mean(axis=0)
    seed = int(border[np.argmax(f[border] @ proto)])
    return (f @ f[seed] > threshold).reshape(h, w)


def coarse_background(feats: ImageFeatures, threshold: float) -> np.ndarray:
    """FOUND's coarse background where the encoder has class attention, else the border seed's."""
    if feats.attention is not None and not feats.keys_are_tokens:
        return found.background(feats, threshold)[0]
    return border_background(feats, threshold)


# -- training and inference -----------------------------------------------------------------------------
def _batch(items: list[ImageFeatures]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a list of grids to (B, N, C) with the valid mask (B, N)."""
    n = max(f.grid[0] * f.grid[1] for f in items)
    x = torch.zeros(len(items), n, items[0].keys.shape[-1])
    valid = torch.zeros(len(items), n, dtype=torch.bool)
    for i, f in enumerate(items):
        k = f.grid[0] * f.grid[1]
        x[i, :k] = torch.from_numpy(np.asarray(f.keys, dtype=np.float32).reshape(k, -1))
        valid[i, :k] = True
    return x, valid


def _pad_masks(masks: list[np.ndarray], n: int) -> torch.Tensor:
    out = torch.zeros(len(masks), n)
    for i, m in enumerate(masks):
        out[i, : m.size] = torch.from_numpy(m.reshape(-1).astype(np.float32))
    return out


def losses(head: HeapHead, x: torch.Tensor, valid: torch.Tensor, background: torch.Tensor, gen) -> dict:
    """Every loss term of one batch (the unweighted values), plus the total the config asks for."""
    cfg = head.cfg
    out = head(x, valid)
    fg_w, prior = head.foreground_weight(out, background)
    w = out["mass"]
    proj = F.normalize(head.project(out["regions"]), dim=-1)  # (B, K, d)
    fg = F.normalize(torch.einsum("bk,bkd->bd", fg_w * w, proj), dim=-1)
    bg = F.normalize(torch.einsum("bk,bkd->bd", (1 - fg_w) * w, proj), dim=-1)
    terms = {
        "intra": loss_intra(x, valid, out["assign"], gen),
        "neg": loss_neg(fg, bg, cfg.tau_contrast),
        "inter": loss_inter(proj, w > 0.5, cfg.inter_topk, cfg.tau_contrast),
    }
    if cfg.fg_rule == "learned":  # the score is anchored to the seed prior, which needs no labels
        terms["anchor"] = F.binary_cross_entropy(fg_w.clamp(EPS, 1 - EPS), prior.detach())
    total = sum(cfg.weights.get(t, 1.0) * terms[t] for t in cfg.losses)
    if "anchor" in terms:
        total = total + terms["anchor"]
    return {"total": total, **terms}


def train_heap(
    load: Callable[[np.ndarray], list[ImageFeatures]], n: int, cfg: HeapConfig, seed: int
) -> tuple[HeapHead, dict]:
    """Train a head on `n` images read by `load(positions)`; deterministic under `seed`. Returns the head and
    its loss curve (total and per term, first and last, and the full total curve)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    head = HeapHead(load(np.array([0]))[0].keys.shape[-1], cfg)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    backgrounds: dict[int, np.ndarray] = {}
    order, cursor, curve = torch.randperm(n, generator=gen), 0, []
    first: dict[str, float] = {}
    with progress.stage("HEAP: training", total=cfg.iterations, unit="it") as advance:
        for _ in range(cfg.iterations):
            if cursor >= n:
                order, cursor = torch.randperm(n, generator=gen), 0
            positions = order[cursor : cursor + cfg.batch].numpy()
            cursor += cfg.batch
            items = load(positions)
            for p, f in zip(positions.tolist(), items, strict=True):
                if p not in backgrounds:
                    backgrounds[p] = coarse_background(f, cfg.seed_threshold)
            x, valid = _batch(items)
            terms = losses(
                head, x, valid, _pad_masks([backgrounds[p] for p in positions.tolist()], x.shape[1]), gen
            )
            opt.zero_grad()
            terms["total"].backward()
            opt.step()
            values = {k: float(v.detach()) for k, v in terms.items()}
            first = first or values
            curve.append(values["total"])
            advance()
    last = {k: float(np.mean([c for c in curve[-10:]])) if k == "total" else v for k, v in values.items()}
    return head, {"loss_first": first, "loss_last": last, "curve": curve}


def predict_heap(head: HeapHead, feats: ImageFeatures) -> Discovery:
    """One image: hard assignment; regions whose foreground weight exceeds 0.5 are foreground; the soft map
    is each patch's assignment mass on foreground regions; the box is the largest foreground component's.
    The discovery carries the (h, w) region map and the (K, d) region embeddings."""
    cfg = head.cfg
    h, w = feats.grid
    x, valid = _batch([feats])
    bg = _pad_masks([coarse_background(feats, cfg.seed_threshold)], x.shape[1])
    with torch.no_grad():
        out = head(x, valid)
        fg_w, _ = head.foreground_weight(out, bg)
    assign = out["assign"][0, : h * w]
    regions = assign.argmax(dim=1)
    is_fg = fg_w[0] > 0.5
    mask = is_fg[regions].reshape(h, w).numpy()
    soft = (assign @ is_fg.float()).reshape(h, w).numpy()
    found_ = from_mask(mask, soft)
    found_.regions = regions.reshape(h, w).numpy().astype(np.uint8)
    found_.embeddings = out["regions"][0].numpy()
    return found_


def save_heap(head: HeapHead) -> bytes:
    """The trained head as bytes: its weights and config, loadable with `torch.load(weights_only=True)`."""
    buf = io.BytesIO()
    cfg = asdict(head.cfg) | {"losses": list(head.cfg.losses)}
    torch.save(
        {"state_dict": head.state_dict(), "config": cfg, "in_dim": head.embed[0].normalized_shape[0]}, buf
    )
    return buf.getvalue()


def load_heap(path) -> HeapHead:
    """A head saved by `save_heap` (beside a discovery record as `heap_head.pt`)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    cfg = HeapConfig(**{**obj["config"], "losses": tuple(obj["config"]["losses"])})
    head = HeapHead(int(obj["in_dim"]), cfg)
    head.load_state_dict(obj["state_dict"])
    return head.eval()
