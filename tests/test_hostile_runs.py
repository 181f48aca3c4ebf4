"""The second round of hostile inputs (issue 21), end to end through the command line on tiny data: every
knob has a domain that `validate` and `run` both check before any work; a metric the data cannot define is
recorded as undefined with its reason, never a NaN or a 100; what `run` refuses, `validate` refuses; the
outputs escape what their format needs and honour the umask."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import tiny_data
from conftest import TINY_REGISTRY, call_cli, use_registry
from PIL import Image

from probebench.cache.entries import list_stores
from probebench.errors import UserError
from probebench.tasks.catalog import parse_tasks


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    return tiny_data.make(tmp_path / "data")


def runs() -> Path:
    return Path(os.environ["PROBEBENCH_RESULTS"]) / "runs"


def run(monkeypatch, capsys, data: Path, *args: str, tasks: Path | None = None) -> tuple[int, str, str]:
    files = ["--datasets", str(data / "datasets.yaml"), "--tasks", str(tasks or data / "tasks.yaml")]
    return call_cli(monkeypatch, capsys, "run", "-e", "lite0", "--workers", "0", *files, *args)


def one_line(err: str) -> bool:
    return err.strip().count("\n") == 0 and "Traceback" not in err


# -- every knob has a declared domain ----------------------------------------------------------------------
BAD_KNOBS = [
    ("knn", "temperature: 0", "knobs.temperature': 0 is out of range"),
    ("knn", "temperature: -1", "knobs.temperature"),
    ("knn", "ks: [true]", "true is not a whole number"),
    ("knn", "ks: [0]", "knobs.ks': 0 is out of range"),
    ("attentive", "epochs: 0", "knobs.epochs"),
    ("attentive", "batch_size: 0", "knobs.batch_size"),
    ("attentive", "{epochs: 2, warmup_epochs: 5}", "warm-up epochs leave none"),
    ("linear", "val_fraction: 0", "knobs.val_fraction"),
    ("linear", "val_fraction: 1.5", "knobs.val_fraction"),
    ("linear", "max_iter: 0", "knobs.max_iter"),
    ("linear", "c_grid: [.nan, 2, 3]", "log10 of the first C: NaN is not finite"),
    ("linear", "c_grid: [-2, 2, 1000000000000]", "number of points: 1000000000000 is out of range"),
    ("linear", "c_grid: [2, -2, 3]", "the first C (10^2) is above the last"),
    ("discovery", "lost_k: 0", "knobs.lost_k"),
    ("discovery", "lost_k: -5", "knobs.lost_k"),
    ("discovery", "dinoseg_head: -1", "knobs.dinoseg_head"),
    ("discovery", "tokencut_tau: .nan", "knobs.tokencut_tau': NaN is not finite"),
    ("discovery", "heap_topk: 0", "knobs.heap_topk"),
    ("discovery", "heap_layers: 0", "knobs.heap_layers"),
    ("discovery", "heap_heads: 0", "knobs.heap_heads"),
    ("discovery", "heap_groups: 0", "knobs.heap_groups"),
    ("discovery", "heap_batch: 0", "knobs.heap_batch"),
    ("discovery", "found_batch: 0", "knobs.found_batch"),
    ("discovery", "found_epochs: 0", "knobs.found_epochs"),
    ("discovery", "heap_tau: 0", "knobs.heap_tau"),
    ("discovery", "methods: []", "knobs.methods"),
    ("part_segmentation", "crop: 20000", "knobs.crop"),
    ("part_segmentation", "short: 8000", "knobs.short"),
    ("part_segmentation", "{iterations: 2, warmup_iters: 2}", "fewer warm-up iterations"),
    ("part_retrieval", "include_self: 1", "1 is not true or false"),
]


@pytest.mark.parametrize(("probe", "knobs", "expected"), BAD_KNOBS)
def test_a_knob_outside_its_domain_is_one_line_naming_task_knob_and_domain(probe, knobs, expected):
    knobs = knobs if knobs.startswith("{") else "{" + knobs + "}"
    with pytest.raises(UserError, match=re.escape(expected)) as exc:
        parse_tasks(f"t: {{probe: {probe}, dataset: embedded, knobs: {knobs}}}", "t.yaml")
    text = str(exc.value)
    assert "\n" not in text and text.startswith("t.yaml: task 't'")


def test_validate_and_run_refuse_a_bad_knob_before_any_work(data, monkeypatch, capsys):
    bad = data / "bad.yaml"
    bad.write_text(
        "t0: {probe: knn, dataset: folder, knobs: {temperature: 0}}\n"
        "h0: {probe: discovery, dataset: sal, knobs: {heap_heads: 0}}\n"
    )
    code, out, err = call_cli(monkeypatch, capsys, "validate", "--tasks", str(bad))
    assert code == 2 and err.count("\n") == 2 and "Traceback" not in err
    assert "task 't0', field 'knobs.temperature'" in err and "task 'h0', field 'knobs.heap_heads'" in err
    code, out, err = run(monkeypatch, capsys, data, "-t", "t0", tasks=bad)
    assert code == 2 and "knobs.temperature" in err and not list_stores()


def test_what_run_refuses_validate_refuses(data, monkeypatch, capsys):
    tasks = data / "gaps.yaml"
    tasks.write_text(
        "nods: {probe: knn, dataset: no_such_dataset}\n"
        "knn: {probe: knn, dataset: folder}\n"
        "kpx: {probe: part_retrieval, dataset: coco, crops: {source: keypoints, keypoints: [tail_tip]}}\n"
        "kp99: {probe: part_retrieval, dataset: coco, crops: {source: keypoints, keypoints: [99, a]}}\n"
        "vmask: {probe: part_retrieval, dataset: voc, split: test, crops: {source: masks}}\n"
        "fine: {probe: knn, dataset: folder, knobs: {ks: [1]}}\n"
    )
    code, out, err = call_cli(
        monkeypatch, capsys, "validate", "--tasks", str(tasks), "--datasets", str(data / "datasets.yaml")
    )
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 5, err
    for said in (
        "task 'knn' is a shipped task",
        "task 'nods': unknown dataset 'no_such_dataset'",
        "task 'kpx': dataset 'coco' has no keypoint 'tail_tip'",
        "task 'kp99': dataset 'coco' has no keypoint id 99",
        "task 'vmask': dataset 'voc' has no part label maps",
    ):
        assert any(said in line for line in lines), said


def test_validate_reads_the_label_maps_a_task_reads(data, monkeypatch, capsys):
    """`run` reads part label maps after extraction and refuses a value outside the class list: `validate`
    says so first, for the tasks that read them only."""
    p = data / "masks" / "labels" / "0000.png"
    a = np.array(Image.open(p))
    a[a == 2] = 200
    Image.fromarray(a).save(p)
    files = ["--tasks", str(data / "tasks.yaml"), "--datasets", str(data / "datasets.yaml")]
    code, out, err = call_cli(monkeypatch, capsys, "validate", *files)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    for task in ("seg", "mask_ret"):
        assert any(f"task {task!r}:" in line and "0000.png" in line and "200" in line for line in lines), err
    assert not any("task 'knn2'" in line or "task 'box_ret'" in line for line in lines), err


def test_doctor_reports_every_broken_dataset_naming_its_file(data, monkeypatch, capsys):
    (data / "voc" / "test" / "Annotations" / "im1.xml").write_text("<annotation><size>")
    tiny_data.edit_coco(data, lambda d: d["images"][1].update(id=d["images"][0]["id"]))
    code, out, err = call_cli(monkeypatch, capsys, "doctor", "--datasets", str(data / "datasets.yaml"))
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert code == 1 and "2 dataset(s) need attention" in err, (out, err)
    assert " error " in rows["voc"] and "im1.xml is not valid XML" in rows["voc"]
    assert " error " in rows["coco"] and "test.json: images[1] has id" in rows["coco"]
    assert " ok " in rows["masks"] and " ok " in rows["sal"]


def test_no_crops_left_says_what_took_them(data, monkeypatch, capsys):
    def outside(d):
        for a in d["annotations"]:
            a["keypoints"] = [5000, 5000, 2] * 3

    tiny_data.edit_coco(data, outside)
    code, out, err = run(monkeypatch, capsys, data, "-t", "kp_ret")
    assert code == 2 and one_line(err), err
    assert "no keypoints crops (annotations dropped" in err and "24 keypoint(s) outside their image" in err
    for xml in (data / "voc" / "test" / "Annotations").glob("*.xml"):
        xml.write_text(re.sub("<object>.*</object>", "", xml.read_text()))
    code, out, err = run(monkeypatch, capsys, data, "-t", "box_ret")
    assert code == 2 and "dataset 'voc': no boxes crop in its 'test' images (crops in: train)" in err, err


def test_yaml_merge_keys_share_fields_between_tasks(data, monkeypatch, capsys):
    tasks = data / "merge.yaml"
    tasks.write_text("base: &b {probe: knn, dataset: folder}\nmine: {<<: *b, knobs: {ks: [2]}}\n")
    code, out, err = call_cli(
        monkeypatch, capsys, "validate", "--tasks", str(tasks), "--datasets", str(data / "datasets.yaml")
    )
    assert code == 0 and "ok: 2 tasks" in out, err


# -- undefined metrics -------------------------------------------------------------------------------------
def test_one_class_has_no_accuracy_and_says_why(data, monkeypatch, capsys):
    for split in ("train", "test"):
        for f in (data / "folder" / split / "b").iterdir():
            f.unlink()
        (data / "folder" / split / "b").rmdir()
    code, out, err = run(monkeypatch, capsys, data, "-t", "knn2")
    assert code == 0, err
    assert "top1_k1=undefined (the training images hold 1 class (a)" in out
    rec = json.loads((runs() / "lite0__folder__knn2.json").read_text())
    assert rec["primary"]["value"] is None and "top1_k1" not in rec["metrics"]
    assert "classification needs two or more" in rec["undefined"]["top1_k1"]
    code, out, err = call_cli(monkeypatch, capsys, "leaderboard", "--view", "long", "--format", "csv")
    assert "undefined: the training images hold 1 class" in out and "100.00" not in out
    assert "no number for their primary metric, as it is undefined" in err


def test_retrieval_of_crops_alone_in_their_class_is_undefined_or_counted(data, monkeypatch, capsys):
    """A crop ranked against itself is its only positive: AP 100 whatever the features."""
    code, out, err = run(monkeypatch, capsys, data, "-t", "box_ret")
    rec = json.loads((runs() / "lite0__voc__box_ret.json").read_text())
    assert code == 0 and any("1 crop(s) are the only one of their part class" in w for w in rec["warnings"])
    for suffix in ("JPEGImages/im2.jpg", "Annotations/im2.xml"):
        (data / "voc" / "test" / suffix).unlink()  # left: one 'other' and one 'thing'
    code, out, err = run(monkeypatch, capsys, data, "-t", "box_ret")
    assert code == 0 and "ap=undefined (every crop is the only one of its part class" in out, (out, err)


def test_saliency_on_empty_ground_truth_is_left_out_and_counted(data, monkeypatch, capsys):
    masks = sorted((data / "sal" / "masks").glob("*.png"))
    for p in masks[:2]:
        Image.fromarray(np.zeros((64, 96), np.uint8)).save(p)
    code, out, err = run(monkeypatch, capsys, data, "-t", "disc")
    assert code == 0, err
    rec = json.loads((runs() / "lite0__sal__disc.json").read_text())
    assert rec["metrics"]["n_saliency_images"] == 4 and rec["metrics"]["n_saliency_empty_truth"] == 2
    assert any("2 test image(s) have an empty ground-truth mask" in w for w in rec["warnings"])
    for p in masks:
        Image.fromarray(np.zeros((64, 96), np.uint8)).save(p)
    code, out, err = run(monkeypatch, capsys, data, "-t", "disc")
    rec = json.loads((runs() / "lite0__sal__disc.json").read_text())
    assert not [m for m in rec["metrics"] if "saliency_" in m and not m.startswith("n_")], rec["metrics"]
    assert "has any foreground" in rec["undefined"]["heap_saliency_max_f"]
    assert rec["undefined"]["heap_corloc"] == "no test image has a ground-truth box"
    assert "heap_corloc=undefined (no test image has a ground-truth box)" in out


def test_segmentation_without_a_labelled_pixel_has_no_miou(data, monkeypatch, capsys):
    for p in (data / "masks" / "labels").glob("*.png"):
        Image.fromarray(np.zeros((64, 96), np.uint8)).save(p)
    code, out, err = run(monkeypatch, capsys, data, "-t", "seg")
    assert code == 0 and "RuntimeWarning" not in err and "nan" not in out, err
    assert "miou=undefined (the training images hold no labelled pixel" in out


def test_segmentation_of_one_class_has_no_miou(data, monkeypatch, capsys):
    """With the background reduced away, one class left is a head that always says it: mIoU 100 for any
    encoder, random weights included."""
    (data / "masks" / "classes.txt").write_text("0 background\n1 top\n")
    for p in (data / "masks" / "labels").glob("*.png"):
        a = np.array(Image.open(p))
        Image.fromarray(np.minimum(a, 1)).save(p)
    code, out, err = run(monkeypatch, capsys, data, "-t", "seg")
    assert code == 0 and "miou=undefined (the training images hold one class (top)" in out, (out, err)


def test_labels_above_255_train_on_their_own_classes(data, monkeypatch, capsys):
    """16-bit labels were stored mod 256 (uint8 whenever the ignore index fits): the head trained on other
    classes. The same labels with an ignore index that forced a wide store gave other numbers."""
    (data / "masks" / "classes.txt").write_text("0 background\n257 top\n258 bottom\n")
    for p in (data / "masks" / "labels").glob("*.png"):
        a = np.array(Image.open(p)).astype(np.uint16)
        a[a > 0] += 256
        Image.fromarray(a).save(p)
    ious = []
    config = (data / "datasets.yaml").read_text()
    for ignore in (255, 1000):
        with_ignore = f"test_fraction: 0.5, ignore_index: {ignore}"
        (data / "datasets.yaml").write_text(config.replace("test_fraction: 0.5", with_ignore))
        code, out, err = run(monkeypatch, capsys, data, "-t", "seg", "--force")
        assert code == 0, err
        rec = json.loads((runs() / "lite0__masks__seg.json").read_text())
        ious.append({k: rec["metrics"]["per_class_iou"][k] for k in ("top", "bottom")})
    assert ious[0] == ious[1]


def test_a_label_outside_the_class_list_is_one_line_naming_the_file(data, monkeypatch, capsys):
    p = data / "masks" / "labels" / "0000.png"
    a = np.array(Image.open(p))
    a[a == 2] = 200
    Image.fromarray(a).save(p)
    code, out, err = run(monkeypatch, capsys, data, "-t", "mask_ret")
    assert code == 2 and one_line(err) and "0000.png holds label(s) 200" in err


# -- data that the readers refuse stop a run before extraction ----------------------------------------------
def test_annotations_that_do_not_match_their_image_stop_the_run_before_any_work(data, monkeypatch, capsys):
    tiny_data.edit_coco(data, lambda d: d["images"][0].update(width=100, height=80))
    code, out, err = run(monkeypatch, capsys, data, "-t", "kp_ret")
    assert code == 2 and one_line(err.split("\n", 1)[-1]) and "its annotation says 100 x 80" in err
    assert not list_stores()


def test_an_image_without_annotations_and_tiny_images_run_to_a_record(data, monkeypatch, capsys):
    tiny_data.edit_coco(
        data, lambda d: d.update(annotations=[a for a in d["annotations"] if a["image_id"] != 1])
    )
    Image.new("RGB", (8, 8), (200, 0, 0)).save(data / "sal" / "images" / "zz.png")
    Image.new("L", (8, 8), 255).save(data / "sal" / "masks" / "zz.png")
    code, out, err = run(monkeypatch, capsys, data, "-t", "disc")
    assert code == 0, err
    rec = json.loads((runs() / "lite0__sal__disc.json").read_text())
    assert any("tokencut: 1 test image(s) have fewer than 3 patches" in w for w in rec["warnings"]), rec[
        "warnings"
    ]
    code, out, err = run(monkeypatch, capsys, data, "-t", "disc", "--dataset", "coco")
    assert code == 0, err


# -- outputs: escaped for their format, readable by the group -----------------------------------------------
def test_markup_and_formulas_are_escaped_in_every_output(data, monkeypatch, capsys):
    (data / "folder" / "train" / "<img src=x onerror=alert(1)>").mkdir()
    code, out, err = run(monkeypatch, capsys, data, "-t", "knn2")
    assert code == 0, err
    rec_path = runs() / "lite0__folder__knn2.json"
    rec = json.loads(rec_path.read_text())
    rec["encoder"]["family"] = "control"
    rec["task"]["description"] = '=HYPERLINK("http://evil")'
    rec["encoder"]["weights_id"] = '=HYPERLINK("http://evil")'
    rec_path.write_text(json.dumps(rec))
    code, out, err = call_cli(monkeypatch, capsys, "report", "--grids", "none")
    assert code == 0, err
    results = runs().parent
    md = (results / "report.md").read_text()
    assert "<img src=x" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    csv = (results / "leaderboard.csv").read_text()
    assert "'=HYPERLINK" in csv and ",=HYPERLINK" not in csv
    code, out, err = call_cli(monkeypatch, capsys, "leaderboard", "--format", "csv", "--view", "long")
    assert "'=HYPERLINK" in out


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_written_files_honour_the_umask(data, monkeypatch, capsys, mask):
    old = os.umask(mask)
    try:
        code, out, err = run(monkeypatch, capsys, data, "-t", "knn2")
    finally:
        os.umask(old)
    assert code == 0, err
    results = runs().parent
    written = [
        *runs().glob("*.json"),
        *results.glob("*.csv"),
        *Path(os.environ["PROBEBENCH_HOME"]).rglob("*.npy"),
    ]
    assert written and {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o666 & ~mask}


def test_leaderboard_filters_that_match_nothing_are_one_line(data, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, data, "-t", "knn2")
    assert code == 0, err
    for args, said in (
        (["--level", "weird"], "--level 'weird': use one of object, part, discovery"),
        (["--encoder", "lite"], "--encoder 'lite' matches no result; did you mean lite0?"),
        (["--task", "nosuch"], "--task 'nosuch' matches no result; the results have knn2"),
    ):
        code, out, err = call_cli(monkeypatch, capsys, "leaderboard", *args)
        assert code == 2 and one_line(err) and said in err, err
    os.symlink(runs() / "lite0__folder__knn2.json", runs() / "elsewhere__folder__knn2.json")
    code, out, err = call_cli(monkeypatch, capsys, "leaderboard")
    assert "left out elsewhere__folder__knn2.json: a symbolic link" in err.replace(str(runs()) + "/", "")


def test_names_that_would_not_fit_a_file_name_are_refused_by_validate(data, monkeypatch, capsys):
    tasks = data / "long.yaml"
    tasks.write_text(f"{'t' * 65}: {{probe: knn, dataset: folder}}\n")
    code, out, err = call_cli(monkeypatch, capsys, "validate", "--tasks", str(tasks))
    assert code == 2 and "65 characters; names have at most 64" in err
