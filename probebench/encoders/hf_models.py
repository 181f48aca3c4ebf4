"""Adapter for transformers vision models (ViT, BEiT, DeiT, ViT-MAE, DINOv2): hidden states per block.

`hidden_states[i + 1]` is the output of block i (index 0 is the embeddings). The final norm is the model's
`layernorm` where it has one; BEiT checkpoints configured for mean pooling replace it by an identity, which
the record then says. Keys come from the last layer's `key` projection, by a forward hook on that Linear.
"""

from __future__ import annotations

import inspect
import re

import torch
from torch import nn

from probebench.encoders.base import Encoder, Features, Preprocess

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


class HFViT(Encoder):
    library = "transformers"
    # The key projection: `encoder.layer.N.attention.attention.key` (transformers 4),
    # `layers.N.attention.k_proj` (transformers 5).
    _KEY_RE = re.compile(r"layers?\.(\d+)\.attention\.(?:attention\.key|k_proj)$")

    def __init__(self, model: nn.Module, preprocess: Preprocess, *, name: str = "") -> None:
        super().__init__(model, preprocess, name=name)
        cfg = model.config
        self._blocks = int(cfg.num_hidden_layers)
        self._dim = int(cfg.hidden_size)
        self._patch = int(cfg.patch_size)
        self._norm = getattr(model, "layernorm", None)
        keys = [(int(m.group(1)), mod) for n, mod in model.named_modules() if (m := self._KEY_RE.search(n))]
        self._key_module = max(keys, key=lambda t: t[0])[1] if keys else None
        self._interpolates = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters

    @property
    def num_blocks(self) -> int:
        return self._blocks

    @property
    def patch_size(self) -> int:
        return self._patch

    @property
    def num_prefix_tokens(self) -> int:
        n = 1 + int(getattr(self.model.config, "num_register_tokens", 0) or 0)
        return n

    def feature_dim(self, layer: int) -> int:
        return self._dim

    @property
    def has_keys(self) -> bool:
        return self._key_module is not None

    @property
    def final_norm(self) -> str:
        if self._norm is None or isinstance(self._norm, nn.Identity):
            return "none (the model has no final LayerNorm)"
        return "final LayerNorm (model.layernorm)"

    def forward_features(
        self, images, layers, *, norm=True, keys=False, attention=False, projection=False
    ) -> Features:
        self._require(keys, projection, attention)
        captured: list[torch.Tensor] = []
        handle = (
            self._key_module.register_forward_hook(lambda m, a, out: captured.append(out)) if keys else None
        )
        b, _, height, width = images.shape
        size = getattr(self.model.config, "image_size", None)
        # Inputs at another size than the trained one (native geometry) resample the position embedding;
        # at the trained size nothing is passed, so the numbers are the model's own.
        other_size = isinstance(size, int) and (height, width) != (size, size)
        extra = {"interpolate_pos_encoding": True} if other_size and self._interpolates else {}
        try:
            out = self.model(pixel_values=images, output_hidden_states=True, return_dict=True, **extra)
        finally:
            if handle is not None:
                handle.remove()
        h, w = height // self._patch, width // self._patch
        p = self.num_prefix_tokens
        feats = Features()
        for layer in layers:
            tokens = out.hidden_states[layer + 1]
            if norm and self._norm is not None:
                tokens = self._norm(tokens)
            feats.cls[layer] = tokens[:, :p]
            feats.patches[layer] = tokens[:, p:].reshape(b, h, w, -1)
            feats.pooled[layer] = tokens[:, p:].mean(dim=1)
        if keys:
            feats.keys = captured[-1][:, p:].reshape(b, h, w, -1)
        return feats
