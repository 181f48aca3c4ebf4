"""The discovery methods as one table, each behind one contract.

A `DiscoveryMethod` fits on the train role's images (or does nothing, if untrained) and returns a `Fitted`:
a predictor from one image's features to a `Discovery`, what the record says of the fit, and files kept beside
it. The discovery probe runs whichever methods a task names and never asks what kind each is.

The methods' modules (torch) are imported when a method fits, so the table and the knobs made from
`probebench.discovery.configs` cost nothing to read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from probebench.discovery.configs import LOSSES, FoundConfig, HeapConfig, config_from_knobs

if TYPE_CHECKING:
    import numpy as np

    from probebench.discovery.base import Discovery, ImageFeatures

    Source = Callable[[np.ndarray], list[ImageFeatures]]  # positions -> one image's features each
    Predictor = Callable[[ImageFeatures], Discovery]


@dataclass
class Fitted:
    """A method ready to predict: `predict(features) -> Discovery`, the record's account of the fit
    (settings, loss curve, parameter count; None for untrained methods) and files kept beside the record."""

    predict: Predictor
    details: dict | None = None
    outputs: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class DiscoveryMethod:
    """`fit(train, n, knobs, seed)`: `train(positions)` reads the train role's features, `n` images of it;
    `knobs` are the discovery probe's (each method reads its own)."""

    name: str
    fit: Callable[[Source, int, dict, int], Fitted]
    trained: bool = False  # fits on the train role's images
    needs_attention: bool = False  # reads the class token's attention (skipped on encoders without it)


def _untrained(name: str, needs_attention: bool = False) -> DiscoveryMethod:
    def fit(train: Source, n: int, knobs: dict, seed: int) -> Fitted:
        from probebench.discovery import baselines

        calls: dict[str, Callable[[ImageFeatures], Discovery]] = {
            "lost": lambda f: baselines.lost(f, knobs["lost_k"]),
            "tokencut": lambda f: baselines.tokencut(f, knobs["tokencut_tau"], knobs["tokencut_eps"]),
            "dinoseg": lambda f: baselines.dinoseg(f, knobs["dinoseg_head"]),
            "centre": baselines.centre,
            "whole": baselines.whole,
        }
        return Fitted(calls[name])

    return DiscoveryMethod(name, fit, needs_attention=needs_attention)


def _fit_found(train: Source, n: int, knobs: dict, seed: int) -> Fitted:
    from probebench.discovery import found

    cfg = config_from_knobs(FoundConfig, "found", knobs)
    head, curve = found.train_found(train, n, cfg, seed)
    details = {"config": vars(cfg), **curve, "parameters": _parameters(head)}
    return Fitted(lambda f: found.predict_found(head, f), details)


def _heap(name: str, losses: tuple[str, ...], untrained: bool = False) -> DiscoveryMethod:
    def fit(train: Source, n: int, knobs: dict, seed: int) -> Fitted:
        import torch

        from probebench.discovery import heap

        cfg = config_from_knobs(HeapConfig, "heap", knobs, losses=losses)
        if untrained:  # the group head at its initialisation: what training adds
            torch.manual_seed(seed)
            head = heap.HeapHead(train([0])[0].keys.shape[-1], cfg).eval()
            curve: dict[str, Any] = {"iterations": 0}
        else:
            head, curve = heap.train_heap(train, n, cfg, seed)
            curve = {**curve, "curve": [round(v, 5) for v in curve["curve"]]}
            head.eval()
        details = {"config": _jsonable(vars(cfg)), **curve, "parameters": _parameters(head)}
        outputs = {"heap_head.pt": heap.save_heap(head)} if name == "heap" else {}
        return Fitted(lambda f: heap.predict_heap(head, f), details, outputs)

    return DiscoveryMethod(name, fit, trained=not untrained)


# In the order tasks list them: HEAP and its ablations, FOUND, then the untrained baselines.
METHODS: dict[str, DiscoveryMethod] = {
    m.name: m
    for m in (
        _heap("heap", LOSSES),
        _heap("heap_untrained", LOSSES, untrained=True),
        *(_heap(f"heap_no_{x}", tuple(y for y in LOSSES if y != x)) for x in LOSSES),
        DiscoveryMethod("found", _fit_found, trained=True, needs_attention=True),
        _untrained("lost"),
        _untrained("tokencut"),
        _untrained("dinoseg", needs_attention=True),
        _untrained("centre"),
        _untrained("whole"),
    )
}


def _parameters(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _jsonable(config: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
