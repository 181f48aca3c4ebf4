"""In-context dense retrieval (Hummingbird): exact chunked neighbours, patch label shares, the memory's
rare-class-first sampling, label transfer, the upsampling to pixels, an oracle through the probe's own code,
bad masks, and one end-to-end run of both levels on the embedded objects."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from probebench.data.base import ImageDataset, Sample
from probebench.errors import UserError
from probebench.geometry import Geometry
from probebench.learners.dense_retrieval import grid_to_pixels, patch_shares, sample_patches, transfer_labels
from probebench.learners.neighbours import nearest_neighbours
from tests.conftest import TINY_A, call_cli, use_registry


def test_neighbours_are_exact_whatever_the_chunks_and_read_a_float16_memory_map(tmp_path):
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((5000, 16)).astype(np.float16)
    memmap = np.lib.format.open_memmap(tmp_path / "bank.npy", "w+", np.float16, bank.shape)
    memmap[:] = bank
    queries = rng.standard_normal((300, 16)).astype(np.float32)
    full = queries @ bank.astype(np.float32).T
    want = np.argsort(-full, axis=1, kind="stable")[:, :7]
    for block, bc in ((2**30, 5000), (64 * 999 * 4, 999), (7 * 128 * 4, 128)):
        sims, index = nearest_neighbours(queries, memmap, 7, block_bytes=block, bank_chunk=bc)
        assert np.array_equal(index.numpy(), want)
        np.testing.assert_allclose(sims.numpy(), np.take_along_axis(full, want, 1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="8 neighbours asked of a bank of 7"):
        nearest_neighbours(queries, bank[:7], 8)
    queries[3, 2] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        nearest_neighbours(queries, bank, 7)


def test_a_later_bank_row_never_displaces_an_equal_earlier_one():
    """Across blocks ties keep the earlier row (inside one block, which of the tied rows fill the last
    places is topk's choice, as in faiss)."""
    bank = np.zeros((10, 2), dtype=np.float32)
    bank[:, 0] = 1.0  # every row ties
    for chunk in (4, 2, 1):
        sims, index = nearest_neighbours(np.array([[1.0, 0.0]], np.float32), bank, 4, bank_chunk=chunk)
        assert index.tolist() == [[0, 1, 2, 3]] and sims.tolist() == [[1.0] * 4]


def _geometry(width: int, height: int, side: int, cell: int) -> Geometry:
    """The stretch framing of a width x height image to side x side."""
    return Geometry(width, height, side, side, 0, 0, side, side, side // cell, side // cell, cell)


def test_patch_shares_count_each_cells_pixels_with_ignored_ones_as_background():
    labels = np.array([[1, 1, 2, 2], [1, 255, 2, 3], [0, 0, 3, 3], [0, 0, 3, 3]])
    shares = patch_shares(labels, _geometry(4, 4, 4, 2), 4, 255)
    np.testing.assert_allclose(shares, [[0.25, 0.75, 0, 0], [0, 0, 0.75, 0.25], [1, 0, 0, 0], [0, 0, 0, 1]])
    # a 2 x 1 image stretched to 4 x 4: each label covers two columns, so each cell holds one label
    wide = patch_shares(np.array([[1, 2]]), _geometry(2, 1, 4, 2), 3, 255)
    np.testing.assert_allclose(wide, [[0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]])


def test_a_bounded_memory_keeps_the_patches_of_rare_classes_first():
    shares = np.zeros((10, 3), dtype=np.float32)
    shares[:, 0] = 1.0
    shares[7] = [0.0, 0.0, 1.0]  # the one patch of class 2 scores 1 x u, the others 9 x u
    rng = np.random.default_rng(0)
    kept = [sample_patches(shares, 2, rng) for _ in range(200)]
    assert sum(7 in k for k in kept) > 150  # a uniform draw of 2 of 10 keeps it about 40 times in 200
    shares[3] = [0.5, 0.0, 0.5]  # classes 0 and 2: 9 + 2 = 11 x u, the highest score
    kept = [sample_patches(shares, 2, rng) for _ in range(200)]
    assert sum(3 in k for k in kept) < 35 < sum(7 in k for k in kept)
    assert sample_patches(shares, 10, rng).tolist() == list(range(10))
    a, b = (sample_patches(shares, 4, np.random.default_rng(s)) for s in (1, 1))
    assert np.array_equal(a, b)


def test_label_transfer_and_upsampling():
    sims = torch.tensor([[1.0, 0.0]])
    shares = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    out = transfer_labels(sims, shares, 0.5)
    w = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    np.testing.assert_allclose(out.numpy(), [w.numpy()])
    # a 2 x 2 grid of one-hot classes sampled at every pixel of a 8 x 4 image: its quadrants
    dist = torch.zeros(2, 2, 4)
    for c, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        dist[i, j, c] = 1.0
    pred = grid_to_pixels(dist, _geometry(8, 4, 4, 2))
    assert pred.tolist() == [[0] * 4 + [1] * 4] * 2 + [[2] * 4 + [3] * 4] * 2


class _Store:
    def __init__(self, grids, geometry):
        self.grids, self.geometry = grids, geometry

    def load_grids(self, name, rows):
        return [self.grids[int(r)] for r in rows]

    def load_geometry(self, rows, name=None):
        return [self.geometry[int(r)] for r in rows]


def _quadrants(classes: list[int]) -> np.ndarray:
    out = np.zeros((8, 8), dtype=np.uint8)
    for value, (i, j) in zip(classes, [(0, 0), (0, 1), (1, 0), (1, 1)], strict=True):
        out[i * 4 : i * 4 + 4, j * 4 : j * 4 + 4] = value
    return out


def _oracle_run(tmp_path: Path, test_mask: np.ndarray, features: str = "class"):
    """Two training images and one test image of 8 x 8 pixels in four one-class quadrants, read as a 2 x 2
    grid whose features name the class of each cell (`class`) or are random (`noise`)."""
    from probebench.tasks.contract import Context, RoleData
    from probebench.tasks.probes import get_probe

    layouts = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2]]
    masks = [_quadrants(c) for c in layouts[:2]] + [test_mask]
    samples = []
    for i, mask in enumerate(masks):
        Image.fromarray(mask).save(tmp_path / f"m{i}.png")
        samples.append(Sample(f"i{i}.png", -1, "train" if i < 2 else "test", {"mask": f"m{i}.png"}))
    ds = ImageDataset("quads", tmp_path, [], samples, extra={"mask_classes": ["a", "b", "c", "d"]})
    rng = np.random.default_rng(0)
    grids = {}
    for i, layout in enumerate(layouts):
        g = np.eye(4, dtype=np.float32)[np.array(layout).reshape(2, 2)]
        grids[i] = g if features == "class" else rng.standard_normal((2, 2, 4)).astype(np.float32)
    store = _Store(grids, dict.fromkeys(range(3), _geometry(8, 8, 8, 4)))
    probe = get_probe("part_dense_retrieval")
    knobs = probe.defaults() | {"k": 2}
    train = RoleData(ds, "train", store, np.array([0, 1]), np.full(2, -1))
    test = RoleData(ds, "test", store, np.array([2]), np.full(1, -1))
    ctx = Context({"train": train, "test": test}, [0], "pooled", knobs, 0, 0, torch.device("cpu"), None)  # type: ignore[arg-type]
    return probe.evaluate(ctx)


