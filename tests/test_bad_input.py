"""Bad input (issue 9): what a careless or hostile input gets. Wrong or lost results first (deep images,
records that would overwrite each other, folders that cannot be written), then the inputs promised one line
and exit 2 (decompression bombs, devices, weights, damaged cache entries, hostile YAML, FIFOs), then thin data
that gets one warning line each and is recorded. Faults (kills, full disks, concurrency) are in
`test_faults.py`."""

from __future__ import annotations

import io
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_REGISTRY, call_cli, class_folders, use_registry
from PIL import Image

import probebench.extraction.extract as ex
from probebench.cache.entries import list_stores
from probebench.data.formats.folder import read_image_folder
from probebench.data.loader import UnreadableImage, read_rgb
from probebench.encoders.load import resolve_encoder
from probebench.encoders.registry import parse_registry
from probebench.errors import UserError
from probebench.extraction.request import ExtractionOptions, FeatureRequest

OPTS = ExtractionOptions(batch_size=4, num_workers=0, shard_size=8, progress=False)


def tiny_spec():
    return resolve_encoder(parse_registry(TINY_REGISTRY)["tiny_random"])


def one_line(err: str) -> bool:
    return err.strip().count("\n") == 0 and "Traceback" not in err


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says width x height (a decompression bomb) over a few bytes of pixels."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR: width, height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # the chunk's CRC over type + data
    path.write_bytes(bytes(data))
    return path


# -- wrong or lost results --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "mode"),
    [("uint16 png", "I;16"), ("int32 tif", "I"), ("int32 tif, full range", "I"), ("float tif", "F")],
)
def test_deep_greyscale_images_are_scaled_to_8_bits_not_clipped(tmp_path, kind, mode):
    pixels = np.random.default_rng(1).integers(0, 256, (12, 10), dtype=np.uint8)
    pixels[0, :2] = (0, 255)
    Image.fromarray(pixels).save(tmp_path / "eight.png")
    deep = {
        "uint16 png": (pixels.astype(np.uint16) * 257, "deep.png"),
        "int32 tif": (pixels.astype(np.int32) * 257, "deep.tif"),  # 16-bit data widened, as Pillow does
        "int32 tif, full range": (pixels.astype(np.int32) * 8_421_504, "deep.tif"),  # 255 * this ~ 2**31
        "float tif": (pixels.astype(np.float32) / 255, "deep.tif"),
    }[kind]
    Image.fromarray(deep[0]).save(tmp_path / deep[1])
    assert Image.open(tmp_path / deep[1]).mode == mode
    got = np.asarray(read_rgb(str(tmp_path / deep[1])))
    np.testing.assert_array_equal(got, np.asarray(read_rgb(str(tmp_path / "eight.png"))))


def test_every_run_option_that_changes_a_number_names_its_record(
    tmp_path, monkeypatch, capsys, tiny_embedded
):
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    base = ["run", "-e", "tiny_random", "-t", "knn", "--workers", "0"]
    extras = (
        [],
        ["--feature", "pooled"],
        ["--resampling-seed", "1"],
        ["--feature", "pooled"],
        ["--seeds", "1"],
    )
    for extra in extras:
        code, out, _ = call_cli(monkeypatch, capsys, *base, *extra)
        assert code == 0
    runs = Path(os.environ["PROBEBENCH_RESULTS"]) / "runs"
    names = sorted(p.name for p in runs.glob("*.json"))
    stem = "tiny_random__embedded__knn"
    assert names == [f"{stem}.json", f"{stem}__feature-pooled.json", f"{stem}__resample1.json"]
    assert "skipped" in out, "kNN is training-free: --seeds 1 finds the one record it has"
    features = {n: json.loads((runs / n).read_text())["knobs"]["feature"] for n in names}
    assert features == {names[0]: "cls", names[1]: "pooled", names[2]: "cls"}
    again = json.loads((runs / names[2]).read_text())
    first = json.loads((runs / names[0]).read_text())
    assert again["resampling_seed"] == 1 and again["training_seed"] is None
    assert again["metrics"]["top1_k20"] == first["metrics"]["top1_k20"]  # the same number...
    assert again["config_hash"] != first["config_hash"]  # ...with intervals of other draws


def test_a_trained_probe_runs_once_per_training_seed(tmp_path, monkeypatch, capsys, tiny_embedded):
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    code, out, _ = call_cli(
        monkeypatch, capsys, "run", "-e", "tiny_random", "-t", "linear", "--workers", "0", "--seeds", "0,1"
    )
    assert code == 0, out
    runs = Path(os.environ["PROBEBENCH_RESULTS"]) / "runs"
    stem = "tiny_random__embedded__linear"
    records = {p.name: json.loads(p.read_text()) for p in runs.glob(f"{stem}*.json")}
    assert sorted(records) == [f"{stem}.json", f"{stem}__seed1.json"]
    assert [records[n]["training_seed"] for n in sorted(records)] == [0, 1]
    assert {r["resampling_seed"] for r in records.values()} == {0}


