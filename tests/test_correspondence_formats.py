"""SPair-71k, PF-PASCAL and PF-WILLOW: small fixtures written in each release's layout (see the reader's
docstring for where each layout comes from), read into images with named keypoints and the benchmark's own
pair lists; hostile files named in one line; and a listed-pairs run end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from probebench.data.formats import read_dataset
from probebench.errors import UserError
from tests.conftest import TINY_A, call_cli, use_registry

KPS = {  # per image: keypoint id -> (x, y); the box is the keypoints' span plus a margin
    "a": {0: (10.0, 12.0), 1: (40.0, 20.0), 3: (30.0, 40.0)},
    "b": {0: (14.0, 10.0), 1: (50.0, 22.0), 2: (20.0, 30.0)},
    "c": {1: (8.0, 8.0), 3: (44.0, 36.0)},
}


def _image(path: Path, size=(64, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def write_spair(root: Path, pairs=(("a", "b"), ("b", "c"), ("c", "a"))) -> Path:
    """SPair-71k's layout with one category, `cat`, and three test pairs."""
    root = root / "SPair-71k"
    lines = []
    for name in KPS:
        _image(root / "JPEGImages" / "cat" / f"{name}.jpg")
    for n, (s, t) in enumerate(pairs):
        ids = sorted(set(KPS[s]) & set(KPS[t]))
        line = f"{n:06d}-{s}-{t}:cat"
        lines.append(line)
        pair = {
            "pair_id": n,
            "src_imname": f"{s}.jpg",
            "trg_imname": f"{t}.jpg",
            "category": "cat",
            "src_kps": [list(KPS[s][k]) for k in ids],
            "trg_kps": [list(KPS[t][k]) for k in ids],
            "kps_ids": [str(k) for k in ids],
            "src_bndbox": [2, 2, 60, 44],
            "trg_bndbox": [2, 2, 60, 44],
            "src_imsize": [64, 48, 3],
            "trg_imsize": [64, 48, 3],
        }
        (root / "PairAnnotation" / "test").mkdir(parents=True, exist_ok=True)
        (root / "PairAnnotation" / "test" / f"{line}.json").write_text(json.dumps(pair))
    (root / "Layout" / "large").mkdir(parents=True)
    (root / "Layout" / "large" / "test.txt").write_text("\n".join(lines) + "\n")
    return root.parent


def test_spair_reads_images_with_named_keypoints_and_its_pair_list(tmp_path):
    ds = read_dataset("spair", write_spair(tmp_path), "spair", {"splits": ["test"]})
    assert [s.path for s in ds.samples] == [f"JPEGImages/cat/{n}.jpg" for n in "abc"]
    assert ds.classes == ["cat"] and ds.extra["keypoint_names"] == ["cat 0", "cat 1", "cat 2", "cat 3"]
    # image b is named by two pairs, which together give it keypoints 0 and 1 (its 2 is shared with no one)
    b = ds.samples[1]
    assert sorted(kp[3] for kp in b.ann["keypoints"]) == [0, 1] and b.ann["boxes"] == [[2, 2, 60, 44, 0]]
    assert ds.extra["pairs"]["test"] == [[0, 1, [0, 1]], [1, 2, [1]], [2, 0, [1, 3]]]
    assert ds.extra["pck_threshold"] == "box"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p.update(src_imname="zebra.jpg"), r"image JPEGImages/cat/zebra.jpg is not in .*fix the"),
        (lambda p: p.update(src_imname="../../x.jpg"), "leaves the dataset's folder"),
        (lambda p: p.update(kps_ids=["0"]), "src_kps, trg_kps and kps_ids are not lists of one length"),
        # a's keypoint 1 is also in pair c > a, at (40, 20)
        (lambda p: p["src_kps"][1].__setitem__(0, 99.0), r"keypoint 1 of JPEGImages/cat/a.jpg is at \(40,"),
        (lambda p: p.pop("category"), "has no 'category'"),
        (lambda p: p.update(kps_ids=["x", "1"]), "'x' is not a whole number"),
    ],
)
def test_hostile_spair_pair_files_are_one_line_naming_the_file(tmp_path, edit, expected):
    root = write_spair(tmp_path)
    file = root / "SPair-71k" / "PairAnnotation" / "test" / "000000-a-b:cat.json"
    pair = json.loads(file.read_text())
    edit(pair)
    file.write_text(json.dumps(pair))
    with pytest.raises(UserError, match=expected):
        read_dataset("spair", root, "spair", {"splits": ["test"]})


def test_a_spair_keypoint_outside_its_image_is_dropped_and_counted(tmp_path):
    root = write_spair(tmp_path, pairs=(("a", "b"),))
    file = root / "SPair-71k" / "PairAnnotation" / "test" / "000000-a-b:cat.json"
    pair = json.loads(file.read_text())
    pair["trg_kps"][0] = [640.0, 10.0]
    file.write_text(json.dumps(pair))
    ds = read_dataset("spair", root, "spair", {"splits": ["test"]})
    assert len(ds.samples[1].ann["keypoints"]) == 1 and any("outside their image" in w for w in ds.warnings)


