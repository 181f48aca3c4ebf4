"""The one adapter skeleton every transformer encoder shares, whatever library it came from.

A library adapter says four things: how to run the model to the requested blocks (`run_blocks`), which module
is the last block's attention (`last_attention`), how to call that module again up to its kernel
(`rerun_attention`, from `probebench.encoders.attention`), and, where the model has them, its projection
head (`project`) and its own pooling (`pool`).
Everything else is here, once: hooking the last attention block, splitting prefix tokens from patches,
pooling, and turning the kernel's inputs into keys and the class token's attention.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod

import torch
from torch import nn

from probebench.encoders.attention import KernelInputs, inputs_of
from probebench.encoders.base import Encoder, Features
from probebench.errors import UserError


class TokenEncoder(Encoder):
    """A transformer: prefix tokens, then an (h, w) grid of patch tokens, at every block."""

    @abstractmethod
    def run_blocks(
        self, images: torch.Tensor, layers: list[int], norm: bool, projection: bool
    ) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor]], object]:
        """images (B, 3, H, W) -> ({layer: (prefix (B, P, C), patches (B, h, w, C))}, what `project`
        needs, or None when `projection` is false)."""

    @abstractmethod
    def last_attention(self) -> nn.Module:
        """The last block's attention module (its pre-hook sees the block's normalised input)."""

    #: keys as the kernel receives them (rotated by RoPE where the block rotates); False: before the rotation
    rotate_keys: bool = True

    @abstractmethod
    def rerun_attention(
        self, attn: nn.Module, args: tuple, kwargs: dict, rotated: bool = True
    ) -> KernelInputs:
        """Call `attn` again on its captured arguments and return what it hands to its kernel; `rotated`
        False: the same without the block's rotary embedding (raise where the library cannot)."""

    def at_size(self, size: tuple[int, int]) -> contextlib.AbstractContextManager:
        """A context in which the model reads inputs of `size` (H, W): the forward and the attention re-run
        both happen inside it, so they see the same position terms."""
        return contextlib.nullcontext()

    def project(self, head_input: object, norm: bool) -> torch.Tensor:
        """(B, D) projection-head output from what `run_blocks` returned for it."""
        raise NotImplementedError

    def pool(self, prefix: torch.Tensor, patches: torch.Tensor, normed: bool) -> torch.Tensor:
        """The model's own pooling of its last block, prefix (B, P, C) and patches (B, h, w, C) -> (B, C)."""
        raise NotImplementedError

    def forward_features(
        self, images, layers, *, norm=True, keys=False, attention=False, projection=False, head=False
    ) -> Features:
        self._require(keys, projection, attention, head)
        last = self.num_blocks - 1
        # projection and pooling need the last block even when only earlier layers are requested.
        wanted = sorted(set(layers) | ({last} if projection or head else set()))
        feats = Features()
        with self.at_size(tuple(images.shape[-2:])):
            with inputs_of(self.last_attention(), enabled=keys or attention) as seen:
                by_layer, head_input = self.run_blocks(images, wanted, norm, projection)
            if keys or attention:
                attn, args, kwargs = self.last_attention(), seen["args"], seen["kwargs"]
                kernel = self.rerun_attention(attn, args, kwargs)
                if keys and not self.rotate_keys:
                    key_kernel = self.rerun_attention(attn, args, kwargs, rotated=False)
                else:
                    key_kernel = kernel
        for layer in layers:
            prefix, grid = by_layer[layer]
            feats.cls[layer] = prefix
            feats.patches[layer] = grid
            feats.pooled[layer] = grid.mean(dim=(1, 2))
        b, h, w, _ = feats.patches[layers[0]].shape
        p = self.num_prefix_tokens
        if keys:
            feats.keys = key_kernel.keys()[:, p:].reshape(b, h, w, -1)
        if attention:
            heads = kernel.token_attention(0)[:, :, p:]  # (B, H, h * w): the class token is first
            feats.attention = heads.transpose(1, 2).reshape(b, h, w, -1)
        if projection:
            feats.projection = self.project(head_input, norm)
        if head:
            feats.head = self.pool(*by_layer[last], normed=norm)
        return feats

    def split(self, tokens: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P + h*w, C) -> prefix (B, P, C), patches (B, h, w, C). A sequence of another length is a token
        layout this adapter does not understand: refused, never sliced by guess."""
        p = self.num_prefix_tokens
        if tokens.shape[1] != p + h * w:
            raise UserError(
                f"encoder {self.name!r}: {tokens.shape[1]} tokens for a {h}x{w} grid and {p} prefix tokens "
                f"({', '.join(self.prefix_tokens) or 'none'}); this model's token layout is not supported"
            )
        return tokens[:, :p], tokens[:, p:].reshape(tokens.shape[0], h, w, -1)
