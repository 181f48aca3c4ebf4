"""Projection heads rebuilt from checkpoint keys match the published layouts computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from probebench.encoders.heads import build_projection_head
from probebench.encoders.registry import ProjectionHead


def test_dino_head_weight_normed_last_layer_after_l2_norm():
    g = torch.Generator().manual_seed(0)
    w0, b0 = torch.randn(32, 16, generator=g), torch.randn(32, generator=g)
    w2, b2 = torch.randn(32, 32, generator=g), torch.randn(32, generator=g)
    w4, b4 = torch.randn(8, 32, generator=g), torch.randn(8, generator=g)
    v, gain = torch.randn(100, 8, generator=g), torch.rand(100, 1, generator=g) + 0.5
    ckpt = {
        "teacher.head.mlp.0.weight": w0,
        "teacher.head.mlp.0.bias": b0,
        "teacher.head.mlp.2.weight": w2,
        "teacher.head.mlp.2.bias": b2,
        "teacher.head.mlp.4.weight": w4,
        "teacher.head.mlp.4.bias": b4,
        "teacher.head.last_layer.weight_g": gain,
        "teacher.head.last_layer.weight_v": v,
        "teacher.backbone.cls_token": torch.zeros(1),
    }
    head = build_projection_head(
        ckpt, ProjectionHead(prefix="teacher.head.", activation="gelu", l2norm_before_last=True), "dino"
    )
    x = torch.randn(3, 16, generator=g)
    h = F.gelu(F.gelu(x @ w0.T + b0) @ w2.T + b2) @ w4.T + b4
    expected = F.normalize(h, dim=-1) @ (gain * v / v.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(head(x), expected, atol=1e-5, rtol=1e-5)


class _NotAllowed:
    """A class a checkpoint must not be allowed to name."""


def _dino_full_checkpoint(path, vit, extra=None):
    """DINO's full training checkpoint layout: student and teacher (backbone + head), optimizer, epoch, the
    training arguments as an argparse.Namespace, and the loss's state."""
    import argparse

    g = torch.Generator().manual_seed(1)
    head = {
        "head.mlp.0.weight": torch.randn(32, 192, generator=g) * 0.1,
        "head.mlp.0.bias": torch.zeros(32),
        "head.mlp.2.weight": torch.randn(32, 32, generator=g) * 0.1,
        "head.mlp.2.bias": torch.zeros(32),
        "head.mlp.4.weight": torch.randn(8, 32, generator=g) * 0.1,
        "head.mlp.4.bias": torch.zeros(8),
        "head.last_layer.weight_g": torch.ones(64, 1),
        "head.last_layer.weight_v": torch.randn(64, 8, generator=g),
        "head.last_layer2.weight_g": torch.ones(5, 1),  # iBOT's patch-token layer: not on the class path
        "head.last_layer2.weight_v": torch.randn(5, 8, generator=g),
    }
    teacher = {f"backbone.{k}": v for k, v in vit.state_dict().items()} | head
    ckpt = {
        "student": {f"module.{k}": v for k, v in teacher.items()},
        "teacher": teacher,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_tiny", out_dim=64, norm_last_layer=True, data_path="/x"),
        "dino_loss": {"center": torch.zeros(1, 64)},
        **(extra or {}),
    }
    torch.save(ckpt, path)
    return head


def test_a_full_dino_checkpoint_loads_its_teacher_and_head_with_only_namespace_allowed(tmp_path, monkeypatch):
    """The path a user takes: the file in torch's hub cache, the entry's mapping, `build_encoder`; the
    projected
    feature is the head (iBOT's patch layer excluded) on the final-normed class token of the teacher."""
    import timm

    from probebench.encoders.load import build_encoder, resolve_encoder
    from probebench.encoders.registry import parse_registry
    from probebench.errors import UserError

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=64)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    head = _dino_full_checkpoint(cache / "dino_full.pth", vit)
    (entry,) = parse_registry(
        """dino_tiny_full:
  family: contrastive
  method: DINO
  arch: ViT-Ti/16
  source:
    kind: checkpoint
    filename: dino_full.pth
    arch: vit_tiny_patch16_224
    arch_kwargs: {img_size: 64}
    mapping: {state_dict_key: teacher, prefix: backbone.}
    projection: {prefix: head., activation: gelu, l2norm_before_last: true, exclude: ["last_layer2.*"]}
  preprocess: {input_size: 64}
"""
    ).values()
    encoder = build_encoder(resolve_encoder(entry))
    x = torch.randn(2, 3, 64, 64)
    feats = encoder.forward_features(x, [11], projection=True)
    cls = vit.forward_features(x)[:, 0]
    h = (
        F.gelu(F.gelu(cls @ head["head.mlp.0.weight"].T) @ head["head.mlp.2.weight"].T)
        @ head["head.mlp.4.weight"].T
    )
    v = head["head.last_layer.weight_v"]
    expected = F.normalize(h, dim=-1) @ (v / v.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(feats.projection, expected, atol=1e-4, rtol=1e-4)

    # A checkpoint that pickles any other class is refused before anything runs.
    _dino_full_checkpoint(cache / "dino_full.pth", vit, {"extra": _NotAllowed()})
    with pytest.raises(UserError, match="safely"):
        build_encoder(resolve_encoder(entry))