@pytest.mark.parametrize("where", ["results file", "results unwritable", "home file"])
def test_a_folder_that_cannot_be_written_stops_the_run_before_any_work(
    tmp_path, monkeypatch, capsys, tiny_embedded, where
):
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    (tmp_path / "a_file").write_text("not a folder")
    if where == "results file":
        monkeypatch.setenv("PROBEBENCH_RESULTS", str(tmp_path / "a_file"))
        expected = "is a file, not a folder"
    elif where == "results unwritable":
        try:  # a folder nobody can write in, root included: /sys is read-only on Linux
            Path("/sys/probebench-results").mkdir()
            Path("/sys/probebench-results").rmdir()
            pytest.skip("/sys is writable here, so it cannot stand for an unwritable folder")
        except OSError:
            pass
        monkeypatch.setenv("PROBEBENCH_RESULTS", "/sys/probebench-results")
        expected = "is not writable"
    else:
        monkeypatch.setenv("PROBEBENCH_HOME", str(tmp_path / "a_file" / "home"))
        expected = "feature cache"
    code, _, err = call_cli(monkeypatch, capsys, "run", "-e", "tiny_random", "-t", "knn", "--workers", "0")
    assert code == 2 and expected in err and one_line(err)
    if where != "home file":
        assert not list_stores(), "nothing was extracted before the check"


# -- one line and exit 2 ----------------------------------------------------------------------------------
def test_a_decompression_bomb_is_an_unreadable_image_with_the_limit_a_knob(tmp_path):
    root = class_folders(tmp_path / "bombs", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    png_claiming(root / "train" / "a" / "bomb.png", 20000, 20000)
    ds = read_image_folder(root)
    with pytest.raises(UserError, match=r"20000 x 20000 pixels, more than --max-pixels 89478485"):
        ex.extract_features(
            tiny_spec(), ds, FeatureRequest(), ExtractionOptions(**{**OPTS.__dict__, "strict": True})
        )
    res = ex.extract_features(tiny_spec(), ds, FeatureRequest(), OPTS)
    assert res.skipped == ["train/a/bomb.png"] and res.store.complete
    lower = ex.extract_features(
        tiny_spec(), ds, FeatureRequest(), ExtractionOptions(**{**OPTS.__dict__, "max_pixels": 100})
    )
    assert len(lower.skipped) == len(ds), "a 32 x 32 image is over a 100-pixel limit"
    assert lower.store.root != res.store.root, "the limit decides what is skipped: it keys the cache"


def test_a_fifo_named_like_an_image_is_not_read(tmp_path):
    root = class_folders(tmp_path / "fifo", {"train": {"a": 1}, "test": {"a": 1}})
    os.mkfifo(root / "train" / "a" / "x.jpg")
    assert [s.path for s in read_image_folder(root).samples] == ["test/a/0.png", "train/a/0.png"]
    with pytest.raises(UnreadableImage, match="not a regular file"):
        read_rgb(str(root / "train" / "a" / "x.jpg"))  # returns at once rather than blocking on the pipe


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--device", "gpu0"], "--device 'gpu0' is not a device"),
        (["--device", "cuda:7"], "cuda"),
        (["--workers", "-1"], "--workers -1: give 0"),
        (["--batch-size", "0"], "--batch-size 0"),
        (["--max-pixels", "0"], "--max-pixels 0"),
        (["-e", "lite0", "--weights", "/nonexistent"], "--weights /nonexistent: no such file"),
        (["--weights", "encoders.yaml"], "finds its own weights"),
    ],
)
def test_bad_run_options_are_one_line(tmp_path, monkeypatch, capsys, args, expected):
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    monkeypatch.chdir(tmp_path)
    encoder = [] if "-e" in args else ["-e", "tiny_random"]
    code, _, err = call_cli(monkeypatch, capsys, "run", *encoder, "-t", "knn", *args)
    assert code == 2 and expected in err and one_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_on_a_machine_without_a_gpu_is_one_line(tmp_path, monkeypatch, capsys):
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    code, _, err = call_cli(monkeypatch, capsys, "extract", "-e", "tiny_random", "--device", "cuda")
    assert code == 2 and "no usable CUDA GPU; use --device cpu" in err and one_line(err)


