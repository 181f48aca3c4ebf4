"""Adapters for timm models: vision transformers and CNNs, both through `forward_intermediates`.

timm's one feature API replaces per-model hooks. Keys and the class token's attention, which no library
returns, are what the last block's attention hands to its kernel (`probebench.encoders.attention`): rotated
by the block's RoPE (DINOv3, EVA-02, PE, timm's `*_rope_*` ViTs), with its relative position bias (BEiT),
with its q/k norms and separate q/v biases, because the block itself computes them.

Inputs of any size that is a multiple of the patch work for every ViT class, each the library's own way: the
position embedding and RoPE are resampled per input (timm's `dynamic_img_size`), and BEiT-class models,
which have no dynamic mode, are resized to the input by their own `set_input_size` (timm's
`resize_rel_pos_bias_table` for the relative position bias) for the call and restored afterwards.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from probebench.encoders.attention import KernelInputs, rerun_timm
from probebench.encoders.base import Encoder, Features, Preprocess, prefix_names
from probebench.encoders.tokens import TokenEncoder
from probebench.errors import UserError


def allow_any_size(model: nn.Module) -> nn.Module:
    """Let a timm ViT take inputs of any size that is a multiple of its patch: the position embedding (and
    RoPE) is resampled to the input's grid on each call (timm's own `dynamic_img_size`; a no-op at the
    trained size, where timm returns the embedding untouched). Models without a dynamic mode (BEiT) are left
    as they are: `TimmViT` resizes them per call."""
    from timm.layers import Format

    if hasattr(model, "dynamic_img_size") and hasattr(model, "patch_embed"):
        model.dynamic_img_size = True
        model.patch_embed.strict_img_size = False
        model.patch_embed.flatten = False
        model.patch_embed.output_fmt = Format.NHWC
    return model


def prefix_layout(model: nn.Module) -> tuple[str, ...]:
    """The prefix tokens of a timm ViT, in sequence order, read from its parameters: the class token, a
    distillation token (DeiT distilled), then registers. A count that disagrees with the model's own
    `num_prefix_tokens` is a layout this adapter does not understand: refused, never guessed."""
    names = prefix_names(*(getattr(model, n, None) for n in ("cls_token", "dist_token", "reg_token")))
    if len(names) != int(getattr(model, "num_prefix_tokens", len(names))):
        raise UserError(
            f"{type(model).__name__}: {model.num_prefix_tokens} prefix tokens, of which probebench can name "
            f"only {list(names)}; this model's token layout is not supported"
        )
    return names


@contextlib.contextmanager
def restoring(modules: list[nn.Module]):
    """Put back every parameter, buffer and attribute of `modules` (not their children) on exit."""
    saved = [
        (
            m,
            {
                k: dict(v) if k in ("_parameters", "_buffers") else v
                for k, v in vars(m).items()
                if k != "_modules"
            },
        )
        for m in modules
    ]
    try:
        yield
    finally:
        for module, state in saved:
            module.__dict__.update(state)


class TimmViT(TokenEncoder):
    """A timm vision transformer (ViT, DeiT, BEiT, CAE, DINOv2, DINOv3, EVA-02, SigLIP, PE, ...). Inputs may
    have any size that is a multiple of the patch size (`native` geometry)."""

    library = "timm"

    def __init__(
        self,
        model: nn.Module,
        preprocess: Preprocess,
        *,
        name: str = "",
        projection_head: nn.Module | None = None,
        pos_embed: str = "timm",
        rotate_keys: bool = True,
    ) -> None:
        super().__init__(allow_any_size(model), preprocess, name=name)
        self.projection_head = projection_head.eval() if projection_head is not None else None
        self.pos_embed = pos_embed
        self.rotate_keys = rotate_keys
        self._prefix = prefix_layout(model)
        # BEiT-class models fix their grid at construction (relative position bias, no dynamic mode).
        self._resize_per_input = not hasattr(model, "dynamic_img_size") and hasattr(model, "set_input_size")

    @contextlib.contextmanager
    def at_size(self, size: tuple[int, int]):
        """Make the model read a grid other than the trained one (native geometry):
        - `pos_embed: dino`: swap in the position embedding DINO's `interpolate_pos_encoding` makes (and tell
          timm the grid is native, so it resamples nothing);
        - BEiT-class models: the library's own `set_input_size` for the call, everything restored after;
        - otherwise timm's `dynamic_img_size` does it inside the forward."""
        model, p = self.model, self.patch_size
        grid = (size[0] // p, size[1] // p)
        trained = tuple(model.patch_embed.grid_size)
        if grid == trained:
            yield
        elif getattr(getattr(model, "rope", None), "feat_shape", None) is not None:
            raise UserError(
                f"encoder {self.name or type(model).__name__!r}: its RoPE was built for a fixed "
                f"{trained[0]}x{trained[1]} grid, so it cannot read a {grid[0]}x{grid[1]} one; build it with "
                "timm.create_model(..., dynamic_img_size=True), as probebench's loader does"
            )
        elif self._resize_per_input:
            touched = [
                m for m in model.modules() if m in (model, model.patch_embed) or hasattr(m, "window_size")
            ]
            with restoring(touched):
                model.set_input_size(img_size=(grid[0] * p, grid[1] * p))
                yield
        elif self.pos_embed == "dino" and model.pos_embed is not None and trained[0] == trained[1]:
            with self._dino_position_embedding(grid, trained):
                yield
        else:
            yield

    @contextlib.contextmanager
    def _dino_position_embedding(self, grid: tuple[int, int], trained: tuple[int, int]):
        model = self.model
        prefix = 0 if getattr(model, "no_embed_class", False) else self.num_prefix_tokens
        original = model.pos_embed
        side = math.sqrt(trained[0] * trained[1])
        patch = original[:, prefix:].reshape(1, trained[0], trained[1], -1).permute(0, 3, 1, 2)
        resized = F.interpolate(
            patch.float(), scale_factor=((grid[0] + 0.1) / side, (grid[1] + 0.1) / side), mode="bicubic"
        )
        resized = resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(original.dtype)
        model.pos_embed = nn.Parameter(torch.cat([original[:, :prefix], resized], dim=1), requires_grad=False)
        model.patch_embed.grid_size = grid
        try:
            yield
        finally:
            model.pos_embed, model.patch_embed.grid_size = original, trained

    @property
    def num_blocks(self) -> int:
        return len(self.model.blocks)

    @property
    def patch_size(self) -> int:
        return int(self.model.patch_embed.patch_size[0])

    @property
    def prefix_tokens(self) -> tuple[str, ...]:
        return self._prefix

    def feature_dim(self, layer: int) -> int:
        return int(self.model.embed_dim)

    def last_attention(self) -> nn.Module:
        return self.model.blocks[-1].attn

    @property
    def has_keys(self) -> bool:
        # timm's attention modules hand q, k and the mask to the fused kernel when `fused_attn` is set.
        return hasattr(self.last_attention(), "fused_attn")

    @property
    def rope(self) -> bool:
        """Whether the blocks rotate queries and keys by position (RoPE)."""
        return getattr(self.model, "rope", None) is not None

    @property
    def relative_bias(self) -> bool:
        attn = self.last_attention()
        return getattr(attn, "relative_position_bias_table", None) is not None or (
            getattr(self.model, "rel_pos_bias", None) is not None
        )

    @property
    def keys_kind(self) -> str:
        if not self.has_keys:
            return "none"
        if self.rope:
            return "rotated by the block's RoPE" if self.rotate_keys else "before RoPE (un-rotated)"
        if self.relative_bias:
            return "projected; the relative position bias enters the logits, not the keys"
        return "projected"

    @property
    def positions(self) -> str:
        if self.rope:
            return "rotary (RoPE), built for each input's grid (timm's dynamic_img_size)"
        if self._resize_per_input:
            bias = "relative position bias" if self.relative_bias else "absolute embedding"
            return (
                f"{bias}, resized to each input's grid by timm's set_input_size (resize_rel_pos_bias_table)"
            )
        if self.pos_embed == "dino":
            return "absolute embedding, DINO's interpolate_pos_encoding for other grids"
        return "absolute embedding, resampled to each input's grid by timm (resample_abs_pos_embed, bicubic)"

    @property
    def has_projection(self) -> bool:
        return self.projection_head is not None

    @property
    def final_norm(self) -> str:
        return "final LayerNorm (model.norm)" if not isinstance(self.model.norm, nn.Identity) else "none"

    def run_blocks(self, images, layers, norm, projection):
        outs = self.model.forward_intermediates(
            images,
            indices=layers,
            return_prefix_tokens=self.num_prefix_tokens > 0,
            norm=norm,
            output_fmt="NCHW",
            intermediates_only=True,
        )
        by_layer = {}
        for layer, out in zip(layers, outs, strict=True):
            grid, prefix = (
                out if self.num_prefix_tokens else (out, out.new_zeros(out.shape[0], 0, out.shape[1]))
            )
            by_layer[layer] = (prefix, grid.permute(0, 2, 3, 1))  # (B, C, h, w) -> (B, h, w, C)
        return by_layer, (by_layer[self.num_blocks - 1][0] if projection else None)

    def rerun_attention(
        self, attn: nn.Module, args: tuple, kwargs: dict, rotated: bool = True
    ) -> KernelInputs:
        if not rotated:
            kwargs = {**kwargs, "rope": None}
        return rerun_timm(attn, args, kwargs)

    @property
    def pooling(self) -> str:
        pool = getattr(self.model, "global_pool", "")
        if not pool or not hasattr(self.model, "forward_head"):
            return "none"
        what = {"map": "attention pooler", "avg": "mean of the patch tokens", "token": "class token"}
        return f"timm forward_head, pre-logits: {what.get(pool, pool)} (global_pool={pool!r})"

    def pool(self, prefix, patches, normed):
        tokens = torch.cat([prefix, patches.flatten(1, 2)], dim=1)
        return self.model.forward_head(tokens if normed else self.model.norm(tokens), pre_logits=True)

    def project(self, head_input, norm):
        cls = head_input[:, 0] if norm else self.model.norm(head_input[:, 0])
        return self.projection_head(cls)


class TimmCNN(Encoder):
    """A timm convolutional network. Layers 0..S-1 are its stages (timm's `feature_info`); layer S is the
    final feature map the classifier pools (after EfficientNet's conv head), so layer -1 is the usual
    penultimate feature of CNN linear probes."""

    library = "timm"

    def __init__(self, model: nn.Module, preprocess: Preprocess, *, name: str = "") -> None:
        super().__init__(model, preprocess, name=name)
        self._info = self.model.feature_info  # one entry per stage: channels, reduction

    @property
    def num_blocks(self) -> int:
        return len(self._info) + 1

    @property
    def patch_size(self) -> int:
        return int(self._info[-1]["reduction"])

    @property
    def num_prefix_tokens(self) -> int:
        return 0

    def feature_dim(self, layer: int) -> int:
        return int(self.model.num_features if layer == len(self._info) else self._info[layer]["num_chs"])

    def stride(self, layer: int) -> int:
        return int(self._info[min(layer, len(self._info) - 1)]["reduction"])

    @property
    def final_norm(self) -> str:
        return "none (the last layer is the classifier's input map: conv head + BN + activation)"

    def forward_features(
        self, images, layers, *, norm=True, keys=False, attention=False, projection=False, head=False
    ) -> Features:
        self._require(keys, projection, attention, head)
        stages = [layer for layer in layers if layer < len(self._info)]
        final, inter = self.model.forward_intermediates(images, indices=stages or [0], norm=norm)
        maps = dict(zip(stages, inter, strict=False)) | {len(self._info): final}
        feats = Features()
        for layer in layers:
            fmap = maps[layer]
            feats.patches[layer] = fmap.permute(0, 2, 3, 1)
            feats.cls[layer] = fmap.new_zeros(fmap.shape[0], 0, fmap.shape[1])
            feats.pooled[layer] = fmap.mean(dim=(2, 3))
        return feats


def wrap_timm(
    model: nn.Module,
    preprocess: Preprocess,
    *,
    name: str = "",
    projection_head: nn.Module | None = None,
    pos_embed: str = "timm",
) -> Encoder:
    """Pick the adapter by what the model is: transformers have `blocks` of attention, CNNs do not."""
    if hasattr(model, "patch_embed") and hasattr(model, "blocks"):
        return TimmViT(model, preprocess, name=name, projection_head=projection_head, pos_embed=pos_embed)
    return TimmCNN(model, preprocess, name=name)