def test_an_oracle_labels_every_pixel_and_noise_does_not(tmp_path):
    ev = _oracle_run(tmp_path, _quadrants([1, 0, 3, 2]))
    assert ev.metrics["miou"] == 100.0 and ev.metrics["n_images"] == 1
    assert ev.details["memory_patches"] == 8 and ev.items.estimate("miou") == 100.0
    assert ev.deviations == ["dense-retrieval-no-augmentation", "dense-retrieval-scored-at-image-size"]
    noise = _oracle_run(tmp_path, _quadrants([1, 0, 3, 2]), features="noise")
    assert noise.metrics["miou"] < 60.0


def test_a_mask_of_another_size_than_its_image_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"labels of i2.png are 6 x 8 pixels, its image 8 x 8.*fix the mask"):
        _oracle_run(tmp_path, np.zeros((8, 6), dtype=np.uint8))


def test_both_levels_run_on_the_embedded_objects_from_one_cache(tmp_path, monkeypatch, capsys, tiny_embedded):
    use_registry(tmp_path, monkeypatch, TINY_A)
    code, out, err = call_cli(
        monkeypatch, capsys, "run", "-e", "tiny_a", "-t", "object_dense_retrieval",
        "-t", "part_dense_retrieval", "--workers", "0",
    )  # fmt: skip
    assert code == 0, err
    runs = Path(os.environ["PROBEBENCH_RESULTS"]) / "runs"
    obj = json.loads((runs / "tiny_a__embedded__object_dense_retrieval.json").read_text())
    part = json.loads((runs / "tiny_a__embedded__part_dense_retrieval.json").read_text())
    assert obj["task"]["level"] == "object" and part["task"]["level"] == "part"
    assert obj["roles"]["test"]["cache_key"] == part["roles"]["test"]["cache_key"]  # one cache, both levels
    assert obj["probe"]["memory_patches"] == 20 * 16 and obj["metrics"]["n_images"] == 10
    assert len(obj["metrics"]["per_class_iou"]) == 6 and len(part["metrics"]["per_class_iou"]) == 15
    assert (
        obj["knobs"]["geometry"]["mode"] == "stretch"
        and "dense-retrieval-no-augmentation" in obj["deviations"]
    )
    lo, hi = obj["metrics"]["miou_ci95"]
    assert lo <= obj["metrics"]["miou"] <= hi


def test_a_test_set_without_a_labelled_pixel_has_no_miou_and_says_why(tmp_path):
    """All ignored (255) in the one test image: mIoU over no pixel would be a made-up number."""
    ev = _oracle_run(tmp_path, np.full((8, 8), 255, dtype=np.uint8))
    assert "miou" not in ev.metrics and "no labelled pixel" in ev.undefined["miou"] and ev.items is None
