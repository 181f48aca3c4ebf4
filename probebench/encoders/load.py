"""From a registry entry to a loaded `Encoder`, for every source kind (`probebench.encoders.sources`).

Two steps, kept apart so a warm run never builds a model:
- `resolve_encoder(entry)` is cheap: it finds the weights (cache, package, file), their identity (sha256,
  pinned or resolved revision, seed) and the preprocessing, without instantiating anything. The
  feature-cache key is made from it.
- `build_encoder(resolved)` instantiates the model and wraps it in the adapter for its library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from probebench.encoders.base import Encoder, Preprocess
from probebench.encoders.registry import EncoderEntry
from probebench.encoders.sources import SOURCE_KINDS, LibraryConfig, Located
from probebench.errors import UserError, WeightsUnavailable


@dataclass(frozen=True)
class ResolvedEncoder:
    """A resolved entry: everything that determines the features, known before any model is built."""

    entry: EncoderEntry
    weights_id: str  # sha256 of the weights file, the resolved hub commit, or the random seed
    weights_path: str | None
    # None only where the weights are unavailable and the library's config lives beside them (transformers)
    preprocess: Preprocess | None
    versions: dict = field(default_factory=dict)
    # preprocessing field -> where its value came from (the library's config, or the entry's override)
    provenance: dict = field(default_factory=dict)


def _override(config: LibraryConfig, entry: EncoderEntry) -> tuple[Preprocess, dict[str, str]]:
    """The library's preprocessing with the entry's overrides; each value says where it came from."""
    over = {k: v for k, v in entry.preprocess.model_dump().items() if v is not None}
    provenance = {k: config.origin for k in config.preprocess.as_dict()}
    provenance |= {k: "the registry entry's preprocess" for k in over}
    return Preprocess(**{**config.preprocess.as_dict(), **over}), provenance


def resolve_encoder(
    entry: EncoderEntry, weights: Path | None = None, *, strict_available: bool = True, download: bool = True
) -> ResolvedEncoder:
    """Find an entry's weights and preprocessing without building the model.

    weights: a file given by the user (`--weights`), for sources whose file cannot be downloaded here.
    strict_available: raise WeightsUnavailable when the weights cannot be found; otherwise the result has
    weights_id "unavailable" (used by `probebench list`).
    download: fetch a `checkpoint` source's URL when the file is missing (availability checks never do).
    """
    kind = SOURCE_KINDS[entry.source.kind]  # the schema admits no other kind
    if weights is not None:
        if not kind.takes_weights_file:
            raise UserError(
                f"--weights: encoder {entry.name!r} loads through {entry.source.kind}, which finds its own "
                "weights; --weights is for checkpoint and package sources"
            )
        if not Path(weights).is_file():
            raise UserError(f"--weights {weights}: no such file; give the path of the weights file")
    import timm

    versions = {"torch": torch.__version__, "timm": timm.__version__}
    try:
        located = kind.locate(entry, weights, download)
    except WeightsUnavailable:
        if strict_available:
            raise
        located = Located("unavailable", None)
    try:
        pre, provenance = _override(kind.configure(entry), entry)
    except WeightsUnavailable:  # the library's config lives beside the weights (transformers): not here
        if located.weights_id != "unavailable":
            raise
        pre, provenance = None, {}
    return ResolvedEncoder(
        entry, located.weights_id, located.weights_path, pre, versions | located.versions, provenance
    )


def build_encoder(spec: ResolvedEncoder) -> Encoder:
    """Instantiate the model for a resolved spec and wrap it in its library's adapter."""
    return SOURCE_KINDS[spec.entry.source.kind].build(spec)
