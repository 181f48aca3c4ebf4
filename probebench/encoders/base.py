"""The one contract every encoder meets, whatever library it came from.

Probes never ask where a model came from: they ask an `Encoder` for features of a batch at some layers and get
a `Features` with fixed shapes. Layers are block indices (stage indices for CNNs); negative indices count from
the end, as in Python, and "a/b" names block a (1-based) of a b-block model scaled to this depth; all are
resolved to absolute indices before anything is cached.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from PIL import Image
from torch import nn

from probebench.errors import UserError
from probebench.geometry import Framing

TOKEN_KINDS = ("cls", "patches", "pooled", "head", "keys", "attention", "projection")
SCALED_LAYER = re.compile(r"^([1-9][0-9]*)/([1-9][0-9]*)$")


def is_layer(layer: int | str) -> bool:
    """Whether `layer` is a layer request: an int, "all", "last" or a scaled "a/b" with a <= b."""
    if isinstance(layer, int) and not isinstance(layer, bool):
        return True
    m = SCALED_LAYER.match(str(layer))
    return layer in ("all", "last") or (m is not None and int(m[1]) <= int(m[2]))


def block_indices(
    layers: list[int | str] | tuple[int | str, ...], num_blocks: int, order: str = "declared"
) -> list[int]:
    """Requested layers -> absolute block indices, each once ("all" is every block; not range-checked).
    `order`: "declared" keeps the request's order (a fixed-layer probe concatenates its layers so),
    "sorted" sorts them (a cache entry holds its layers so)."""
    if "all" in layers:
        return list(range(num_blocks))
    indices = list(dict.fromkeys(block_index(x, num_blocks) for x in layers))
    return sorted(indices) if order == "sorted" else indices


def block_index(layer: int | str, num_blocks: int) -> int:
    """One requested layer -> an absolute block index (not range-checked).

    int: a block index, negative from the end; "last": the last block; "a/b": block a (1-based) of a b-block
    model scaled to this depth, round-half-up(num_blocks * a / b) - 1, at least 0. The segmentation probe's
    blocks 4, 6, 8, 12 of a 12-block ViT are "4/12" ... "12/12": indices 3, 5, 7, 11 at depth 12, 7, 11, 15,
    23 at depth 24, and for a 6-layer CNN its stages 1, 2, 3 and the final map 5.
    """
    if layer == "last":
        return num_blocks - 1
    if isinstance(layer, str):
        m = SCALED_LAYER.match(layer)
        if m is None:
            raise UserError(
                f"layer {layer!r}: give a block index, 'last', 'all' or a scaled 'a/b' such as 4/12"
            )
        return max(0, math.floor(num_blocks * int(m[1]) / int(m[2]) + 0.5) - 1)
    return layer + num_blocks if layer < 0 else layer


def prefix_names(class_token, distillation_token, register_tokens) -> tuple[str, ...]:
    """The prefix tokens a model's parameters define, in the order timm, transformers and the DINO family put
    them before the patches: the class token, a distillation token (DeiT), then registers. Each argument is
    the parameter or None; `register_tokens` is (1, R, C)."""
    names = ["class"] * (class_token is not None) + ["distillation"] * (distillation_token is not None)
    return (*names, *["register"] * (int(register_tokens.shape[1]) if register_tokens is not None else 0))


@dataclass(frozen=True)
class Preprocess:
    """Eval-time preprocessing: resize the shorter side to `resize`, centre-crop `input_size`, normalise.

    `resize = round(input_size / crop_pct)`, the convention of timm and of the papers' `Resize(256) +
    CenterCrop(224)`.
    """

    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def resize(self) -> int:
        return int(round(self.input_size / self.crop_pct))

    def framing(self, mode: str = "resize", multiple: int = 1, max_side: int | None = None) -> Framing:
        """How images become inputs: `resize` (this preprocessing) or `native` (own size, normalised, padded
        to a multiple of the patch size); see `probebench.geometry`."""
        return Framing(mode, **asdict(self), multiple=multiple, max_side=max_side)

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL RGB image -> float tensor (3, input_size, input_size), the `resize` framing."""
        framing = self.framing("resize")
        return lambda image: framing(image)[0]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Features:
    """What an encoder returns for a batch of B images, per requested (absolute) layer.

    cls:        layer -> (B, P, C)  prefix tokens (class token, registers), in `Encoder.prefix_tokens` order;
                P = 0 for CNNs and for ViTs without prefix tokens
    patches:    layer -> (B, h, w, C)  patch tokens as a grid (CNNs: the feature map)
    pooled:     layer -> (B, C)  mean of the patch tokens (CNNs: global average pool)
    keys:       (B, h, w, Ck)  keys of the last attention block at the patch positions, as its attention
                kernel receives them (rotated where the block applies RoPE), on request
    attention:  (B, h, w, H)  the last block's attention from the class token to each patch, per head (softmax
                over all tokens with the block's own position terms, as DINO's `get_last_selfattention` then
                `[:, :, 0, prefix:]`), on request; only for models with a class token
    projection: (B, D)  projection-head output, on request, where the checkpoint carries a head
    head:       (B, C)  the model's own pooling of its last block (timm's `forward_head(pre_logits=True)`:
                SigLIP's attention pooler, a global average with its norm, or the class token), on request
    """

    cls: dict[int, torch.Tensor] = field(default_factory=dict)
    patches: dict[int, torch.Tensor] = field(default_factory=dict)
    pooled: dict[int, torch.Tensor] = field(default_factory=dict)
    keys: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    projection: torch.Tensor | None = None
    head: torch.Tensor | None = None


class Encoder(ABC):
    """A frozen image encoder behind one interface. Subclasses adapt one library each."""

    #: library the adapter wraps ("timm", "transformers", "open_clip")
    library: str = ""

    def __init__(self, model: nn.Module, preprocess: Preprocess, *, name: str = "") -> None:
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.name = name

    # -- what the encoder is -----------------------------------------------------------------------------
    @property
    @abstractmethod
    def num_blocks(self) -> int:
        """Number of addressable layers (transformer blocks, or CNN stages)."""

    @property
    @abstractmethod
    def patch_size(self) -> int:
        """Pixels per patch-grid cell at the last layer (the total stride for CNNs)."""

    @property
    def prefix_tokens(self) -> tuple[str, ...]:
        """What each token before the patches is, in order: "class", "distillation" or "register"; () for
        CNNs and for ViTs without prefix tokens (SigLIP). Read from the model, never assumed."""
        return ()

    @property
    def num_prefix_tokens(self) -> int:
        """Class token plus register/distillation tokens; 0 for CNNs."""
        return len(self.prefix_tokens)

    @property
    def class_token(self) -> bool:
        """Whether the model has a class token (always the first prefix token). Registers are not one."""
        return self.prefix_tokens[:1] == ("class",)

    @abstractmethod
    def feature_dim(self, layer: int) -> int:
        """Channel count C of the tokens at `layer`."""

    def stride(self, layer: int) -> int:
        """Input pixels per cell of `layer`'s grid: the patch size for transformers, a stage's reduction."""
        return self.patch_size

    @property
    def has_keys(self) -> bool:
        return False

    @property
    def has_attention(self) -> bool:
        """Whether the last block's class-token attention can be returned: transformers with keys and a
        class token (a register never stands in for it)."""
        return self.has_keys and self.class_token

    @property
    def keys_kind(self) -> str:
        """What `keys` are, for the record: 'none', or how the block's positions reach them."""
        return "none"

    @property
    def positions(self) -> str:
        """How positions enter the model and reach grids other than the trained one, for the record."""
        return "convolutional: any input size"

    @property
    def has_projection(self) -> bool:
        return False

    @property
    def pooling(self) -> str:
        """The model's own pooling of its last block, offered as the `head` feature ('none' if not)."""
        return "none"

    @property
    def has_head(self) -> bool:
        return self.pooling != "none"

    @property
    def final_norm(self) -> str:
        """What `norm=True` applies, for the record ('final LayerNorm', 'none', ...)."""
        return "none"

    def describe(self) -> dict:
        """The encoder's facts, for result records and `probebench list`."""
        return {
            "library": self.library,
            "num_blocks": self.num_blocks,
            "patch_size": self.patch_size,
            "num_prefix_tokens": self.num_prefix_tokens,
            "prefix_tokens": list(self.prefix_tokens),
            "class_token": self.class_token,
            "feature_dim": self.feature_dim(self.num_blocks - 1),
            "final_norm": self.final_norm,
            "has_keys": self.has_keys,
            "keys_kind": self.keys_kind,
            "positions": self.positions,
            "has_attention": self.has_attention,
            "has_projection": self.has_projection,
            "pooling": self.pooling,
            "preprocess": self.preprocess.as_dict() if self.preprocess is not None else None,
        }

    # -- features ----------------------------------------------------------------------------------------
    def resolve_layers(self, layers: list[int | str] | tuple[int | str, ...]) -> list[int]:
        """Negative indices count from the end, "all" is every block, "a/b" a scaled block; out of range is a
        user error."""
        for layer in [] if "all" in layers else layers:
            if not 0 <= block_index(layer, self.num_blocks) < self.num_blocks:
                raise UserError(
                    f"layer {layer} is out of range for encoder {self.name or self.library} with "
                    f"{self.num_blocks} blocks; use 0..{self.num_blocks - 1} or negative indices"
                )
        return block_indices(layers, self.num_blocks, order="sorted")

    @abstractmethod
    def forward_features(
        self,
        images: torch.Tensor,
        layers: list[int],
        *,
        norm: bool = True,
        keys: bool = False,
        attention: bool = False,
        projection: bool = False,
        head: bool = False,
    ) -> Features:
        """images (B, 3, H, W) normalised -> Features at the absolute `layers`.

        norm: apply the encoder's final normalisation to every requested layer's tokens (as timm's
        `forward_intermediates(norm=True)` does); the papers' retrieval uses normed tokens, their segmentation
        head un-normed ones.
        """

    def __call__(self, images: torch.Tensor, layers: list[int] | None = None, **kw) -> Features:
        layers = self.resolve_layers(layers if layers is not None else [-1])
        with torch.inference_mode():
            return self.forward_features(images, layers, **kw)

    def _require(self, keys: bool, projection: bool, attention: bool = False, head: bool = False) -> None:
        if head and not self.has_head:
            raise UserError(f"encoder {self.name!r} has no pooling head of its own; use the pooled feature")
        if keys and not self.has_keys:
            raise UserError(f"encoder {self.name!r} has no attention keys (it is not a transformer)")
        if attention and not self.has_attention:
            raise UserError(f"encoder {self.name!r} has no class-token attention to return")
        if projection and not self.has_projection:
            raise UserError(f"encoder {self.name!r} carries no projection head in its weights")
