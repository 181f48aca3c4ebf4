"""Keypoint correspondence: the stretch framing's point maps, pair draws, matching (patch, bilinear, ties,
window soft-argmax), PCK's reference sizes and per-pair counts, an oracle run through the probe's own code on
hand-made grids, bad input, and one end-to-end run on the embedded objects."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from probebench.data.base import ImageDataset, Sample
from probebench.data.pairs import draw_pairs, labelled_keypoints, shared_keypoints
from probebench.errors import UserError
from probebench.geometry import Framing, Geometry
from probebench.learners.matching import match_points, point_features
from probebench.metrics.correspondence import pair_counts, reference_size
from probebench.stats.items import ItemScores
from tests.conftest import TINY_A, call_cli, use_registry

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def test_stretch_framing_keeps_the_whole_image_and_maps_points_back_per_axis():
    framing = Framing("stretch", 64, 0.875, "bilinear", MEAN, STD, multiple=16)
    x, g = framing(Image.new("RGB", (300, 150)))
    assert x.shape == (3, 64, 64) and (g.grid_w, g.grid_h, g.left, g.top) == (4, 4, 0, 0)
    corners = np.array([[0.0, 0.0], [300.0, 150.0], [150.0, 75.0]])
    np.testing.assert_allclose(g.image_to_grid(corners), [[0, 0], [4, 4], [2, 2]])
    np.testing.assert_allclose(g.grid_to_image(g.image_to_grid(corners)), corners)
    # the resize framing would crop the sides: a point near the left edge leaves its grid
    _, r = Framing("resize", 64, 1.0, "bilinear", MEAN, STD, multiple=16)(Image.new("RGB", (300, 150)))
    edge = np.array([[5.0, 75.0]])
    assert r.cell_of(edge)[0].tolist() == [-1, -1] and g.cell_of(edge)[0].tolist() == [2, 0]


def _dataset(labels: list[int], keypoints: list[list] | None = None) -> ImageDataset:
    samples = [
        Sample(f"{i}.png", c, "test", {"keypoints": (keypoints or [[]] * len(labels))[i]})
        for i, c in enumerate(labels)
    ]
    return ImageDataset("toy", Path("."), ["a", "b", "c"], samples)


def test_pairs_are_within_a_category_seeded_distinct_and_counted():
    ds = _dataset([0, 0, 0, 0, 1, 1, 1, 2])
    rows = np.arange(8)
    every = draw_pairs(ds, rows, "all", 1, 0)
    assert len(every.pairs) == 4 * 3 + 3 * 2 and every.skipped == {"categories with fewer than two images": 1}
    assert all(ds.samples[s].label == ds.samples[t].label and s != t for s, t in every.pairs)
    a = draw_pairs(ds, rows, "sampled", 5, 0).pairs
    assert len(a) == 5 + 5 and len({tuple(p) for p in a}) == 10  # 5 of 12, then 5 of 6
    assert np.array_equal(a, draw_pairs(ds, rows, "sampled", 5, 0).pairs)
    assert not np.array_equal(a, draw_pairs(ds, rows, "sampled", 5, 1).pairs)
    assert len(draw_pairs(ds, rows, "sampled", 100, 3).pairs) == len(every.pairs)  # fewer: every pair
    # 9 million ordered pairs: drawn one at a time, not by index
    big = draw_pairs(_dataset([0] * 3000), np.arange(3000), "sampled", 50, 0).pairs
    assert len({tuple(p) for p in big}) == 50 and (big[:, 0] != big[:, 1]).all()


def test_keypoints_are_matched_by_name_and_visibility():
    src = {"keypoints": [[1, 1, 1, 0], [2, 2, 0, 1], [3, 3, 1, 4]]}
    trg = {"keypoints": [[5, 5, 1, 4], [6, 6, 1, 0], [7, 7, 1, 2]]}
    a = labelled_keypoints(Sample("s", 0, "t", src), 1, "here")
    b = labelled_keypoints(Sample("t", 0, "t", trg), 1, "here")
    parts, p, q = shared_keypoints(a, b)
    assert parts.tolist() == [0, 4] and p.tolist() == [[1, 1], [3, 3]] and q.tolist() == [[6, 6], [5, 5]]
    twice = Sample("x.png", 0, "t", {"keypoints": [[1, 1, 2, 0, 0], [9, 9, 2, 0, 1]]})
    with pytest.raises(UserError, match="x.png has two keypoints of part 1"):
        labelled_keypoints(twice, 1, "dataset 'coco'")


def test_patch_and_bilinear_features():
    grid = torch.arange(2 * 3 * 1, dtype=torch.float32).reshape(2, 3, 1)  # value = 3 row + col
    np.testing.assert_allclose(point_features(grid, np.array([[1.9, 1.2]]), "patch"), [[4.0]])
    # at a patch centre bilinear is that patch; halfway between two centres, their mean; clamped outside
    pts = np.array([[1.5, 0.5], [2.0, 0.5], [1.5, 1.0], [0.1, 0.1]])
    np.testing.assert_allclose(point_features(grid, pts, "bilinear")[:, 0], [1.0, 1.5, 2.5, 0.0])


def test_matching_picks_the_most_similar_patch_lowest_index_on_ties_and_soft_argmax_refines():
    target = torch.zeros(3, 3, 2)
    target[..., 0] = 1.0  # every patch ties
    uv = match_points(torch.tensor([[1.0, 0.0]]), target)
    np.testing.assert_allclose(uv, [[0.5, 0.5]])  # the first patch, row-major
    target[2, 1] = torch.tensor([0.0, 1.0])
    np.testing.assert_allclose(match_points(torch.tensor([[0.0, 5.0]]), target), [[1.5, 2.5]])
    # a window soft-argmax: equal neighbours on both sides keep the peak; a cold softmax is the argmax
    t = torch.zeros(1, 5, 2)
    t[0, :, 0] = 1.0
    t[0, 2] = torch.tensor([0.0, 1.0])
    t[0, 1] = t[0, 3] = torch.tensor([0.6, 0.8])
    np.testing.assert_allclose(match_points(torch.tensor([[0.0, 1.0]]), t, 1, 0.1), [[2.5, 0.5]])
    t[0, 3] = torch.tensor([0.8, 0.6])  # the right neighbour less similar: the estimate moves left
    u = match_points(torch.tensor([[0.0, 1.0]]), t, 1, 0.1)[0, 0]
    assert 2.0 < u < 2.5
    np.testing.assert_allclose(match_points(torch.tensor([[0.0, 1.0]]), t, 2, 1e-4), [[2.5, 0.5]])


def test_reference_sizes_and_counts():
    box = Sample("b.png", 0, "t", {"boxes": [[10, 20, 50, 100, 0]]})
    pts = np.array([[0.0, 0.0], [30.0, 10.0]])
    assert reference_size(box, "box", (200, 300), pts, "d") == 80
    assert reference_size(box, "keypoints", (200, 300), pts, "d") == 30
    assert reference_size(box, "image", (200, 300), pts, "d") == 300
    two = Sample("two.png", 0, "t", {"boxes": [[0, 0, 1, 1, 0], [0, 0, 2, 2, 0]]})
    with pytest.raises(UserError, match="two.png has 2 boxes.*'keypoints' or 'image'"):
        reference_size(two, "box", (9, 9), pts, "dataset 'x'")
    hits = np.array([1, 0, 1, 1, 0], dtype=bool)
    counts = pair_counts(hits, np.array([0, 0, 1, 1, 1]), np.array([0, 2, 0, 1, 2]), 2, 3)
    assert counts[:, 0].tolist() == [[1, 0, 0], [1, 1, 0]] and counts[:, 1].tolist() == [[1, 0, 1], [1, 1, 1]]
    items = ItemScores()
    items.add("pck@0.1", "aacc", "pairs", ["p0", "p1"], counts, array="pck_0_1")
    assert items.estimate("pck@0.1") == pytest.approx(60.0)  # hits over keypoints, not a mean of pairs


class _Store:
    """Hand-made grids and geometries in the two calls the probe makes of a feature store."""

    def __init__(self, grids: dict[int, np.ndarray], geometry: dict[int, Geometry]) -> None:
        self.grids, self.geometry = grids, geometry

    def load_grids(self, name, rows):
        return [self.grids[int(r)] for r in rows]

    def load_geometry(self, rows, name=None):
        return [self.geometry[int(r)] for r in rows]


def test_an_oracle_grid_scores_100_and_predictions_land_in_original_pixels():
    """Features that name each object point make every match right: the prediction is then the centre of
    the true point's patch, mapped back through the target's own (anisotropic) scale, so PCK is 100 at a
    threshold above half a cell and the per-pair file holds those points."""
    from probebench.tasks.contract import Context, RoleData
    from probebench.tasks.probes import get_probe

    # source 64 x 64 and target 128 x 64, both stretched to 64 x 64 (a 4 x 4 grid of 16 px cells); the
    # target shows the object shifted right by one cell
    eye = np.eye(16, dtype=np.float32).reshape(4, 4, 16)
    shifted = np.zeros_like(eye)
    shifted[:, 1:] = eye[:, :3]
    shifted[:, 0, 15] = 1.0  # a patch no source point resembles
    geo = {
        0: Geometry(64, 64, 64, 64, 0, 0, 64, 64, 4, 4, 16),
        1: Geometry(128, 64, 64, 64, 0, 0, 64, 64, 4, 4, 16),
        2: Geometry(64, 64, 64, 64, 0, 0, 64, 64, 4, 4, 16),
    }
    kps = [
        [[8.0, 8.0, 1, 0], [40.0, 24.0, 1, 1], [50.0, 60.0, 0, 2]],  # the third is not visible
        [[48.0, 8.0, 1, 0], [112.0, 24.0, 1, 1], [60.0, 60.0, 1, 2]],
        [[9.0, 9.0, 0, 0]],  # image 2 shares no visible keypoint with either
    ]
    ds = _dataset([0, 0, 0], kps)
    ds.samples[1].ann["boxes"] = [[0, 0, 128, 64, 0]]
    ds.samples[0].ann["boxes"] = [[0, 0, 64, 64, 0]]
    ds.extra["keypoint_names"] = ["head", "tail", "leg"]
    probe = get_probe("keypoint_correspondence")
    knobs = probe.defaults() | {"pairs": "all", "alphas": [0.01, 0.1]}
    store = _Store({0: eye, 1: shifted, 2: eye}, geo)
    role = RoleData(ds, "test", store, np.arange(3), np.zeros(3, dtype=np.int64))
    ctx = Context({"test": role}, [0], "pooled", knobs, 0, 0, torch.device("cpu"), None)  # type: ignore[arg-type]
    ev = probe.evaluate(ctx)
    assert ev.metrics["n_pairs"] == 2 and ev.metrics["n_keypoints"] == 4  # 0 -> 1 and 1 -> 0
    assert ev.metrics["pck@0.1"] == 100.0 and ev.metrics["pck@0.01"] == 100.0  # each on a patch centre
    assert ev.metrics["pck@0.1_per_keypoint"] == {"head": 100.0, "tail": 100.0}
    assert ev.details["skipped"] == {"pairs without a keypoint labelled in both images": 4}
    rows = list(csv.DictReader(io.StringIO(ev.outputs["pairs.csv"].decode())))
    assert [(r["keypoint"], r["pred_x"], r["pred_y"]) for r in rows] == [
        ("head", "48.00", "8.00"),  # cell (0, 1) of the wide target: x = 1.5 cells x 16 px x 2
        ("tail", "112.00", "24.00"),
        ("head", "8.00", "8.00"),
        ("tail", "40.00", "24.00"),
    ]
    assert ev.items is not None and ev.items.estimate("pck@0.1") == 100.0


def test_a_run_on_the_embedded_objects_writes_pck_items_and_pairs(
    tmp_path, monkeypatch, capsys, tiny_embedded
):  # noqa: E501
    """The shipped task end to end: every visible part's centre is a keypoint, pairs drawn per class with the
    run's seed, each image's grid read once, the per-pair file beside the record, and the record's
    intervals from its per-pair items."""
    use_registry(tmp_path, monkeypatch, TINY_A)
    code, out, err = call_cli(
        monkeypatch, capsys, "run", "-e", "tiny_a", "-t", "keypoint_correspondence", "--seeds", "0,1",
        "--workers", "0",
    )  # fmt: skip
    assert code == 0, err
    assert "tiny_a x embedded x keypoint_correspondence x seed0: pck@0.1=" in out
    runs = Path(os.environ["PROBEBENCH_RESULTS"]) / "runs"
    r0 = json.loads((runs / "tiny_a__embedded__keypoint_correspondence.json").read_text())
    r1 = json.loads((runs / "tiny_a__embedded__keypoint_correspondence__seed1.json").read_text())
    assert r0["knobs"]["geometry"]["mode"] == "stretch" and r0["training_seed"] == 0
    # 5 classes x 2 test images: 2 ordered pairs each, fewer than asked, so both seeds take every pair
    assert r0["metrics"]["n_pairs"] == 10 and r0["probe"]["image_reads"] == 10
    assert r0["metrics"]["pck@0.1"] == r1["metrics"]["pck@0.1"]
    assert r0["items"]["groups"] == {"pairs": 10} and set(r0["outputs"]) == {"items.npz", "pairs.csv"}
    lo, hi = r0["metrics"]["pck@0.1_ci95"]
    assert lo <= r0["metrics"]["pck@0.1"] <= hi
    assert r0["metrics"]["pck@0.1_grid_bound"] >= 0
    table = (runs / "tiny_a__embedded__keypoint_correspondence" / "pairs.csv").read_text().splitlines()
    assert len(table) == 1 + r0["metrics"]["n_keypoints"]
