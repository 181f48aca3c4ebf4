"""Named datasets: found or not, counts checked against the expected ones (a partial dataset is an error),
saliency ground-truth conventions, and `probebench doctor`."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from probebench import cli
from probebench.data import catalog
from probebench.data.formats.saliency import saliency_foreground
from probebench.data.lookup import get_dataset
from probebench.errors import UserError


def _saliency_set(root, n: int, drop_mask: int | None = None) -> None:
    (root / "images").mkdir(parents=True)
    (root / "ground_truth_mask").mkdir()
    for i in range(n):
        Image.new("RGB", (8, 6), (i, 0, 0)).save(root / "images" / f"{i:04d}.jpg")
        mask = np.zeros((6, 8), np.uint8)
        mask[1:3, 2:6] = 255
        mask[4, 4] = 60  # a faint anti-aliased pixel: saliency_foreground for TokenCut, not for > 127
        if i != drop_mask:
            Image.fromarray(mask).save(root / "ground_truth_mask" / f"{i:04d}.png")


@pytest.fixture
def small_ecssd(monkeypatch):
    named = catalog.CatalogEntry(
        "ecssd",
        "saliency",
        "ecssd/{images,ground_truth_mask}",
        {"test": 3},
        "Get ECSSD.",
        options={"images": "images", "masks": "ground_truth_mask"},
    )
    monkeypatch.setitem(catalog.CATALOG, "ecssd", named)
    return named


def test_named_dataset_found_counted_and_gt_conventions(tmp_path, small_ecssd, monkeypatch):
    _saliency_set(tmp_path / "ecssd", 3)
    monkeypatch.setenv("PROBEBENCH_DATA", str(tmp_path))
    ds = get_dataset("ecssd")
    assert len(ds) == 3 and ds.describe()["splits"] == {"test": 3}
    tokencut, strict = (
        saliency_foreground(ds.root, ds.samples[0]),
        saliency_foreground(ds.root, ds.samples[0], "binary127"),
    )
    assert tokencut.sum() == 9 and strict.sum() == 8


def test_partial_named_dataset_is_an_error_naming_counts_and_fix(tmp_path, small_ecssd):
    _saliency_set(tmp_path / "ecssd", 2)
    with pytest.raises(
        UserError, match=r"incomplete \(split 'test': found 2 images, expected 3\); Get ECSSD"
    ):
        get_dataset("ecssd", data_root=tmp_path)


def test_missing_named_dataset_says_how_to_get_it(tmp_path, small_ecssd, monkeypatch):
    monkeypatch.delenv("PROBEBENCH_DATA", raising=False)
    with pytest.raises(UserError, match="set PROBEBENCH_DATA or pass --data-root"):
        get_dataset("ecssd")
    with pytest.raises(UserError, match="not found at .*ecssd: Get ECSSD"):
        get_dataset("ecssd", data_root=tmp_path)
    _saliency_set(tmp_path / "ecssd", 3, drop_mask=1)
    with pytest.raises(UserError, match="0001.jpg has no mask"):
        get_dataset("ecssd", data_root=tmp_path)


def test_doctor_reports_ok_partial_and_missing(tmp_path, small_ecssd, monkeypatch, capsys):
    _saliency_set(tmp_path / "ecssd", 3)
    monkeypatch.setattr(sys, "argv", ["probebench", "doctor", "--data-root", str(tmp_path)])
    cli.main()  # every found dataset is fine: exit 0 even though most named ones are not downloaded
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert (
        " ok " in rows["ecssd"]
        and " missing " in rows["voc07"]
        and "VOCtrainval_06-Nov-2007.tar" in rows["voc07"]
    )

    (tmp_path / "ecssd" / "images" / "0002.jpg").unlink()
    (tmp_path / "ecssd" / "ground_truth_mask" / "0002.png").unlink()
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 1
    out = capsys.readouterr()
    assert "partial" in out.out and "found 2 images, expected 3" in out.out and "need attention" in out.err


def test_coco20k_keeps_only_the_listed_files(tmp_path, monkeypatch):
    import json

    root = tmp_path / "coco20k"
    (root / "train2014").mkdir(parents=True)
    images = []
    for i in range(4):
        name = f"COCO_train2014_{i:012d}.jpg"
        Image.new("RGB", (8, 8)).save(root / "train2014" / name)
        images.append({"id": i, "file_name": name, "width": 8, "height": 8})
    cats = [{"id": 1, "name": "person"}]
    (root / "instances_train2014.json").write_text(
        json.dumps({"images": images, "annotations": [], "categories": cats})
    )
    (root / "coco_20k_filenames.txt").write_text(
        "train2014/COCO_train2014_000000000001.jpg\ntrain2014/COCO_train2014_000000000003.jpg\n"
    )
    named = catalog.CATALOG["coco20k"]
    monkeypatch.setitem(
        catalog.CATALOG, "coco20k", catalog.CatalogEntry(**{**named.__dict__, "counts": {"train": 2}})
    )
    ds = get_dataset("coco20k", data_root=tmp_path)
    assert [s.path for s in ds.samples] == [
        "train2014/COCO_train2014_000000000001.jpg",
        "train2014/COCO_train2014_000000000003.jpg",
    ]
