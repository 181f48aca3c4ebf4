"""Adapter for open_clip models: the vision tower only, through open_clip's `forward_intermediates`.

The projection output is CLIP's image embedding (`ln_post` of the class token, times `proj`). Keys are
recomputed from the last residual block's `nn.MultiheadAttention` input projection, captured by a pre-hook,
and so is the class token's attention.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from probebench.encoders.base import Encoder, Features, Preprocess


class OpenClipViT(Encoder):
    library = "open_clip"

    def __init__(self, model, preprocess: Preprocess, *, name: str = "") -> None:
        super().__init__(model.visual, preprocess, name=name)  # the text tower is dropped here

    @contextlib.contextmanager
    def _position_embedding_for(self, size: tuple[int, int]):
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
    def num_prefix_tokens(self) -> int:
        return 1

    def feature_dim(self, layer: int) -> int:
        return int(self.model.transformer.width)

    @property
    def has_keys(self) -> bool:
        return hasattr(self._blocks[-1].attn, "in_proj_weight")

    @property
    def has_attention(self) -> bool:
        return self.has_keys

    @property
    def has_projection(self) -> bool:
        return getattr(self.model, "proj", None) is not None

    @property
    def final_norm(self) -> str:
        return "final LayerNorm (visual.ln_post)"

    def forward_features(
        self, images, layers, *, norm=True, keys=False, attention=False, projection=False
    ) -> Features:
        self._require(keys, projection, attention)
        captured: list[torch.Tensor] = []
        block = self._blocks[-1]
        hook = keys or attention
        handle = (
            block.attn.register_forward_pre_hook(lambda m, args: captured.append(args[0])) if hook else None
        )
        try:
            with self._position_embedding_for(images.shape[-2:]):
                out = self.model.forward_intermediates(
                    images,
                    indices=layers,
                    normalize_intermediates=norm,
                    intermediates_only=not projection,
                    output_fmt="NCHW",
                    output_extra_tokens=True,
                )
        finally:
            if handle is not None:
                handle.remove()
        feats = Features()
        for layer, grid, prefix in zip(
            layers, out["image_intermediates"], out["image_intermediates_prefix"], strict=True
        ):
            feats.patches[layer] = grid.permute(0, 2, 3, 1)
            feats.cls[layer] = prefix
            feats.pooled[layer] = feats.patches[layer].mean(dim=(1, 2))
        b, h, w, _ = next(iter(feats.patches.values())).shape
        if hook:
            x = captured[-1]
            if not getattr(self.model.transformer, "batch_first", True):
                x = x.transpose(0, 1)
            dim = x.shape[-1]
            weight, bias = block.attn.in_proj_weight, block.attn.in_proj_bias
            k = F.linear(x, weight[dim : 2 * dim], bias[dim : 2 * dim])
            if keys:
                feats.keys = k[:, 1:].reshape(b, h, w, dim)
            if attention:
                heads = block.attn.num_heads
                q = F.linear(x[:, :1], weight[:dim], bias[:dim]).view(b, 1, heads, -1)
                per_head = k.view(b, -1, heads, dim // heads).float()
                logits = torch.einsum("bqhd,bnhd->bhqn", q.float(), per_head)
                attn = (logits * (dim // heads) ** -0.5).softmax(dim=-1)[:, :, 0, 1:]
                feats.attention = attn.transpose(1, 2).reshape(b, h, w, heads)
        if projection:
            feats.projection = out["image_features"]
        return feats
