"""The segmentation probe: scaled layers, the head against its textbook form, the schedule, mmseg's window
layout, slide stitching, label maps, the window view's pixels, and the probe end to end on cached features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_REGISTRY, call_cli, use_registry
from PIL import Image

from probebench.data.annotations import label_classes, label_map, reduce_zero_label, resize_nearest
from probebench.data.base import ImageDataset, Sample
from probebench.data.loader import ImageRows
from probebench.data.views.windows import WindowSpec, rescaled_size, window_boxes, window_view
from probebench.encoders.base import block_index, is_layer
from probebench.extraction.request import FeatureRequest
from probebench.geometry import Framing
from probebench.learners import seghead
from probebench.metrics.segmentation import confusion, segmentation_metrics


def test_scaled_layers_reproduce_the_papers_blocks_and_scale_to_other_depths():
    four = ["4/12", "6/12", "8/12", "12/12"]
    assert [block_index(x, 12) for x in four] == [3, 5, 7, 11]  # out_indices of the authors' configs
    assert [block_index(x, 24) for x in four] == [7, 11, 15, 23]  # BEiT-L's choice
    assert [block_index(x, 6) for x in four] == [
        1,
        2,
        3,
        5,
    ]  # EfficientNet: stride 4, 8, 16 and the final map
    assert block_index("last", 7) == 6 and block_index(-2, 7) == 5
    assert is_layer("4/12") and not is_layer("13/12") and not is_layer("x/2") and not is_layer(True)
    FeatureRequest(layers=tuple(four))
    with pytest.raises(Exception, match="4/12"):
        FeatureRequest(layers=("4-12",))


def test_the_head_equals_resize_concat_then_one_conv():
    torch.manual_seed(0)
    dims, sides = [3, 5, 7], [8, 4, 2]
    head = seghead.LinearSegHead(dims, 4)
    torch.nn.init.normal_(head.conv.bias)
    grids = [torch.randn(2, c, s, s + 1) for c, s in zip(dims, sides, strict=True)]
    cat = torch.cat(
        [F.interpolate(g, size=(8, 9), mode="bilinear", align_corners=False) for g in grids], dim=1
    )
    np.testing.assert_allclose(head(grids).detach(), head.conv(cat).detach(), atol=1e-5)


def test_the_schedule_is_mmcv_poly_with_linear_warm_up():
    lr = seghead.learning_rate
    assert lr(0, 1000, 1.0, 100) == pytest.approx(1e-6)
    assert lr(100, 1000, 1.0, 100) == pytest.approx(0.9)  # warm-up over: the poly value
    assert lr(50, 1000, 1.0, 100) == pytest.approx(0.95 * (1 - 0.5 * (1 - 1e-6)))
    assert lr(999, 1000, 1.0, 0) == pytest.approx(0.001)


def test_windows_follow_mmseg_rescale_and_slide_layout():
    ade = WindowSpec(crop=512, stride=341, short=512, long=2048)
    assert rescaled_size(683, 1024, ade) == (512, 768)
    assert rescaled_size(4000, 100, ade) == (2048, 51)  # the long side caps the factor
    assert window_boxes(683, 512, ade) == [(0, 0, 512, 512), (171, 0, 683, 512)]
    assert window_boxes(300, 200, ade) == [(0, 0, 300, 200)]  # smaller than a crop: one window
    boxes = window_boxes(1200, 512, ade)  # (1200 - 512 + 340) // 341 + 1 = 4 columns, the last moved back
    assert [b[0] for b in boxes] == [0, 341, 682, 688] and all(b[2] - b[0] == 512 for b in boxes)
    with pytest.raises(Exception, match="stride"):
        WindowSpec(crop=10, stride=20, short=10, long=10)


class _Fixed(torch.nn.Module):
    """A stand-in head: returns the given logits whatever it reads."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, grids):
        return self.logits


def test_slide_inference_averages_overlapping_windows_on_the_rescaled_image():
    # Two 4x4 windows over a 6-wide, 4-high image, overlapping in columns 2..3. Window 0 says class 0 with
    # weight 2, window 1 says class 1 with weight 3: the overlap averages to (1, 1.5) -> class 1.
    logits = torch.zeros(2, 2, 4, 4)
    logits[0, 0], logits[1, 1] = 2.0, 3.0
    pred = seghead.predict_image(
        _Fixed(logits), [], np.array([[0, 0, 4, 4], [2, 0, 6, 4]]), (4, 4), (6, 4), (4, 6)
    )
    np.testing.assert_array_equal(pred, [[0, 0, 1, 1, 1, 1]] * 4)
    # The label size differs from the rescaled size: logits are resized bilinearly before the argmax.
    pred = seghead.predict_image(
        _Fixed(logits), [], np.array([[0, 0, 4, 4], [2, 0, 6, 4]]), (4, 4), (6, 4), (8, 12)
    )
    assert pred.shape == (8, 12) and pred[:, :3].max() == 0 and pred[:, 5:].min() == 1


