"""Adapter for transformers vision models (ViT, BEiT, DeiT, ViT-MAE, DINOv2): hidden states per block.

`hidden_states[i + 1]` is the output of block i (index 0 is the embeddings). The final norm is the model's
`layernorm` (or `norm`) where it has one; BEiT checkpoints configured for mean pooling replace it by an
identity, which the record then says. Keys and the class token's attention are what the last attention block
hands to its attention interface (`probebench.encoders.attention`): with BEiT's relative position bias and
DINOv3's rotary embedding, because the block itself applies them.
"""

from __future__ import annotations

import inspect
import re

from torch import nn

from probebench.encoders.attention import KernelInputs, rerun_sdpa, rerun_transformers
from probebench.encoders.base import Preprocess, prefix_names
from probebench.encoders.tokens import TokenEncoder
from probebench.errors import UserError

_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL codes used by transformers image processors


def hf_preprocess(processor_config: dict) -> Preprocess:
    """Preprocessing from a transformers image processor config (preprocessor_config.json)."""
    size = processor_config.get("size", 224)
    crop = processor_config.get("crop_size")
    if isinstance(size, dict):
        size = size.get("shortest_edge") or size.get("height")
    if isinstance(crop, dict):
        crop = crop.get("height")
    do_crop = processor_config.get("do_center_crop", False) and crop
    input_size = int(crop) if do_crop else int(size)
    # Without a centre crop the processor resizes straight to the input size: crop_pct 1.
    crop_pct = input_size / int(size) if do_crop else 1.0
    return Preprocess(
        input_size=input_size,
        crop_pct=crop_pct,
        interpolation=_RESAMPLE.get(int(processor_config.get("resample", 2)), "bilinear"),
        mean=tuple(float(v) for v in processor_config.get("image_mean", (0.5, 0.5, 0.5))),
        std=tuple(float(v) for v in processor_config.get("image_std", (0.5, 0.5, 0.5))),
    )


def hf_prefix_layout(model: nn.Module) -> tuple[str, ...]:
    """The prefix tokens of a transformers ViT, in sequence order, read from its embedding parameters: the
    class token, a distillation token (DeiT), then registers (DINOv2 with registers, DINOv3)."""
    emb = getattr(model, "embeddings", None)
    return prefix_names(
        *(getattr(emb, n, None) for n in ("cls_token", "distillation_token", "register_tokens"))
    )


class HFViT(TokenEncoder):
    library = "transformers"
    # The key projection: `encoder.layer.N.attention.attention.key` (transformers 4),
    # `layer(s).N.attention.k_proj` (transformers 5); its parent module is the attention block.
    _KEY_RE = re.compile(r"layers?\.(\d+)\.attention\.(?:attention\.key|k_proj)$")
    _NORMS = ("layernorm", "norm", "post_layernorm")

    def __init__(self, model: nn.Module, preprocess: Preprocess, *, name: str = "") -> None:
        super().__init__(model, preprocess, name=name)
        cfg = model.config
        self._blocks = int(cfg.num_hidden_layers)
        self._dim = int(cfg.hidden_size)
        self._patch = int(cfg.patch_size)
        self._norm_name = next((n for n in self._NORMS if hasattr(model, n)), None)
        self._norm = getattr(model, self._norm_name) if self._norm_name else None
        self._prefix = hf_prefix_layout(model)
        modules = dict(model.named_modules())
        keys = [(int(m.group(1)), n) for n in modules if (m := self._KEY_RE.search(n))]
        last = max(keys)[1] if keys else None
        self._attn = modules[last.rsplit(".", 1)[0]] if last is not None else None
        # transformers 5's attention blocks (q_proj, k_proj) call the attention interface their config names;
        # blocks not yet moved to it (query, key: data2vec-vision) reach keys and attention only through
        # their SDPA variant, which calls torch's fused kernel
        self._interface = last is not None and last.endswith("k_proj") and hasattr(self._attn, "config")
        self._sdpa = last is not None and "Sdpa" in type(self._attn).__name__
        self._interpolates = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters

    @property
    def num_blocks(self) -> int:
        return self._blocks

    @property
    def patch_size(self) -> int:
        return self._patch

    @property
    def prefix_tokens(self) -> tuple[str, ...]:
        return self._prefix

    def feature_dim(self, layer: int) -> int:
        return self._dim

    def last_attention(self) -> nn.Module:
        return self._attn

    @property
    def has_keys(self) -> bool:
        return self._interface or self._sdpa

    @property
    def rope(self) -> bool:
        return any("rope" in k for k in self.model.config.to_dict())

    @property
    def keys_kind(self) -> str:
        if not self.has_keys:
            return "none"
        if self.rope:
            return "rotated by the block's RoPE"
        cfg = self.model.config
        if getattr(cfg, "use_relative_position_bias", False) or getattr(
            cfg, "use_shared_relative_position_bias", False
        ):
            return "projected; the relative position bias enters the logits, not the keys"
        return "projected"

    @property
    def positions(self) -> str:
        kind = "rotary (RoPE)" if self.rope else "absolute embedding"
        if "relative position bias" in self.keys_kind:
            kind = "relative position bias"
        return f"{kind}; other grids through the model's own interpolate_pos_encoding"

    @property
    def final_norm(self) -> str:
        if self._norm is None or isinstance(self._norm, nn.Identity):
            return "none (the model has no final LayerNorm)"
        return f"final LayerNorm (model.{self._norm_name})"

    def run_blocks(self, images, layers, norm, projection):
        b, _, height, width = images.shape
        size = getattr(self.model.config, "image_size", None)
        # Inputs at another size than the trained one (native geometry) resample the position embedding (and
        # BEiT's relative position bias); at the trained size nothing is passed, so the numbers are the
        # model's own.
        other_size = isinstance(size, int) and (height, width) != (size, size)
        extra = {"interpolate_pos_encoding": True} if other_size and self._interpolates else {}
        out = self.model(pixel_values=images, output_hidden_states=True, return_dict=True, **extra)
        h, w = height // self._patch, width // self._patch
        by_layer = {}
        for layer in layers:
            tokens = out.hidden_states[layer + 1]
            if norm and self._norm is not None:
                tokens = self._norm(tokens)
            by_layer[layer] = self.split(tokens, h, w)
        return by_layer, None

    def rerun_attention(self, attn, args, kwargs, rotated=True) -> KernelInputs:
        if not rotated and self.rope:
            raise UserError(
                f"encoder {self.name!r}: un-rotated keys are offered for timm models only; "
                "use the rotated keys (the default)"
            )
        return rerun_transformers(attn, args, kwargs) if self._interface else rerun_sdpa(attn, args, kwargs)
