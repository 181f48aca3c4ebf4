"""Projection heads rebuilt from the keys a checkpoint stores, so no per-method code is needed.

Contrastive checkpoints keep the projector after the backbone (MoCo v3: Linear-BN-ReLU x2, Linear-BN; DINO:
Linear-GELU x2, Linear, L2-norm, weight-normed Linear). The part-to-whole analysis compares features before
and after it. The layer sequence is read from the numbered children under the head's prefix: a 2-D `weight` is
a Linear, a `running_mean` a BatchNorm1d; an activation follows every layer group except the last.
"""

from __future__ import annotations

import fnmatch
import re

import torch
import torch.nn.functional as F
from torch import nn

from probebench.encoders.registry import ProjectionHead
from probebench.errors import UserError


class _L2Norm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


def _layer(sd: dict[str, torch.Tensor]) -> nn.Module:
    if "running_mean" in sd:
        bn = nn.BatchNorm1d(sd["running_mean"].shape[0], affine="weight" in sd)
        bn.load_state_dict(sd)
        return bn
    if (
        "weight_v" in sd or "parametrizations.weight.original1" in sd
    ):  # weight-normed Linear (DINO last layer)
        v = sd.get("weight_v", sd.get("parametrizations.weight.original1"))
        g = sd.get("weight_g", sd.get("parametrizations.weight.original0"))
        lin = nn.Linear(v.shape[1], v.shape[0], bias="bias" in sd)
        with torch.no_grad():
            lin.weight.copy_(g * v / v.norm(dim=1, keepdim=True))
            if "bias" in sd:
                lin.bias.copy_(sd["bias"])
        return lin
    if "weight" in sd and sd["weight"].ndim == 2:
        lin = nn.Linear(sd["weight"].shape[1], sd["weight"].shape[0], bias="bias" in sd)
        lin.load_state_dict(sd)
        return lin
    raise UserError(f"projection head: cannot tell what layer has keys {sorted(sd)}")


def build_projection_head(checkpoint: dict, spec: ProjectionHead, what: str) -> nn.Module:
    """checkpoint: the state dict (before key mapping). Returns a module (B, C) -> (B, D)."""
    groups: dict[tuple, dict[str, torch.Tensor]] = {}
    for key, value in checkpoint.items():
        if not key.startswith(spec.prefix) or not isinstance(value, torch.Tensor):
            continue
        rest = key[len(spec.prefix) :]
        if any(fnmatch.fnmatchcase(rest, pattern) for pattern in spec.exclude):
            continue
        # "mlp.0.weight" -> ("mlp", 0); "last_layer.weight_g" -> ("last_layer",); sort numbered before named
        m = re.match(r"^(?:(\w+?)\.)?(\d+)\.(.+)$", rest) or re.match(r"^(\w+)\.(.+)$", rest)
        if m is None:
            continue
        if len(m.groups()) == 3:
            order, param = (0, m.group(1) or "", int(m.group(2))), m.group(3)
        else:
            order, param = (1, m.group(1), 0), m.group(2)
        groups.setdefault(order, {})[param] = value
    if not groups:
        raise UserError(f"{what}: no projection head keys under {spec.prefix!r} in the checkpoint")
    layers = [_layer(groups[k]) for k in sorted(groups)]
    act = nn.ReLU if spec.activation == "relu" else nn.GELU
    seq: list[nn.Module] = []
    linear_idx = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
    for i, layer in enumerate(layers):
        if spec.l2norm_before_last and linear_idx and i == linear_idx[-1]:
            seq.append(_L2Norm())
        seq.append(layer)
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        # Activation after a Linear (or its BN) whenever another Linear follows, except before the L2 norm.
        ends_group = nxt is None or isinstance(nxt, nn.Linear)
        before_last = spec.l2norm_before_last and linear_idx and i + 1 == linear_idx[-1]
        if ends_group and nxt is not None and not before_last:
            seq.append(act())
    return nn.Sequential(*seq).eval().requires_grad_(False)
