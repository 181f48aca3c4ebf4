"""Adapters for timm models: vision transformers and CNNs, both through `forward_intermediates`.

timm's one feature API replaces per-model hooks. The only hook left is for attention keys and the class
token's attention, which no library returns: a pre-hook on the last block's attention captures its
(normalised) input, and keys and queries are recomputed from the block's own qkv weights. Recomputing rather
than hooking the qkv Linear also covers models that call `F.linear` with separate q/v biases (BEiT, CAE),
where a Linear hook would never fire.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from probebench.encoders.base import Encoder, Features, Preprocess


def timm_preprocess(model: nn.Module) -> Preprocess:
    """Preprocessing from the model's own pretrained config (mean, std, size, crop_pct, interpolation)."""
    import timm.data

    cfg = timm.data.resolve_model_data_config(model)
    return Preprocess(
        input_size=int(cfg["input_size"][-1]),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
    )


def _project(attn: nn.Module, x: torch.Tensor, which: int) -> torch.Tensor:
    """Queries (which=0) or keys (1) of a timm attention module for its input x (B, N, C) -> (B, N, H, D),
    with the module's q/k norm applied as its forward does."""
    dim = attn.qkv.weight.shape[0] // 3
    rows = slice(which * dim, (which + 1) * dim)
    bias = attn.qkv.bias[rows] if getattr(attn.qkv, "bias", None) is not None else None
    if bias is None and which == 0 and getattr(attn, "q_bias", None) is not None:  # BEiT-style q/v biases
        bias = attn.q_bias
    b, n, _ = x.shape
    out = F.linear(x, attn.qkv.weight[rows], bias).view(b, n, attn.num_heads, -1)
    norm = getattr(attn, ("q_norm", "k_norm")[which], None)
    return norm(out) if norm is not None and not isinstance(norm, nn.Identity) else out


def attention_keys(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Keys of a timm attention module for its input x (B, N, C) -> (B, N, C), all heads concatenated."""
    k = _project(attn, x, 1)
    return k.reshape(k.shape[0], k.shape[1], -1)


def class_attention(attn: nn.Module, x: torch.Tensor, prefix: int) -> torch.Tensor:
    """The class token's attention over the patches, x (B, N, C) -> (B, N - prefix, H): softmax over all N
    tokens (prefix tokens included, as the block computes it), then the patch columns."""
    q, k = _project(attn, x[:, :1], 0), _project(attn, x, 1)
    logits = torch.einsum("bqhd,bnhd->bhqn", q.float(), k.float()) * float(attn.scale)
    return logits.softmax(dim=-1)[:, :, 0, prefix:].transpose(1, 2)


def allow_any_size(model: nn.Module) -> nn.Module:
    """Let a timm ViT take inputs of any size that is a multiple of its patch: the position embedding is
    resampled to the input's grid on each call (timm's own `dynamic_img_size`; a no-op at the trained size,
    where timm returns the embedding untouched)."""
    from timm.layers import Format

    if hasattr(model, "dynamic_img_size") and hasattr(model, "patch_embed"):
        model.dynamic_img_size = True
        model.patch_embed.strict_img_size = False
        model.patch_embed.flatten = False
        model.patch_embed.output_fmt = Format.NHWC
    return model


class TimmViT(Encoder):
    """A timm vision transformer (ViT, DeiT, BEiT-style, DINOv2, EVA). Inputs may have any size that is a
    multiple of the patch size (`native` geometry)."""

    library = "timm"

    def __init__(
        self,
        model: nn.Module,
        preprocess: Preprocess,
        *,
        name: str = "",
        projection_head: nn.Module | None = None,
        pos_embed: str = "timm",
    ) -> None:
        super().__init__(allow_any_size(model), preprocess, name=name)
        self.projection_head = projection_head.eval() if projection_head is not None else None
        self.pos_embed = pos_embed

    @contextlib.contextmanager
    def _dino_position_embedding(self, size: tuple[int, int]):
        """For another grid than the trained one, swap in the position embedding DINO's
        `interpolate_pos_encoding` makes (and tell timm the grid is native, so it resamples nothing)."""
        model, p = self.model, self.patch_size
        grid = (size[0] // p, size[1] // p)
        trained = tuple(model.patch_embed.grid_size)
        n = trained[0] * trained[1]
        prefix = 0 if getattr(model, "no_embed_class", False) else self.num_prefix_tokens
        if self.pos_embed != "dino" or grid == trained or model.pos_embed is None or trained[0] != trained[1]:
            yield
            return
        original = model.pos_embed
        side = math.sqrt(n)
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
    def num_prefix_tokens(self) -> int:
        return int(self.model.num_prefix_tokens)

    def feature_dim(self, layer: int) -> int:
        return int(self.model.embed_dim)

    @property
    def has_keys(self) -> bool:
        return hasattr(self.model.blocks[-1].attn, "qkv")

    @property
    def has_attention(self) -> bool:
        # BEiT-style relative position biases enter the logits: not recomputed here, so not offered.
        attn = self.model.blocks[-1].attn
        relative = getattr(attn, "relative_position_bias_table", None) is not None
        return self.has_keys and self.num_prefix_tokens > 0 and hasattr(attn, "scale") and not relative

    @property
    def has_projection(self) -> bool:
        return self.projection_head is not None

    @property
    def final_norm(self) -> str:
        return "final LayerNorm (model.norm)" if not isinstance(self.model.norm, nn.Identity) else "none"

    def forward_features(
        self, images, layers, *, norm=True, keys=False, attention=False, projection=False
    ) -> Features:
        self._require(keys, projection, attention)
        captured: list[torch.Tensor] = []
        handle = None
        if keys or attention:
            last = self.model.blocks[-1].attn
            handle = last.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
        try:
            # projection needs the last block even when only earlier layers are requested.
            wanted = sorted(set(layers) | ({self.num_blocks - 1} if projection else set()))
            with self._dino_position_embedding(tuple(images.shape[-2:])):
                outs = self.model.forward_intermediates(
                    images,
                    indices=wanted,
                    return_prefix_tokens=True,
                    norm=norm,
                    output_fmt="NCHW",
                    intermediates_only=True,
                )
        finally:
            if handle is not None:
                handle.remove()
        feats = Features()
        by_layer = dict(zip(wanted, outs, strict=True))
        for layer in layers:
            grid, prefix = by_layer[layer]
            feats.patches[layer] = grid.permute(0, 2, 3, 1)  # (B, C, h, w) -> (B, h, w, C)
            feats.cls[layer] = prefix
            feats.pooled[layer] = feats.patches[layer].mean(dim=(1, 2))
        b, h, w, _ = next(iter(feats.patches.values())).shape
        if keys:
            k = attention_keys(self.model.blocks[-1].attn, captured[-1])[:, self.num_prefix_tokens :]
            feats.keys = k.reshape(b, h, w, -1)
        if attention:
            a = class_attention(self.model.blocks[-1].attn, captured[-1], self.num_prefix_tokens)
            feats.attention = a.reshape(b, h, w, -1)
        if projection:
            grid, prefix = by_layer[self.num_blocks - 1]
            cls = prefix[:, 0] if norm else self.model.norm(prefix[:, 0])
            feats.projection = self.projection_head(cls)
        return feats


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
        self, images, layers, *, norm=True, keys=False, attention=False, projection=False
    ) -> Features:
        self._require(keys, projection, attention)
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
