"""Adapter for open_clip models: the vision tower only, through open_clip's `forward_intermediates`.

The projection output is CLIP's image embedding (`ln_post` of the class token, times `proj`). Keys are
the last residual block's `nn.MultiheadAttention` input projection of its captured input, and so is the
class token's attention.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from probebench.encoders.attention import KernelInputs
from probebench.encoders.base import Preprocess
from probebench.encoders.tokens import TokenEncoder
from probebench.errors import UserError


class OpenClipViT(TokenEncoder):
    library = "open_clip"

    def __init__(self, model, preprocess: Preprocess, *, name: str = "") -> None:
        super().__init__(model.visual, preprocess, name=name)  # the text tower is dropped here
        if getattr(self.model, "attn_pool", None) is not None or not hasattr(self.model, "class_embedding"):
            raise UserError(
                f"open_clip model {name!r}: only ViT towers with a class token and no attention pooler are "
                "supported; load this model through timm instead"
            )

    @contextlib.contextmanager
    def at_size(self, size: tuple[int, int]):
        """open_clip adds a fixed-size position embedding: for another input size (native geometry), swap
        in one resampled to that grid (timm's resampling), and put the original back afterwards."""
        grid = (size[0] // self.patch_size, size[1] // self.patch_size)
        if tuple(self.model.grid_size) == grid:
            yield
            return
        from timm.layers import resample_abs_pos_embed

        original = self.model.positional_embedding
        resized = resample_abs_pos_embed(
            original[None], new_size=grid, old_size=self.model.grid_size, num_prefix_tokens=1
        )[0]
        self.model.positional_embedding = torch.nn.Parameter(resized, requires_grad=False)
        try:
            yield
        finally:
            self.model.positional_embedding = original

    @property
    def _blocks(self):
        return self.model.transformer.resblocks

    @property
    def num_blocks(self) -> int:
        return len(self._blocks)

    @property
    def patch_size(self) -> int:
        return int(self.model.patch_size[0])

    @property
    def prefix_tokens(self) -> tuple[str, ...]:
        return ("class",)

    def feature_dim(self, layer: int) -> int:
        return int(self.model.transformer.width)

    def last_attention(self) -> nn.Module:
        return self._blocks[-1].attn

    @property
    def has_keys(self) -> bool:
        return isinstance(self.last_attention(), nn.MultiheadAttention)

    @property
    def keys_kind(self) -> str:
        return "projected" if self.has_keys else "none"

    @property
    def has_projection(self) -> bool:
        return getattr(self.model, "proj", None) is not None

    @property
    def positions(self) -> str:
        return "absolute embedding, resampled to each input's grid by timm (resample_abs_pos_embed, bicubic)"

    @property
    def final_norm(self) -> str:
        return "final LayerNorm (visual.ln_post)"

    def run_blocks(self, images, layers, norm, projection):
        out = self.model.forward_intermediates(
            images,
            indices=layers,
            normalize_intermediates=norm,
            intermediates_only=not projection,
            output_fmt="NCHW",
            output_extra_tokens=True,
        )
        by_layer = {
            layer: (prefix, grid.permute(0, 2, 3, 1))
            for layer, grid, prefix in zip(
                layers, out["image_intermediates"], out["image_intermediates_prefix"], strict=True
            )
        }
        return by_layer, (out["image_features"] if projection else None)

    def rerun_attention(self, attn, args, kwargs, rotated=True) -> KernelInputs:
        """torch's `nn.MultiheadAttention` projects q and k with its `in_proj` (no rotation, no bias term in
        the logits); the oracle test holds this to the module's own `need_weights` attention."""
        x = args[0] if args else kwargs["query"]
        if not getattr(attn, "batch_first", False):
            x = x.transpose(0, 1)
        b, n, dim = x.shape
        heads = attn.num_heads
        w, bias = attn.in_proj_weight, attn.in_proj_bias
        q = F.linear(x, w[:dim], bias[:dim]).view(b, n, heads, -1).transpose(1, 2)
        k = F.linear(x, w[dim : 2 * dim], bias[dim : 2 * dim]).view(b, n, heads, -1).transpose(1, 2)
        mask = kwargs.get("attn_mask")
        if mask is not None and mask.dtype == torch.bool:  # torch's MHA: True means "may not attend"
            mask = ~mask
        return KernelInputs(q, k, mask, (dim // heads) ** -0.5)

    def project(self, head_input, norm):
        return head_input
