"""Every adapter output equals what the model itself computes.

For each architecture class the registry uses (read from `encoders.yaml`, so a new entry is checked without a
new test) and the classes researchers compare today, a model with random weights is run through its adapter
and through the library's own computation, captured from the library and never re-derived with the adapter's
helpers:
- patch and prefix tokens of every block, normed and un-normed: the blocks' own outputs (forward hooks during
  timm's `forward_features`, transformers' `hidden_states`, open_clip's residual blocks);
- the class token's attention: the last block's own softmax (timm with fused attention off, the dropout after
  the softmax hooked; transformers' eager `output_attentions`; torch's `need_weights`);
- keys: what the last block hands to its attention kernel in a whole-model forward.
At the trained grid, at an odd square grid and at a non-square one. Where the library has no dynamic-size
mode (BEiT), the oracle is the library's own `set_input_size` on a copy of the model.

`make test` runs small configurations of the same classes (two blocks); the slow test sweeps the full-size
registry architectures.
"""

from __future__ import annotations

import contextlib
import copy
import re

import pytest
import torch
import torch.nn.functional as F

from probebench.encoders.base import Preprocess
from probebench.encoders.registry import load_registry

PRE = Preprocess(224, 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3)

# The classes researchers compare today, beside the registry's: RoPE with registers (DINOv3), RoPE (EVA-02,
# PE, timm's rope ViT), relative position bias (BEiT), registers without a class token, no prefix at all
# (SigLIP, I-JEPA), DINOv2 with registers.
MODERN_TIMM = [
    "vit_small_patch16_dinov3",
    "eva02_tiny_patch14_224",
    "vit_pe_core_base_patch16_224",
    "vit_base_patch16_rope_224",
    "beit_base_patch16_224",
    "vit_medium_patch16_reg4_gap_256",
    "vit_base_patch16_siglip_224",
    "vit_huge_patch14_gap_224",
    "vit_small_patch14_reg4_dinov2",
    "aimv2_large_patch14_224",
]


def registry_timm_archs() -> list[str]:
    """The timm ViT architectures of the registry's entries (CNNs have their own tests)."""
    archs = set()
    for entry in load_registry().values():
        src = entry.source
        arch = src.model.split(".")[0] if src.kind == "timm" else getattr(src, "arch", None)
        if arch and not arch.startswith(("tf_efficientnet", "efficientnet", "mobilenet")):
            archs.add(arch)
    return sorted(archs)


def registry_arch_kwargs(arch: str) -> dict:
    """Constructor arguments an entry gives its architecture (CAE: BEiT without relative position bias)."""
    for entry in load_registry().values():
        if getattr(entry.source, "arch", None) == arch:
            return {k: v for k, v in entry.source.arch_kwargs.items() if k != "num_classes"}
    return {}


TIMM_CASES = sorted(set(registry_timm_archs()) | set(MODERN_TIMM)) + ["beit_base_patch16_224+cae"]


def _grids(patch: int, trained: int) -> list[tuple[int, int]]:
    side = trained // patch
    return [(side, side), (side - 3, side - 3), (side - 5, side - 1)]


# -- timm ----------------------------------------------------------------------------------------------------
def _timm_model(case: str, small: bool):
    from probebench.encoders.sources import create_timm_model

    arch, _, variant = case.partition("+")
    kwargs = registry_arch_kwargs(arch) if not variant else {}
    if variant == "cae":
        kwargs = {"use_abs_pos_emb": True, "use_rel_pos_bias": False, "use_shared_rel_pos_bias": False}
    if small:  # two blocks and an 8 x 8 trained grid: the same class, seconds instead of minutes
        patch = int(re.search(r"patch(\d+)", arch)[1])
        kwargs.update(depth=2, img_size=8 * patch)
    return create_timm_model(arch, seed=0, pretrained=False, num_classes=0, **kwargs).eval()


@contextlib.contextmanager
def _unfused(model):
    """Every attention block on its own softmax path, the last one's softmax captured."""
    got = {}
    attns = [b.attn for b in model.blocks]
    saved = [a.fused_attn for a in attns]
    for a in attns:
        a.fused_attn = False
    handle = attns[-1].attn_drop.register_forward_hook(lambda m, i, out: got.update(softmax=out))
    try:
        yield got
    finally:
        handle.remove()
        for a, s in zip(attns, saved, strict=True):
            a.fused_attn = s


