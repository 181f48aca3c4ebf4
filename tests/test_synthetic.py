"""Tests for the procedural object/part dataset (probebench.data.synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from probebench.data import synthetic
from probebench.data.synthetic import CLASSES, GENERATOR_VERSION, PART_OF, PARTS, generate

TRAIN, TEST, SIZE = 4, 2, 96
N_CLASSES = len(CLASSES)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(
        tmp_path_factory.mktemp("syn") / "ds", per_class_train=TRAIN, per_class_test=TEST, image_size=SIZE
    )


def _annotations(root: Path) -> dict:
    return json.loads((root / "annotations.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path, rel: str) -> Image.Image:
    with Image.open(root / rel) as im:
        im.load()
        return im


def test_vocabulary_is_consistent() -> None:
    assert 5 <= N_CLASSES <= 6 and GENERATOR_VERSION
    assert set(PART_OF) == set(PARTS) and set(PART_OF.values()) == set(CLASSES)
    for cls in CLASSES:
        assert 2 <= sum(c == cls for c in PART_OF.values()) <= 4


def test_counts_order_and_fields(small: Path) -> None:
    ann = _annotations(small)
    assert ann["generator_version"] == GENERATOR_VERSION and ann["seed"] == 0 and ann["image_size"] == SIZE
    assert ann["classes"] == list(CLASSES) and ann["parts"] == list(PARTS) and ann["part_of"] == PART_OF
    samples = ann["samples"]
    splits = [s["split"] for s in samples]
    assert splits == ["train"] * TRAIN * N_CLASSES + ["test"] * TEST * N_CLASSES
    for split in ("train", "test"):
        labels = [s["label"] for s in samples if s["split"] == split]
        assert labels == [k % N_CLASSES for k in range(len(labels))]  # interleaved: prefixes balanced
    for i, s in enumerate(samples):
        assert set(s) == {"file", "parts", "objects", "split", "label", "box", "keypoints"}
        assert (s["file"], s["parts"], s["objects"]) == (
            f"images/{i:05d}.png",
            f"parts/{i:05d}.png",
            f"objects/{i:05d}.png",
        )
    assert len(list((small / "images").iterdir())) == len(samples)
    assert not list(small.parent.glob("*.tmp-*"))


def test_each_visible_part_has_a_keypoint_on_it(small: Path) -> None:
    """One keypoint per visible part, named by the part, on a pixel of that part (the pixel nearest its
    centroid): an off-part keypoint would score a correct match as a miss."""
    for s in _annotations(small)["samples"][:20]:
        mask = np.asarray(Image.open(small / s["parts"]))
        present = sorted(int(v) - 1 for v in np.unique(mask[mask > 0]))
        assert sorted(kp[3] for kp in s["keypoints"]) == present
        for x, y, visible, part in s["keypoints"]:
            assert visible == 1 and mask[int(y), int(x)] == part + 1 and (x % 1, y % 1) == (0.5, 0.5)


def test_byte_identical_across_runs(small: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", per_class_train=TRAIN, per_class_test=TEST, image_size=SIZE)
    assert _files(again) == _files(small)


def test_samples_are_order_independent_and_seeded(small: Path, tmp_path: Path) -> None:
    fewer = generate(tmp_path / "fewer", per_class_train=1, per_class_test=1, image_size=SIZE)
    for i in range(N_CLASSES):  # train prefix uses the same per-sample rng, whatever the total size
        assert (fewer / f"images/{i:05d}.png").read_bytes() == (small / f"images/{i:05d}.png").read_bytes()
    other = generate(tmp_path / "other", per_class_train=1, per_class_test=1, image_size=SIZE, seed=1)
    assert (other / "images/00000.png").read_bytes() != (small / "images/00000.png").read_bytes()


def test_existing_complete_root_is_not_rewritten(small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: p.stat().st_mtime_ns for p in small.rglob("*")}

    def fail(*args, **kwargs):
        raise AssertionError("complete root must be returned without rendering")

    monkeypatch.setattr(synthetic, "render_sample", fail)
    assert generate(small, per_class_train=TRAIN, per_class_test=TEST, image_size=SIZE) == small
    assert {p: p.stat().st_mtime_ns for p in small.rglob("*")} == before


def test_partial_root_and_stale_tmp_are_regenerated(small: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)  # interrupted: no annotations.json
    (root / "images" / "junk.png").write_bytes(b"junk")
    stale = tmp_path / "ds.tmp-999999"
    stale.mkdir()
    generate(root, per_class_train=TRAIN, per_class_test=TEST, image_size=SIZE)
    assert _files(root) == _files(small)


def test_failure_leaves_no_complete_looking_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = synthetic.render_sample

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_sample", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        generate(tmp_path / "ds", per_class_train=2, per_class_test=1, image_size=48)
    assert not (tmp_path / "ds").exists()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_masks_align_with_images(small: Path) -> None:
    for s in _annotations(small)["samples"]:
        img, parts, obj = (_load(small, s[k]) for k in ("file", "parts", "objects"))
        assert (img.mode, parts.mode, obj.mode) == ("RGB", "L", "L")
        assert img.size == parts.size == obj.size == (SIZE, SIZE)
        parts_a, obj_a = np.asarray(parts), np.asarray(obj)
        assert set(np.unique(obj_a)) <= {0, 255}
        assert np.array_equal(obj_a == 255, parts_a > 0)
        ys, xs = np.nonzero(obj_a)
        x0, y0, x1, y1 = s["box"]
        assert [x0, y0, x1, y1] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE


def test_parts_belong_to_class_and_all_visible(small: Path) -> None:
    for s in _annotations(small)["samples"]:
        present = set(np.unique(np.asarray(_load(small, s["parts"])))) - {0}
        expected = {PARTS.index(p) + 1 for p, c in PART_OF.items() if c == CLASSES[s["label"]]}
        assert present == expected


def test_every_part_survives_occlusion_even_when_tiny() -> None:
    # At 32 px thin parts (lamp pole, door) often vanish under later parts: the layout must be re-drawn.
    for label, cls in enumerate(CLASSES):
        expected = {PARTS.index(p) + 1 for p, c in PART_OF.items() if c == cls}
        for i in range(25):
            img, mask = synthetic.render_sample(label, 32, np.random.default_rng([7, i]))
            assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and mask.dtype == np.uint8
            counts = np.bincount(mask.ravel(), minlength=len(PARTS) + 1)
            assert set(np.flatnonzero(counts[1:]) + 1) == expected
            assert counts[sorted(expected)].min() >= synthetic.MIN_PART_PIXELS


def test_position_and_scale_vary(small: Path) -> None:
    boxes = np.array([s["box"] for s in _annotations(small)["samples"]], dtype=float)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert (centres.std(axis=0) > 0.08 * SIZE).all()
    assert sides.max() / sides.min() > 1.8
    assert sides.min() >= 0.15 * SIZE and sides.max() <= 0.82 * SIZE


def test_mean_colour_does_not_separate_classes(tmp_path: Path) -> None:
    root = generate(tmp_path / "ds", per_class_train=10, per_class_test=10, image_size=64)
    samples = _annotations(root)["samples"]
    means = np.array([np.asarray(_load(root, s["file"])).reshape(-1, 3).mean(0) for s in samples])
    labels = np.array([s["label"] for s in samples])
    train = np.array([s["split"] == "train" for s in samples])
    centroids = np.stack([means[train & (labels == c)].mean(0) for c in range(N_CLASSES)])
    pred = ((means[~train, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == labels[~train]).mean() < 0.6
