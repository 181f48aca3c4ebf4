"""Each discovery method's settings and their defaults, in a module that imports no torch: the discovery
probe's knobs are made from them (the task catalogue reads those without building anything), and each method
takes its settings whole.

The defaults are the authors' (LOST's `--k_patches`, TokenCut's tau and eps, FOUND's config file) and, for
HEAP, the paper's where it gives them; `docs/heap.md` says which HEAP values are reconstructed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LOSSES = ("intra", "neg", "inter")  # HEAP's three contrastive losses
FG_RULES = ("seed", "learned")  # how HEAP tells foreground groups from background ones

# LOST, TokenCut and DINO-seg (untrained)
LOST_K = 100  # LOST's k_patches: the seed's neighbours with the fewest positive correlations
TOKENCUT_TAU = 0.2  # TokenCut's edge threshold on cosine similarity
TOKENCUT_EPS = 1e-5  # TokenCut's weight of edges under the threshold
DINOSEG_HEAD = 4  # LOST's --dinoseg_head default
DINOSEG_MASS = 0.6  # the share of attention mass DINO-seg keeps


@dataclass
class FoundConfig:
    """FOUND's head training (its config file's values)."""

    iterations: int = 500
    batch: int = 50
    epochs: int = 3  # the config's nb_epochs: it ends training first on sets under about 8,350 images
    lr: float = 5e-2
    threshold: float = 0.3  # the background seed's similarity threshold


@dataclass
class HeapConfig:
    """HEAP's group head and its training."""

    groups: int = 8  # K group tokens
    layers: int = 2  # L cross-attention blocks
    dim: int = 256  # head width d
    heads: int = 4  # attention heads per block
    tau: float = 0.1  # temperature of the patch-to-group assignment
    tau_contrast: float = 0.2  # temperature of L_neg and L_inter
    fg_rule: str = "seed"  # seed: regions voted background by FOUND's seed; learned: a score anchored to it
    seed_threshold: float = FoundConfig.threshold
    losses: tuple[str, ...] = LOSSES
    weights: dict[str, float] = field(default_factory=lambda: {"intra": 1.0, "neg": 1.0, "inter": 1.0})
    inter_topk: int = 5  # neighbours pulled by L_inter, weighted 1 / rank
    iterations: int = 500
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