@contextlib.contextmanager
def _kernel_keys(model):
    """The keys the last block hands to scaled_dot_product_attention during an ordinary forward."""
    got = {}
    original = F.scaled_dot_product_attention
    last = model.blocks[-1].attn

    def spy(q, k, v, *args, **kwargs):
        if getattr(spy, "inside", False):
            got["k"] = k
        return original(q, k, v, *args, **kwargs)

    pre = last.register_forward_pre_hook(lambda m, a: setattr(spy, "inside", True))
    post = last.register_forward_hook(lambda m, a, o: setattr(spy, "inside", False))
    F.scaled_dot_product_attention = spy
    try:
        yield got
    finally:
        F.scaled_dot_product_attention = original
        pre.remove()
        post.remove()


def timm_oracle(model, x: torch.Tensor) -> dict:
    """The library's own tokens (every block), final norm, class-token softmax and kernel keys for x."""
    size = tuple(x.shape[-2:])
    if not hasattr(model, "dynamic_img_size") and tuple(model.patch_embed.img_size) != size:
        model = copy.deepcopy(model)
        model.set_input_size(img_size=size)  # the library's own resize (BEiT's relative position bias)
    blocks = []
    hooks = [b.register_forward_hook(lambda m, i, out: blocks.append(out)) for b in model.blocks]
    try:
        with torch.no_grad(), _unfused(model) as soft:
            final = model.forward_features(x)
        with torch.no_grad(), _kernel_keys(model) as kernel:
            model.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    blocks = blocks[: len(model.blocks)]
    assert torch.allclose(model.norm(blocks[-1]), final, atol=1e-6)
    return {"blocks": blocks, "norm": model.norm, "softmax": soft["softmax"], "k": kernel.get("k")}


def _compare(enc, oracle: dict, x: torch.Tensor, *, atol: float = 2e-5) -> None:
    p, patch = enc.num_prefix_tokens, enc.patch_size
    h, w = x.shape[-2] // patch, x.shape[-1] // patch
    layers = list(range(enc.num_blocks))
    for norm in (False, True):
        feats = enc(x, layers, norm=norm, keys=enc.has_keys, attention=enc.has_attention)
        for layer in layers:
            tokens = oracle["blocks"][layer]
            if norm:
                tokens = oracle["norm"](tokens)
            torch.testing.assert_close(feats.cls[layer], tokens[:, :p], atol=atol, rtol=1e-5)
            torch.testing.assert_close(
                feats.patches[layer], tokens[:, p:].reshape(len(x), h, w, -1), atol=atol, rtol=1e-5
            )
    if enc.has_keys and oracle.get("k") is not None:
        k = oracle["k"]  # (B, H, N, D)
        want = k.transpose(1, 2).reshape(k.shape[0], k.shape[2], -1)[:, p:].reshape(len(x), h, w, -1)
        torch.testing.assert_close(feats.keys, want, atol=atol, rtol=1e-5)
    if enc.class_token:
        assert enc.has_attention
        want = oracle["softmax"][:, :, 0, p:].transpose(1, 2).reshape(len(x), h, w, -1)
        torch.testing.assert_close(feats.attention, want, atol=1e-6, rtol=1e-4)
    else:
        assert not enc.has_attention  # a register never stands in for the class token


def _check_timm(case: str, small: bool) -> None:
    from probebench.encoders.timm_models import wrap_timm

    model = _timm_model(case, small)
    enc = wrap_timm(model, PRE)
    assert enc.num_prefix_tokens == model.num_prefix_tokens
    assert enc.class_token == (getattr(model, "cls_token", None) is not None)
    reference = copy.deepcopy(model)
    trained = model.patch_embed.img_size[0]
    torch.manual_seed(1)
    # The trained grid last: a resize for an odd grid must leave nothing behind.
    for grid in [*_grids(enc.patch_size, trained)[1:], _grids(enc.patch_size, trained)[0]]:
        x = torch.randn(2, 3, grid[0] * enc.patch_size, grid[1] * enc.patch_size)
        _compare(enc, timm_oracle(reference, x), x)