def test_a_damaged_cache_entry_is_listed_removable_and_recomputed(
    tmp_path, monkeypatch, capsys, tiny_embedded
):
    first = ex.extract_features(tiny_spec(), tiny_embedded, FeatureRequest(), OPTS)
    before = first.store.load("pooled.L11")
    (first.store.root / "manifest.json").write_text('{"key": "tru')  # truncated mid-write by hand
    code, out, err = call_cli(monkeypatch, capsys, "cache", "ls")
    assert code == 0 and "damaged" in out and "1 damaged entry" in err
    again = ex.extract_features(tiny_spec(), tiny_embedded, FeatureRequest(), OPTS)
    assert not again.cached and again.store.root == first.store.root and again.store.complete
    np.testing.assert_array_equal(again.store.load("pooled.L11"), before)
    (first.store.root / "key.json").write_bytes(b"\x00\xff")
    code, out, _ = call_cli(monkeypatch, capsys, "cache", "rm", "--all")
    assert code == 0 and "removed 1 cache entry" in out and not list_stores()


_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (_BOMB, "expands to more than 100000 values"),
        ("a: &a [*a]\n", "recursive structure"),
        ("[" * 3000 + "]" * 3000, "nested too deeply"),
        ("a: 1\n" + "#" * 1_000_001, "larger than 1000000 bytes"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff", "not a text file"),
    ],
)
@pytest.mark.parametrize("which", ["registry", "--datasets", "--tasks"])
def test_hostile_config_files_are_one_line(tmp_path, monkeypatch, capsys, content, expected, which):
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    path = tmp_path / "config.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    args = ["validate", str(path)] if which == "registry" else ["validate", which, str(path)]
    code, _, err = call_cli(monkeypatch, capsys, *args)
    assert code == 2 and expected in err and one_line(err)


def test_validate_reports_every_problem_and_checks_each_dataset(tmp_path, monkeypatch, capsys):
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    reg = tmp_path / "bad.yaml"
    reg.write_text(
        TINY_REGISTRY.replace("family: control", "family: controls").replace(
            "family: supervised", "family: supervised\n  colour: blue"
        )
    )
    code, _, err = call_cli(monkeypatch, capsys, "validate", str(reg))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and "Traceback" not in err
    assert "'tiny_random', field 'family'" in lines[0] and "'lite0', field 'colour'" in lines[1]

    class_folders(tmp_path / "good", {"train": {"a": 1}, "test": {"a": 1}})
    (tmp_path / "datasets.yaml").write_text(
        "good: {format: image_folder, root: good}\n"
        "listed: {format: coco, splits: 5}\n"
        "unset: {format: image_folder, root: '${PROBEBENCH_NOT_SET}/x'}\n"
        "gone: {format: image_folder, root: /no/such/place}\n"
        "embedded: {format: image_folder, root: good}\n"
    )
    code, out, err = call_cli(monkeypatch, capsys, "validate", "--datasets", str(tmp_path / "datasets.yaml"))
    assert code == 2 and "ok: 2 encoders" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "'listed', field 'splits'" in lines[0] and "dict[" not in err
    good = tmp_path / "datasets.yaml"
    good.write_text(good.read_text().replace("listed: {format: coco, splits: 5}\n", ""))
    code, out, err = call_cli(monkeypatch, capsys, "validate", "--datasets", str(good))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 3, err
    assert "$PROBEBENCH_NOT_SET, which is not set" in lines[0]
    assert "/no/such/place does not exist" in lines[1] and "'embedded' has a built-in name" in lines[2]
    assert "dataset 'good': image_folder at" in out and "test=1 train=1" in out


# -- thin data: one warning line each, recorded ------------------------------------------------------------
def test_thin_data_gets_one_warning_each_in_the_log_and_the_record(tmp_path, monkeypatch, capsys, caplog):
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    root = class_folders(
        tmp_path / "thin",
        {"train": {"a": 3, "b": 3, "empty": 0}, "test": {"a": 1, "b": 1, "c": 2}},
    )
    args = ["run", "-e", "tiny_random", "-t", "knn", "-d", str(root), "--workers", "0", "--feature", "pooled"]
    code, _, _ = call_cli(monkeypatch, capsys, *args)
    assert code == 0
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    expected = [
        "class folder(s) empty hold no images in any split and are not classes",
        "2 test image(s) belong to 1 class(es) with no training image (c); they count as errors",
        "kNN k=[10, 20, 100, 200] is more than the 6 training images",
    ]
    for text in expected:
        assert sum(text in line for line in logged) == 1, (text, logged)
    (record,) = (Path(os.environ["PROBEBENCH_RESULTS"]) / "runs").glob("*.json")
    warnings = json.loads(record.read_text())["warnings"]
    assert len(warnings) == 3 and all(any(t in w for w in warnings) for t in expected)


def test_a_user_dataset_named_like_a_built_in_one_gets_a_warning(tmp_path, tiny_embedded):
    from probebench.data.lookup import get_dataset

    (tmp_path / "datasets.yaml").write_text("embedded: {format: image_folder, root: somewhere}\n")
    ds = get_dataset("embedded", tmp_path / "datasets.yaml")
    assert ds.synthetic and ds.warnings == [
        "the datasets config's entry 'embedded' is ignored (a built-in name); rename it"
    ]
    assert ds.describe()["warnings"] == ds.warnings