def test_a_window_smaller_than_its_padded_input_uses_only_its_own_pixels():
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 1, :, :2] = 1.0  # left half class 1; the right half is padding the window does not cover
    pred = seghead.predict_image(_Fixed(logits), [], np.array([[0, 0, 2, 4]]), (4, 4), (2, 4), (4, 2))
    np.testing.assert_array_equal(pred, np.ones((4, 2)))


def test_training_learns_labels_that_the_features_carry():
    """Grids whose channels encode each cell's class plus noise: the head must learn it (a label or grid
    misalignment, a wrong sign or a schedule that never moves would fail)."""
    rng = np.random.default_rng(0)
    n, side, k = 24, 8, 3
    cells = rng.integers(0, k, (n, side, side))
    feats = np.eye(k)[cells] * 3 + rng.normal(0, 0.5, (n, side, side, k))
    labels = np.kron(cells, np.ones((4, 4), dtype=np.int64))  # 32 x 32 pixel labels, 4 px per cell
    labels[:, :2, :] = 255  # an ignored band
    windows = seghead.Windows(
        read=lambda pos: [feats[pos].astype(np.float32)],
        bucket=np.zeros(n, dtype=np.int64),
        input_hw=np.full((n, 2), 32),
    )
    store, counts = seghead.label_store(n, 32, 32, lambda i: labels[i], 255, k)
    assert counts.sum() == int((labels != 255).sum()) and len(counts) == k
    head, details = seghead.train_head(
        windows, store, [k], k, iterations=60, batch_size=8, lr=0.05, warmup_iters=5
    )
    assert details["loss_curve"][-1] < details["loss_curve"][0] / 3
    conf = sum(
        confusion(
            seghead.predict_image(
                head, [feats[[i]]], np.array([[0, 0, 32, 32]]), (32, 32), (32, 32), (32, 32)
            ),
            labels[i],
            k,
        )
        for i in range(n)
    )
    # Chance is about 20 and a one-cell shift of the labels scores near it; bilinear blur at the borders of
    # random 4-pixel cells costs the rest.
    assert segmentation_metrics(conf)["miou"] > 75


def test_label_store_pads_with_the_ignore_index():
    store, counts = seghead.label_store(2, 3, 4, lambda i: np.full((2, 2), i, dtype=np.int64), 255, 2)
    assert store.shape == (2, 3, 4) and store.dtype == np.uint8 and counts.tolist() == [4, 4]
    assert store[1, :2, :2].tolist() == [[1, 1], [1, 1]] and (store[1, 2] == 255).all()


@pytest.mark.parametrize(
    ("classes", "ignore", "dtype"), [(256, 255, np.uint8), (300, 255, np.uint16), (3, 1000, np.uint16)]
)
def test_the_label_store_is_as_wide_as_its_labels(classes, ignore, dtype):
    """ADE20K-style 16-bit labels were stored in uint8 whenever the ignore index fit: label 300 read as 44."""
    store, _ = seghead.label_store(1, 2, 2, lambda i: np.full((2, 2), classes - 1), ignore, classes)
    assert store.dtype == dtype and (store[0] == classes - 1).all()
    with pytest.raises(ValueError, match="do not fit"):
        seghead.label_store(1, 2, 2, lambda i: np.full((2, 2), 70000), 255, 3)


def test_coco_polygons_become_a_label_map_with_the_background_category_at_zero(tmp_path):
    Image.new("RGB", (10, 8)).save(tmp_path / "a.png")
    square = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    ann = {
        "size": [10, 8],
        "boxes": [[0, 0, 8, 8, 1], [2, 2, 4, 4, 2]],
        "segmentation": [square(0, 0, 8, 8), square(2, 2, 4, 4)],
    }
    ds = ImageDataset(
        "parts", tmp_path, ["_background_", "door", "wheel"], [Sample("a.png", -1, "test", ann)]
    )
    assert label_classes(ds, "mask") == ["background", "door", "wheel"]
    labels = label_map(ds, ds.samples[0], "mask")
    assert labels.shape == (8, 10)
    assert labels[3, 3] == 2 and labels[0, 0] == 1 and labels[0, 9] == 0  # the small part drawn on top
    assert label_classes(ds, "object_mask") == ["background", "object"]
    assert set(np.unique(label_map(ds, ds.samples[0], "object_mask"))) == {0, 1}
    np.testing.assert_array_equal(reduce_zero_label(np.array([0, 1, 2, 255])), [255, 0, 1, 255])
    np.testing.assert_array_equal(
        resize_nearest(np.array([[0, 1], [2, 3]]), 4, 2), [[0, 0, 1, 1], [2, 2, 3, 3]]
    )