def write_pf_pascal(root: Path) -> Path:
    from scipy.io import savemat

    root = root / "PF-PASCAL"
    for name in KPS:
        _image(root / "JPEGImages" / f"2008_{name}.jpg")
        kps = np.full((4, 2), np.nan)
        for k, xy in KPS[name].items():
            kps[k] = xy
        (root / "Annotations" / "car").mkdir(parents=True, exist_ok=True)
        box = np.array([[1, 1, 60, 40]])
        savemat(root / "Annotations" / "car" / f"2008_{name}.mat", {"kps": kps, "bbox": box})
    rows = ["source_image,target_image,class"]
    for s, t in (("a", "b"), ("c", "a")):
        rows.append(f"PF-PASCAL/JPEGImages/2008_{s}.jpg,PF-PASCAL/JPEGImages/2008_{t}.jpg,7")
    (root / "test_pairs.csv").write_text("\n".join(rows) + "\n")
    return root.parent


def test_pf_pascal_reads_mat_keypoints_by_class(tmp_path):
    ds = read_dataset("pf_pascal", write_pf_pascal(tmp_path), "pf", {"splits": ["test"]})
    assert ds.classes == ["car"] and ds.extra["pck_threshold"] == "image"
    assert ds.extra["pairs"]["test"] == [[0, 1, [0, 1]], [2, 0, [1, 3]]]
    assert ds.samples[0].ann["keypoints"] == [[10.0, 12.0, 1, 0], [40.0, 20.0, 1, 1], [30.0, 40.0, 1, 3]]
    (tmp_path / "PF-PASCAL" / "Annotations" / "car" / "2008_b.mat").write_bytes(b"not a mat file")
    with pytest.raises(UserError, match=r"PF-PASCAL annotation .*2008_b.mat cannot be read"):
        read_dataset("pf_pascal", tmp_path, "pf", {"splits": ["test"]})


def write_pf_willow(root: Path) -> Path:
    root = root / "PF-WILLOW"
    pts = {n: [(5.0 + 4 * k + i, 6.0 + 3 * k) for k in range(10)] for i, n in enumerate(("a", "b"))}
    for name in pts:
        _image(root / "car(G)" / f"{name}.png")
    head = "imageA,imageB," + ",".join(f"c{i}" for i in range(40))
    coords = [x for n in ("a", "b") for x in [p[0] for p in pts[n]] + [p[1] for p in pts[n]]]
    row = "PF-dataset/car(G)/a.png,PF-dataset/car(G)/b.png," + ",".join(f"{v:g}" for v in coords)
    (root / "test_pairs.csv").write_text(head + "\n" + row + "\n")
    return root.parent


def test_pf_willow_reads_its_csv_keypoints(tmp_path):
    ds = read_dataset("pf_willow", write_pf_willow(tmp_path), "willow", {})
    assert ds.classes == ["car(G)"] and ds.extra["pck_threshold"] == "keypoints"
    assert [s.path for s in ds.samples] == ["car(G)/a.png", "car(G)/b.png"]
    assert ds.samples[1].ann["keypoints"][2] == [14.0, 12.0, 1, 2]
    assert ds.extra["pairs"]["test"][0][2] == list(range(10))
    text = (tmp_path / "PF-WILLOW" / "test_pairs.csv").read_text().replace(",5,", ",five,", 1)
    (tmp_path / "PF-WILLOW" / "test_pairs.csv").write_text(text)
    with pytest.raises(UserError, match=r"test_pairs.csv, line 2: a coordinate is not a number"):
        read_dataset("pf_willow", tmp_path, "willow", {})


def test_listed_pairs_run_end_to_end_and_a_missing_list_is_one_line(tmp_path, monkeypatch, capsys):
    use_registry(tmp_path, monkeypatch, TINY_A)
    root = write_spair(tmp_path / "data")
    (tmp_path / "datasets.yaml").write_text(f"spair: {{format: spair, root: {root}, splits: [test]}}\n")
    (tmp_path / "tasks.yaml").write_text(
        "kc: {probe: keypoint_correspondence, dataset: spair, knobs: {pairs: listed}}\n"
        "kc_img: {probe: keypoint_correspondence, dataset: spair, knobs: {pairs: listed, threshold: image}}\n"
        "kc_val: {probe: keypoint_correspondence, dataset: spair, split: val, knobs: {pairs: listed}}\n"
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = call_cli(
        monkeypatch, capsys, "run", "-e", "tiny_a", "-t", "kc", "-t", "kc_img", "--datasets", "datasets.yaml",
        "--workers", "0",
    )  # fmt: skip
    assert code == 0, err
    runs = Path(os.environ["PROBEBENCH_RESULTS"]) / "runs"
    rec = json.loads((runs / "tiny_a__spair__kc.json").read_text())
    # pairs as listed: a > b on keypoints 0 and 1, b > c on 1, c > a on 1 and 3
    assert (rec["metrics"]["n_pairs"], rec["metrics"]["n_keypoints"], rec["training_seed"]) == (3, 5, None)
    assert set(rec["metrics"]["pck@0.1_per_keypoint"]) == {"cat 0", "cat 1", "cat 3"}
    img = json.loads((runs / "tiny_a__spair__kc_img.json").read_text())
    assert any("papers measure it by the box" in w for w in img["warnings"])
    code, out, err = call_cli(
        monkeypatch, capsys, "run", "-e", "tiny_a", "-t", "kc_val", "--datasets", "datasets.yaml",
        "--workers", "0",
    )  # fmt: skip
    assert code == 2 and ("has no 'val' split" in err or "no pair list for split 'val'" in err), err
