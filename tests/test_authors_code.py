"""LOST's, TokenCut's and DINO-seg's own functions against ours, image by image, on the same cached keys.

The authors' code is not vendored: clone https://github.com/valeoai/LOST and
https://github.com/YangtaoWANG95/TokenCut into one folder (as `LOST/` and `TokenCut/`) and point
PROBEBENCH_AUTHORS_CODE at it; without it these tests skip. Each test drives the authors' `object_discovery`
functions the way their `main_*.py` scripts do (inputs, dims, scales, the unpadded image size) on the keys
and attention the discovery task reads from the cache, and asserts that every box equals ours.

Encoders: EfficientNet-Lite0 (the ImageNet weights that install here; patch features stand in for keys, so
LOST runs its ResNet/VGG path), a random-init ViT-Ti (real keys and attention), and random-init four-block
copies of DINOv3-S (RoPE, registers) and DINOv2-S with registers, or the registry names in
PROBEBENCH_AUTHORS_ENCODERS (comma-separated, e.g. `dino_vits16` where its weights are at hand). Data: the
real fruit photos (longer side 256 px), or a VOC-layout folder in PROBEBENCH_AUTHORS_VOC (e.g. VOC2007).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RANDOM_VITT, SHARED_DATA

from probebench.data.formats.voc import read_voc
from probebench.discovery import baselines, configs
from probebench.discovery.base import ImageFeatures, box_to_pixels

AUTHORS = Path(os.environ.get("PROBEBENCH_AUTHORS_CODE", "/nonexistent"))
VOC = Path(os.environ.get("PROBEBENCH_AUTHORS_VOC", SHARED_DATA / "fruit"))
MAX_SIDE = 256 if "PROBEBENCH_AUTHORS_VOC" not in os.environ else None  # the papers run VOC at its own size

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (AUTHORS / "LOST" / "object_discovery.py").is_file()
        or not (AUTHORS / "TokenCut" / "object_discovery.py").is_file(),
        reason="set PROBEBENCH_AUTHORS_CODE to a folder with clones of LOST/ and TokenCut/ to compare",
    ),
    pytest.mark.skipif(not VOC.is_dir(), reason=f"VOC-layout data folder {VOC} is absent"),
]


def _module(path: Path, name: str) -> types.ModuleType:
    """Import one of the authors' files by path: both repositories name theirs `object_discovery`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # LOST's file imports `bbox_iou` from its dataset module, which needs scikit-image and the datasets;
    # `lost` never calls it, so a placeholder stands in while the file is imported.
    saved = sys.modules.get("datasets")
    sys.modules["datasets"] = types.SimpleNamespace(bbox_iou=None)
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            sys.modules.pop("datasets")
        else:
            sys.modules["datasets"] = saved
    return module


def _encoders() -> list:
    from probebench.encoders.registry import load_registry, parse_registry

    names = [n for n in os.environ.get("PROBEBENCH_AUTHORS_ENCODERS", "").split(",") if n]
    if names:
        return [load_registry()[n] for n in names]
    return [load_registry()["efficientnet_lite0"], *parse_registry(RANDOM_VITT + RANDOM_MODERN).values()]


# A RoPE model with registers (DINOv3's class) and a register model (DINOv2 with registers), random init:
# their keys are what the blocks hand to the attention kernel (rotated for DINOv3), their class attention
# the class token's, never a register's.
RANDOM_MODERN = """
random_dinov3_vits16:
  family: control
  method: random init
  arch: ViT-S/16 + 4 registers, RoPE
  source: {kind: random, arch: vit_small_patch16_dinov3, seed: 0, arch_kwargs: {depth: 4}}
random_dinov2reg_vits14:
  family: control
  method: random init
  arch: ViT-S/14 + 4 registers
  source: {kind: random, arch: vit_small_patch14_reg4_dinov2, seed: 0, arch_kwargs: {depth: 4, img_size: 224}}
"""


