"""What extraction finds a built encoder to be, kept in its cache entry's manifest and in every record."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt


class EncoderFacts(BaseModel):
    """What extraction found the built model to be (`Encoder.describe`, kept in the cache entry's manifest).
    The descriptive strings (keys, positions, pooling, final norm) are the adapter's account for readers;
    no program branches on them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    library: Literal["timm", "transformers", "open_clip"]
    num_blocks: StrictInt
    patch_size: StrictInt
    num_prefix_tokens: StrictInt
    prefix_tokens: list[str]
    class_token: StrictBool
    feature_dim: StrictInt
    final_norm: str  # what `norm=True` applies ("final LayerNorm (model.norm)", "none ...")
    has_keys: StrictBool
    keys_kind: str  # "none", "projected", "rotated by the block's RoPE", ...
    positions: str  # how positions reach another grid
    has_attention: StrictBool
    has_projection: StrictBool
    pooling: str  # the model's own pooling head, "none" where it has none

    @classmethod
    def from_manifest(cls, described: dict) -> EncoderFacts:
        """The facts from `Encoder.describe()` as a cache manifest keeps them (its preprocessing is in the
        entry's key, not here). Raises ValidationError on a damaged or foreign manifest."""
        return cls.model_validate({k: v for k, v in described.items() if k != "preprocess"})
