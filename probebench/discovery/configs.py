"""Each discovery method's settings and their defaults, in a module that imports no torch: the discovery
probe's knobs are made from them (the task catalogue reads those without building anything), and each method
takes its settings whole.

The defaults are the authors' (LOST's `--k_patches`, TokenCut's tau and eps, FOUND's config file) and, for
HEAP, the paper's where it gives them; `docs/heap.md` says which HEAP values are reconstructed. Each setting
a task may change carries its domain (`setting`), so the probe's knobs are made from these classes and a new
setting is one field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from probebench.tasks.knobs import Choice, Float, Int, Knob

C = TypeVar("C")

LOSSES = ("intra", "neg", "inter")  # HEAP's three contrastive losses
FG_RULES = ("seed", "learned")  # how HEAP tells foreground groups from background ones

# LOST, TokenCut and DINO-seg (untrained)
LOST_K = 100  # LOST's k_patches: the seed's neighbours with the fewest positive correlations
TOKENCUT_TAU = 0.2  # TokenCut's edge threshold on cosine similarity
TOKENCUT_EPS = 1e-5  # TokenCut's weight of edges under the threshold
DINOSEG_HEAD = 4  # LOST's --dinoseg_head default
DINOSEG_MASS = 0.6  # the share of attention mass DINO-seg keeps


def setting(domain: Knob, knob: str | None = None) -> Any:
    """A method's setting that the discovery probe exposes as a knob: its default is the domain's, and its
    knob is `<method>_<field>` unless `knob` names it (`heap_topk`, the shared `seed_threshold`)."""
    return field(default=domain.default, metadata={"domain": domain, "knob": knob})


def config_knobs(config: type, method: str) -> dict[str, Knob]:
    """The knobs of a method's settings class, each with its domain, in field order."""
    return {f.metadata["knob"] or f"{method}_{f.name}": f.metadata["domain"] for f in _settings(config)}


def config_from_knobs(config: type[C], method: str, knobs: dict[str, Any], **fixed: Any) -> C:
    """A method's settings from the probe's flat knobs (`fixed` sets the fields that are not knobs)."""
    return config(
        **{f.name: knobs[f.metadata["knob"] or f"{method}_{f.name}"] for f in _settings(config)}, **fixed
    )


def _settings(config: type) -> list:
    return [f for f in fields(config) if "domain" in f.metadata]


SEED_THRESHOLD = Float(0.3, ge=-1.0, le=1.0)  # FOUND's background seed similarity, a cosine; HEAP's too
COUNT = Int(1, ge=1, le=1_000_000)  # iterations, epochs


@dataclass
class FoundConfig:
    """FOUND's head training (its config file's values)."""

    iterations: int = setting(replace(COUNT, default=500))
    batch: int = setting(Int(50, ge=1, le=4096))
    # the config's nb_epochs: it ends training first on sets under about 8,350 images
    epochs: int = setting(replace(COUNT, default=3))
    lr: float = setting(Float(5e-2, gt=0.0, le=100.0))
    threshold: float = setting(SEED_THRESHOLD, knob="seed_threshold")


@dataclass
class HeapConfig:
    """HEAP's group head and its training."""

    groups: int = setting(Int(8, ge=2, le=256))  # K group tokens (foreground and background need two)
    layers: int = setting(Int(2, ge=1, le=64))  # L cross-attention blocks
    dim: int = setting(Int(256, ge=1, le=8192))  # head width d
    heads: int = setting(Int(4, ge=1, le=256))  # attention heads per block
    tau: float = setting(Float(0.1, gt=0.0, le=100.0))  # temperature of the patch-to-group assignment
    tau_contrast: float = setting(Float(0.2, gt=0.0, le=100.0))  # temperature of L_neg and L_inter
    # seed: regions voted background by FOUND's seed; learned: a score anchored to it
    fg_rule: str = setting(Choice("seed", FG_RULES))
    seed_threshold: float = setting(SEED_THRESHOLD, knob="seed_threshold")
    losses: tuple[str, ...] = LOSSES
    weights: dict[str, float] = field(default_factory=lambda: {"intra": 1.0, "neg": 1.0, "inter": 1.0})
    # neighbours pulled by L_inter, weighted 1 / rank
    inter_topk: int = setting(Int(5, ge=1, le=100_000), knob="heap_topk")
    iterations: int = setting(replace(COUNT, default=500))
    batch: int = setting(Int(32, ge=1, le=4096))
    lr: float = setting(Float(1e-3, gt=0.0, le=100.0))
    weight_decay: float = setting(Float(0.05, ge=0.0, le=10.0))