def _features(entry) -> list[ImageFeatures]:
    """Every image's features as the discovery task reads them from the cache."""
    from probebench.encoders.load import resolve_encoder
    from probebench.extraction.extract import extract_features
    from probebench.extraction.request import ExtractionOptions, FeatureRequest
    from probebench.tasks.contract import RoleData
    from probebench.tasks.probes.discovery import _source

    dataset = read_voc(VOC, "authors_check")
    req = FeatureRequest(
        layers=(-1,),
        tokens=("patches",),
        geometry="native",
        max_side=MAX_SIDE,
        optional=("keys", "attention"),
    )
    result = extract_features(
        resolve_encoder(entry), dataset, req, ExtractionOptions(batch_size=8, num_workers=1, progress=False)
    )
    rows = np.array([r for r in range(len(dataset)) if r not in set(result.skipped)], dtype=np.int64)
    role = RoleData(dataset, "all", result.store, rows, np.full(len(rows), -1))
    source = _source(role, result.layers[-1])
    return source(np.arange(len(rows)))


def _theirs(lost_od, tokencut_od, f: ImageFeatures, dinoseg_head: int) -> dict[str, list[float]]:
    """The authors' boxes in input pixels, their functions called as their main scripts call them."""
    h, w = f.grid
    geo = f.geometry
    keys = torch.from_numpy(np.array(f.keys, dtype=np.float32)).reshape(1, h * w, -1)
    scales = [geo.cell, geo.cell]
    size = (3, geo.resized_h, geo.resized_w)  # their `init_image_size`: the image before zero padding
    lost_in = torch.nn.LayerNorm(keys.size()[1:])(keys) if f.keys_are_tokens else keys  # main_lost's CNN path
    with torch.no_grad():
        out = {"lost": lost_od.lost(lost_in, [h, w], scales, size, k_patches=configs.LOST_K)[0]}
    with_cls = torch.cat([torch.zeros(1, 1, keys.shape[-1]), keys], dim=1)  # ncut drops token 0 itself
    out["tokencut"] = tokencut_od.ncut(
        with_cls, [h, w], scales, size, configs.TOKENCUT_TAU, configs.TOKENCUT_EPS
    )[0]
    if f.attention is not None:
        nh = f.attention.shape[-1]
        attn = torch.zeros(1, nh, 1, h * w + 1)  # dino_seg reads only attn[0, :, 0, 1:]
        attn[0, :, 0, 1:] = torch.from_numpy(np.array(f.attention, dtype=np.float32)).reshape(h * w, nh).T
        out["dinoseg"] = lost_od.dino_seg(attn, (h, w), geo.cell, head=dinoseg_head)
    return {k: [float(x) for x in box] for k, box in out.items()}


@pytest.mark.parametrize("entry", _encoders() if AUTHORS.is_dir() else [], ids=lambda e: e.name)
def test_our_boxes_equal_the_authors_code_image_by_image(entry):
    lost_od = _module(AUTHORS / "LOST" / "object_discovery.py", "lost_object_discovery")
    tokencut_od = _module(AUTHORS / "TokenCut" / "object_discovery.py", "tokencut_object_discovery")
    feats = _features(entry)
    differ: dict[str, list[int]] = {"lost": [], "tokencut": [], "dinoseg": []}
    compared = dict.fromkeys(differ, 0)
    for i, f in enumerate(feats):
        head = min(configs.DINOSEG_HEAD, f.attention.shape[-1] - 1) if f.attention is not None else 0
        theirs = _theirs(lost_od, tokencut_od, f, head)
        ours = {
            "lost": baselines.lost(f),
            "tokencut": baselines.tokencut(f),
            **({"dinoseg": baselines.dinoseg(f, head)} if f.attention is not None else {}),
        }
        for method, d in ours.items():
            sx, sy = f.geometry.scale  # ours are in stored-image pixels; theirs in input pixels
            mine = box_to_pixels(d.box, f.geometry, clip=d.clip)
            mine = [mine[0] * sx, mine[1] * sy, mine[2] * sx, mine[3] * sy]
            compared[method] += 1
            if not np.allclose(mine, theirs[method], rtol=0, atol=1e-6):
                differ[method].append(i)
    print(f"\n{entry.name} on {VOC.name}: images compared {compared}, boxes that differ {differ}")
    assert compared["lost"] == len(feats) > 0
    assert not any(differ.values()), differ
