"""Keys and class-token attention exactly as a model's last attention block computes them.

No library returns a block's keys, and the class token's attention is either not returned (timm, open_clip)
or only for every block at once (transformers' `output_attentions`). Re-deriving them from a block's weights
is how the three classic bugs happen: RoPE not applied (DINOv3, EVA-02), the relative position bias left out
(BEiT), q/k norms or separate q/v biases forgotten. So probebench never re-derives them. It captures the
last attention block's inputs during the forward (a pre-hook), calls that block once more on them, and
stops it at the attention kernel, where the block hands over its queries, keys and additive mask after every
transform of its own (projections, biases, q/k norms, rotary embeddings, relative position bias):
- timm: the kernel is `torch.nn.functional.scaled_dot_product_attention` (the block's fused path, forced on
  for the call);
- transformers: the kernel is the model's attention interface; a capturing one is registered under its
  own name with transformers' public `AttentionInterface.register` and selected for the call (models not
  yet moved to the interface, such as data2vec-vision, call `scaled_dot_product_attention` as timm does).

The class token's attention is then the softmax of its query row over all keys, prefix tokens included, as
the kernel computes it. Only the last block is run again, and it stops before the kernel computes anything,
so the cost is one block's q/k/v projection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CAPTURE_NAME = "probebench_capture"  # the transformers attention interface registered below


@dataclass
class KernelInputs:
    """What an attention block hands to its kernel, for B images of N tokens and H heads.

    q: (B, H, N, D) queries, k: (B, H, N, D) keys, as the kernel receives them (rotated where the block
    rotates them); mask: additive logits bias broadcastable to (B, H, N, N) (BEiT's relative position bias), a
    boolean keep-mask, or None; scale: the logit scale the kernel applies.
    """

    q: torch.Tensor
    k: torch.Tensor
    mask: torch.Tensor | None
    scale: float

    def keys(self) -> torch.Tensor:
        """(B, N, H * D): every head's keys side by side, as LOST and TokenCut read them."""
        b, h, n, d = self.k.shape
        return self.k.transpose(1, 2).reshape(b, n, h * d)

    def token_attention(self, token: int) -> torch.Tensor:
        """(B, H, N): the softmax attention of one query token over all N tokens, in float32."""
        q = self.q[:, :, token : token + 1].transpose(1, 2).float()  # (B, 1, H, D)
        logits = torch.einsum("bqhd,bnhd->bhqn", q, self.k.transpose(1, 2).float())[:, :, 0] * self.scale
        if self.mask is not None:
            mask = self.mask.expand(*logits.shape[:2], *self.mask.shape[-2:])[:, :, token]
            if mask.dtype == torch.bool:
                logits = logits.masked_fill(~mask, float("-inf"))
            else:
                logits = logits + mask.float()
        return logits.softmax(dim=-1)


class _Stop(Exception):
    """Raised by a capturing kernel: the block's work after the kernel is not needed."""


def _scale_of(q: torch.Tensor, scale: float | None) -> float:
    return float(scale) if scale is not None else q.shape[-1] ** -0.5


_SDPA_LOCK = threading.Lock()


@contextlib.contextmanager
def _sdpa_captured(into: list[KernelInputs]) -> Iterator[None]:
    """Swap `F.scaled_dot_product_attention` for a capturing stand-in while one block is re-run.

    timm's blocks look the kernel up on `torch.nn.functional` at call time, so the stand-in sees exactly
    what they pass. The lock keeps two threads from swapping it at once.
    """

    def capture(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
        if is_causal:
            raise ValueError("a causal attention block has no class-token attention over the image")
        into.append(KernelInputs(q, k, attn_mask, _scale_of(q, scale)))
        raise _Stop

    with _SDPA_LOCK:
        original = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = capture
        try:
            yield
        finally:
            F.scaled_dot_product_attention = original


def rerun_sdpa(attn: nn.Module, args: tuple, kwargs: dict) -> KernelInputs:
    """Call an attention module that uses torch's fused kernel again on its captured inputs; return what it
    gives the kernel."""
    got: list[KernelInputs] = []
    with _sdpa_captured(got), contextlib.suppress(_Stop):
        attn(*args, **kwargs)
    if not got:
        raise RuntimeError(f"{type(attn).__name__} did not call scaled_dot_product_attention")
    return got[-1]


def rerun_timm(attn: nn.Module, args: tuple, kwargs: dict) -> KernelInputs:
    """`rerun_sdpa` for a timm attention module, on its fused path (the one that hands q, k and the mask to
    the kernel) whatever `TIMM_FUSED_ATTN` chose."""
    fused = getattr(attn, "fused_attn", None)
    attn.fused_attn = True
    try:
        return rerun_sdpa(attn, args, kwargs)
    finally:
        attn.fused_attn = fused


def _hf_capture(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """A transformers attention interface that records its inputs and stops the block."""
    module._probebench_kernel = KernelInputs(query, key, attention_mask, _scale_of(query, scaling))
    raise _Stop


def rerun_transformers(attn: nn.Module, args: tuple, kwargs: dict) -> KernelInputs:
    """Call a transformers attention module again on its captured inputs, with the capturing interface."""
    from transformers import AttentionInterface

    AttentionInterface.register(CAPTURE_NAME, _hf_capture)
    config = attn.config
    before = config._attn_implementation
    config._attn_implementation = CAPTURE_NAME
    try:
        with contextlib.suppress(_Stop):
            attn(*args, **kwargs)
    finally:
        config._attn_implementation = before
    got = attn.__dict__.pop("_probebench_kernel", None)
    if got is None:
        raise RuntimeError(f"{type(attn).__name__} did not call its attention interface")
    return got


@contextlib.contextmanager
def inputs_of(module: nn.Module, enabled: bool = True) -> Iterator[dict]:
    """Record the positional and keyword arguments of `module`'s last call in the yielded dict."""
    seen: dict = {}
    if not enabled:
        yield seen
        return

    def hook(mod, args, kwargs):
        seen["args"], seen["kwargs"] = args, dict(kwargs)

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


Rerun = Callable[[nn.Module, tuple, dict], KernelInputs]
