"""Object discovery on real photos with real ImageNet weights (EfficientNet-Lite0) against a random-init ViT
control: on fruit (Pascal VOC layout, 1.9 boxes per photo), HEAP on the real features must find fruit boxes
clearly more often than on the control's, its loss must fall, and its trained head must beat its untrained
one. Boxes mapped to the wrong pixels or a HEAP that learns nothing would close these gaps.

Not asserted, because it is not true here: LOST and TokenCut on Lite0's patch features (standing in for keys)
do not beat them on the control's keys at this size (an 8 x 8 grid against 16 x 16; in the reference run at
512 px LOST scores 35 against the control's 37). `results/reference/discovery.csv` has the numbers."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA, real_and_control

from probebench.data.formats.voc import read_voc

FRUIT = SHARED_DATA / "fruit"
TASK = """discovery_fruit:
  probe: discovery
  dataset: fruit
  knobs:
    methods: [heap, heap_untrained, tokencut, lost, centre]
    max_side: 256
    heap_iterations: 80
    retrieval_annotation: none
    outputs: false
"""


@pytest.fixture
def one_thread():
    """HEAP trains 80 steps on 60 photos: the summation order of a thread count moves a few boxes (two
    threads gave 40 against the control's 30 on one machine, one thread 43 against 23), so the comparison
    runs on one thread, the same on every machine with the same kernels."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.skipif(not FRUIT.is_dir(), reason=f"real data folder {FRUIT} is absent")
def test_real_features_find_fruit_that_random_ones_do_not(one_thread):
    out = real_and_control(TASK, {"fruit": read_voc(FRUIT, "fruit")})
    real, control = (out[n].metrics for n in ("efficientnet_lite0", "random_vitt"))
    assert real["heap_corloc"] > control["heap_corloc"] + 10, (real, control)
    assert real["heap_corloc"] > real["heap_untrained_corloc"] + 5, real
    curve = json.loads(out["efficientnet_lite0"].path.read_text())["probe"]["trained"]["heap"]
    assert curve["loss_last"]["total"] < curve["loss_first"]["total"], curve
