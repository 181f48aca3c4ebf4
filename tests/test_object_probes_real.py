"""Real ImageNet weights (EfficientNet-Lite0, MobileNetV2) against a random-init ViT control, through the
linear and kNN probes, on the embedded data and on real bird photos (cub100). The real encoders must win by a
wide margin: a probe that learnt nothing, or features mixed up between images, would close the gap."""

from __future__ import annotations

import pytest
from conftest import SHARED_DATA

from probebench.data.formats.cub import read_cub
from probebench.data.lookup import get_dataset
from probebench.encoders.load import resolve_encoder
from probebench.encoders.registry import load_registry, parse_registry
from probebench.pipeline.config import RunConfig
from probebench.pipeline.runner import run_encoder
from probebench.tasks import get_task

# ViT-Ti rather than ViT-B keeps the control fast; any random ViT is at chance on these tasks.
CONTROL = """random_vitt:
  family: control
  method: random init
  arch: ViT-Ti/16
  source: {kind: random, arch: vit_tiny_patch16_224, seed: 0}
"""
CFG = RunConfig(batch_size=32, workers=1)
CUB = SHARED_DATA / "cub100"
needs_cub = pytest.mark.skipif(not CUB.is_dir(), reason=f"real data folder {CUB} is absent")


def top1s(dataset) -> dict[tuple[str, str], float]:
    """(encoder, task) -> top-1 % of the linear probe and 20-NN."""
    reg = load_registry()
    entries = [reg["efficientnet_lite0"], reg["mobilenetv2"], *parse_registry(CONTROL).values()]
    tasks = [get_task("linear"), get_task("knn")]
    out = {}
    for entry in entries:
        for o in run_encoder(resolve_encoder(entry), tasks, CFG, dataset):
            out[entry.name, o.task] = o.metrics["top1"] if o.task == "linear" else o.metrics["top1_k20"]
    return out


def assert_real_beat_control(acc: dict, margin: float) -> None:
    for task in ("linear", "knn"):
        control = acc["random_vitt", task]
        for real in ("efficientnet_lite0", "mobilenetv2"):
            assert acc[real, task] > control + margin, (real, task, acc)


def cub_subset(num_classes: int):
    """The first classes of cub100 with their official train/test split (a quick real fine-grained task)."""
    ds = read_cub(CUB, "cub100")
    ds.samples = [s for s in ds.samples if s.label < num_classes]
    ds.classes, ds.name = ds.classes[:num_classes], f"cub100-first{num_classes}"
    return ds


def test_real_encoders_beat_the_control_on_embedded():
    assert_real_beat_control(top1s(get_dataset("embedded")), margin=40)


@needs_cub
def test_real_encoders_beat_the_control_on_cub100_first_10_species():
    acc = top1s(cub_subset(10))
    assert_real_beat_control(acc, margin=30)


@pytest.mark.slow
@needs_cub
def test_real_encoders_beat_the_control_on_cub100():
    acc = top1s(read_cub(CUB, "cub100"))
    assert_real_beat_control(acc, margin=40)
