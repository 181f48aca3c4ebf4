"""Projection heads rebuilt from checkpoint keys match the published layouts computed by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from probebench.encoders.heads import build_projection_head
from probebench.registry import ProjectionHead


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