@pytest.mark.parametrize("case", TIMM_CASES)
def test_timm_adapter_equals_the_models_own_computation(case):
    _check_timm(case, small=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", registry_timm_archs())
def test_timm_adapter_equals_the_models_own_computation_at_full_size(case):
    _check_timm(case, small=False)


def test_rope_attention_would_be_wrong_without_the_rotation():
    """The check above has teeth: DINOv3's class attention recomputed from un-rotated keys (the old way)
    differs from the block's own softmax by far more than the tolerance."""
    from probebench.encoders.timm_models import wrap_timm

    model = _timm_model("vit_small_patch16_dinov3", small=True)
    enc = wrap_timm(model, PRE)
    x = torch.randn(2, 3, 160, 160)
    oracle = timm_oracle(copy.deepcopy(model), x)
    enc.rotate_keys = False
    plain = enc(x, [-1], keys=True).keys
    rotated = wrap_timm(model, PRE)(x, [-1], keys=True).keys
    assert (plain - rotated).abs().max() > 1e-2
    p = enc.num_prefix_tokens
    k = oracle["k"]
    want = k.transpose(1, 2).reshape(k.shape[0], k.shape[2], -1)[:, p:].reshape(2, 10, 10, -1)
    torch.testing.assert_close(rotated, want, atol=2e-5, rtol=1e-5)
    assert "rotated" in wrap_timm(model, PRE).keys_kind and "un-rotated" in enc.keys_kind


# -- transformers --------------------------------------------------------------------------------------------
HF_CASES = {
    "vit": {},
    "beit": {"use_relative_position_bias": True, "use_mask_token": False},
    "beit+shared": {"use_shared_relative_position_bias": True},
    "dinov2": {},
    "dinov2_with_registers": {"num_register_tokens": 4},
    "dinov3_vit": {"num_register_tokens": 4},
    "data2vec-vision": {"use_relative_position_bias": True},
    "ijepa": {},  # no class token
}


def _hf_model(case: str, attn: str):
    from transformers import AutoConfig, AutoModel

    model_type, _, _ = case.partition("+")
    cfg = AutoConfig.for_model(
        model_type,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=64,
        patch_size=16,
        **HF_CASES[case],
    )
    torch.manual_seed(0)
    kwargs = {"add_pooling_layer": False} if model_type in ("vit", "beit", "data2vec-vision", "ijepa") else {}
    return AutoModel.from_config(cfg, attn_implementation=attn, **kwargs).eval()


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_transformers_adapter_equals_the_models_own_computation(case):
    from probebench.encoders.hf_models import HFViT

    enc = HFViT(_hf_model(case, "sdpa"), PRE)
    eager = _hf_model(case, "eager")
    eager.load_state_dict(enc.model.state_dict())
    assert enc.class_token == (case != "ijepa") and enc.has_attention == enc.class_token
    # the last block's key projection, where the keys are not rotated afterwards (DINOv3's are)
    key_proj = [m for n, m in eager.named_modules() if n.endswith(("k_proj", "attention.key"))][-1]
    got = {}
    key_proj.register_forward_hook(lambda m, i, out: got.update(k=out))
    for grid in [(4, 4), (3, 3), (3, 5)]:
        x = torch.randn(2, 3, grid[0] * 16, grid[1] * 16)
        extra = {"interpolate_pos_encoding": True} if grid != (4, 4) else {}
        with torch.no_grad():
            out = eager(pixel_values=x, output_hidden_states=True, output_attentions=True, **extra)
        norm = next(getattr(eager, n) for n in ("layernorm", "norm") if hasattr(eager, n))
        b, n, c = got["k"].shape
        heads = eager.config.num_attention_heads
        oracle = {
            "blocks": out.hidden_states[1:],
            "norm": norm,
            "softmax": out.attentions[-1],
            "k": None if case == "dinov3_vit" else got["k"].view(b, n, heads, -1).transpose(1, 2),
        }
        _compare(enc, oracle, x)


# -- open_clip -----------------------------------------------------------------------------------------------
def test_open_clip_adapter_equals_the_models_own_computation(tmp_path):
    from conftest import tiny_clip

    from probebench.encoders.clip_models import OpenClipViT

    model = tiny_clip(tmp_path, "tiny-clip-oracle")
    enc = OpenClipViT(model, PRE)
    visual = copy.deepcopy(model.visual)
    blocks_out, got = [], {}
    for block in visual.transformer.resblocks:
        block.register_forward_hook(lambda m, i, out: blocks_out.append(out))
    last = visual.transformer.resblocks[-1].attn

    def want_weights(m, args, kwargs):
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    last.register_forward_pre_hook(want_weights, with_kwargs=True)
    last.register_forward_hook(lambda m, a, out: got.update(softmax=out[1]))
    last.register_forward_pre_hook(lambda m, a: got.update(x=a[0]))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        visual(x)
    q_in = got["x"]
    _, k, _ = F._in_projection_packed(q_in, q_in, q_in, last.in_proj_weight, last.in_proj_bias)
    heads = last.num_heads
    k = k.view(k.shape[0], k.shape[1], heads, -1).transpose(1, 2)  # (B, H, N, D)
    oracle = {"blocks": blocks_out, "norm": visual.ln_post, "softmax": got["softmax"], "k": k}
    _compare(enc, oracle, x)