def test_the_embedded_object_mask_takes_the_image_class(tiny_embedded):
    ds = tiny_embedded
    sample = ds.samples[7]
    labels = label_map(ds, sample, "object_mask")
    assert set(np.unique(labels)) == {0, sample.label + 1}
    assert label_classes(ds, "object_mask") == ["background", *ds.classes]
    parts = label_map(ds, sample, "mask")
    np.testing.assert_array_equal(labels > 0, parts > 0)


def test_a_window_is_the_image_rescaled_then_cropped(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (90, 150, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    ds = ImageDataset("one", tmp_path, [], [Sample("a.png", -1, "test", {})])
    view = window_view(ds, WindowSpec(crop=64, stride=48, short=64, long=256))
    assert [s.ann["crop"] for s in view.samples] == [[0, 0, 64, 64], [43, 0, 107, 64]]  # 107 x 64 rescaled
    framing = Framing("native", 64, 1.0, "bilinear", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 16)
    x, geo = ImageRows(view, [1], framing)[0][0], ImageRows(view, [1], framing)[0][3]
    expect = Image.fromarray(pixels).resize((107, 64), Image.Resampling.BILINEAR).crop((43, 0, 107, 64))
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy() * 255, np.asarray(expect), atol=0.01)
    assert list(geo[:2]) == [64, 64]
    assert view.fingerprint() != window_view(ds, WindowSpec(64, 32, 64, 256)).fingerprint()


@pytest.mark.parametrize("probe, level", [("part_segmentation", "part"), ("object_segmentation", "object")])
def test_the_probe_runs_end_to_end_on_cached_windows(
    tmp_path, monkeypatch, capsys, tiny_embedded, probe, level
):
    from probebench.paths import results_dir

    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    knobs = "crop: 64, stride: 48, short: 64, long: 256, iterations: 30, warmup_iters: 3, batch_size: 8"
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(
        f"seg4: {{probe: {probe}, dataset: embedded, knobs: {{{knobs}}}}}\n"
        f"seglast: {{probe: {probe}, dataset: embedded, knobs: {{head: last, {knobs}}}}}\n"
    )
    code, out, err = call_cli(
        monkeypatch, capsys, "run", "-e", "tiny_random", "-t", "seg4", "-t", "seglast", "--tasks", str(tasks)
    )
    assert code == 0, out + err
    found = {
        p.stem.rsplit("__", 1)[-1]: json.loads(p.read_text()) for p in results_dir().rglob("*__seg*.json")
    }
    four, last = found["seg4"], found["seglast"]
    assert four["task"]["level"] == level and 0 <= four["metrics"]["miou"] <= 100
    assert four["knobs"]["layer"] == [3, 5, 7, 11] and last["knobs"]["layer"] == 11
    assert four["knobs"]["norm"] is False and four["knobs"]["geometry"]["mode"] == "native"
    assert four["dataset"]["view_of"] == "embedded" and four["dataset"]["windows"]["crop"] == 64
    assert four["probe"]["windows"] == {"train": 20, "test": 10}
    assert four["deviations"] == [
        "segmentation-no-augmentation",
        "segmentation-fp32",
        "segmentation-loss-labelled-pixels",
    ]
    assert ("background" in four["metrics"]["per_class_iou"]) == (level == "object")


def test_the_chunked_loss_equals_the_whole_batch_loss(monkeypatch):
    grads = []
    for chunk in (2**30, 300):  # one chunk; about one window per chunk
        monkeypatch.setattr(seghead, "MAX_LOGIT_ELEMENTS", chunk)
        torch.manual_seed(0)
        head = seghead.LinearSegHead([4], 3)
        torch.nn.init.normal_(head.conv.weight)
        grid = torch.randn(5, 4, 3, 3, generator=torch.Generator().manual_seed(1))
        labels = torch.randint(0, 3, (5, 12, 12), generator=torch.Generator().manual_seed(2))
        labels[0, :4] = 255
        loss = seghead._loss_backward(head([grid]), labels, (12, 12), 255)
        up = F.interpolate(head([grid]), size=(12, 12), mode="bilinear", align_corners=False)
        assert loss == pytest.approx(F.cross_entropy(up, labels, ignore_index=255).item(), rel=1e-5)
        grads.append(head.conv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
