"""Real ImageNet weights (EfficientNet-Lite0) against a random-init ViT control on part retrieval over real
car photos (carparts: each annotated part box is a crop, 18 part classes). The real encoder must win by a
clear margin: features mixed up between crops, or crops off their parts, would close the gap."""

from __future__ import annotations

import pytest
from conftest import SHARED_DATA, real_and_control

from probebench.data.formats.coco import read_coco

CARPARTS = SHARED_DATA / "carparts"
TASK = """part_retrieval_carparts:
  probe: part_retrieval
  dataset: carparts
  split: test
  crops: {source: boxes, min_side: 32}
"""


def _real_and_control(task_text: str, files: dict[str, str], metric: str) -> dict[str, float]:
    """`metric` of the task on carparts for EfficientNet-Lite0 (ImageNet weights) and the random control."""
    out = real_and_control(task_text, {"carparts": read_coco(CARPARTS, "carparts", files)})
    return {name: result.metrics[metric] for name, result in out.items()}


@pytest.mark.skipif(not CARPARTS.is_dir(), reason=f"real data folder {CARPARTS} is absent")
def test_a_real_encoder_beats_the_control_on_part_retrieval_of_real_car_parts():
    ap = _real_and_control(TASK, {"test": "test/annotations.json"}, "ap")
    assert ap["efficientnet_lite0"] > ap["random_vitt"] + 8, ap


SEG_TASK = """part_segmentation_carparts:
  probe: part_segmentation
  dataset: carparts
  knobs: {crop: 224, stride: 149, short: 224, long: 896, iterations: 200, warmup_iters: 20}
"""


@pytest.mark.skipif(not CARPARTS.is_dir(), reason=f"real data folder {CARPARTS} is absent")
def test_a_real_encoder_beats_the_control_on_part_segmentation_of_real_car_parts():
    """18 car-part classes over real photos, rasterised from the COCO polygons, trained on 400 windows and
    scored by slide inference on the 100 test photos at their own sizes: labels off their pixels, windows
    stitched in the wrong place or layers mixed up would bring the real encoder down to the control."""
    files = {"train": "train/annotations.json", "test": "test/annotations.json"}
    miou = _real_and_control(SEG_TASK, files, "miou")
    assert miou["efficientnet_lite0"] > miou["random_vitt"] + 10, miou


CUB10PARTS = SHARED_DATA / "cub10parts"
CORRESPONDENCE_TASK = """keypoint_correspondence_cub10parts:
  resolution: 224
  probe: keypoint_correspondence
  dataset: cub10parts
"""


@pytest.mark.slow
@pytest.mark.skipif(not CUB10PARTS.is_dir(), reason=f"real data folder {CUB10PARTS} is absent")
def test_a_real_encoder_beats_the_control_on_keypoint_correspondence_between_real_birds():
    """Same-species pairs of real, uncropped CUB photos (100 per species, test split), each part keypoint
    visible in both matched to the other photo's most similar patch, PCK@0.1 of the bird's box. The ImageNet
    CNN reads a 7 x 7 grid and the control a 14 x 14 one, so the control's grid alone would win: the real
    features must beat it anyway, by intervals that do not overlap. Keypoints read off their part, points
    mapped back at the wrong scale or pairs across species would bring the CNN down to the control."""
    from probebench.data.formats.cub import read_cub

    out = real_and_control(CORRESPONDENCE_TASK, {"cub10parts": read_cub(CUB10PARTS, "cub10parts")})
    real, control = (out[name].metrics for name in ("efficientnet_lite0", "random_vitt"))
    assert real["n_pairs"] == control["n_pairs"] == 1000, (real["n_pairs"], control["n_pairs"])
    assert real["pck@0.1_ci95"][0] > control["pck@0.1_ci95"][1], (real["pck@0.1"], control["pck@0.1"])
    assert real["pck@0.1_grid_bound"] < control["pck@0.1_grid_bound"]  # the CNN's coarser grid caps it lower
