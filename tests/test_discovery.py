"""Object discovery: metrics on hand-made cases, the baselines' conventions, the TokenCut solver, FOUND's
seed, HEAP's training, and the class-token attention the encoders return."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from probebench.discovery import baselines, configs, found, heap, spectral
from probebench.discovery.base import ImageFeatures, box_to_pixels, mask_to_pixels
from probebench.discovery.spectral import partition_is_certain, second_eigenvector, second_eigenvector_dense
from probebench.geometry import Geometry
from probebench.metrics.discovery import BINS, Saliency, SegRetrieval, box_iou, correct, f_curve
from probebench.metrics.segmentation import miou


def _geo(h: int, w: int, cell: int = 16, width: int | None = None, height: int | None = None) -> Geometry:
    """A native-geometry image of (width, height) px padded to the (h, w) grid of `cell` px cells."""
    width, height = width or w * cell, height or h * cell
    return Geometry(width, height, width, height, 0, 0, w * cell, h * cell, w, h, cell)


def _scene(h: int = 8, w: int = 10, box=(3, 2, 7, 5), dim: int = 32, seed: int = 0) -> ImageFeatures:
    """Keys of a grid: background patches near one direction, object patches (in `box`, cells x0 y0 x1 y1)
    near an orthogonal one, a little noise; class attention high on the object."""
    rng = np.random.default_rng(seed)
    bg, obj = np.zeros(dim), np.zeros(dim)
    bg[0], obj[1] = 1.0, 1.0
    keys = bg + 0.03 * rng.normal(size=(h, w, dim))
    x0, y0, x1, y1 = box
    keys[y0:y1, x0:x1] = obj + 0.03 * rng.normal(size=(y1 - y0, x1 - x0, dim))
    keys[..., 2] += 0.5  # opposite signs on one axis: object and background keys dot to about -0.25
    keys[y0:y1, x0:x1, 2] -= 1.0
    att = np.full((h, w, 8), 0.2 / (h * w)) + 0.001 * rng.random((h, w, 8))
    att[y0:y1, x0:x1] += 1.0 / ((y1 - y0) * (x1 - x0))
    att /= att.sum(axis=(0, 1), keepdims=True)
    return ImageFeatures(keys.astype(np.float32), att.astype(np.float32), keys.astype(np.float32), _geo(h, w))


# -- metrics ----------------------------------------------------------------------------------------------
def test_corloc_counts_a_perfect_box_and_refuses_one_just_below_half():
    truth = np.array([[0.0, 0.0, 100.0, 100.0], [200.0, 200.0, 220.0, 220.0]])
    assert box_iou(np.array([0, 0, 100, 100]), truth)[0] == pytest.approx(1.0)
    assert correct(np.array([0, 0, 100, 100]), truth)
    below = np.array([0.0, 0.0, 100.0, 49.99])  # IoU 0.4999 with the first box
    assert box_iou(below, truth)[0] == pytest.approx(0.4999, abs=1e-6)
    assert not correct(below, truth)
    # LOST's eps vanishes in the float32 arithmetic its integer boxes get: an exact half is 0.5, a hit
    assert correct(np.array([0, 0, 100, 50]), truth)
    assert correct(np.array([0, 0, 32, 64]), np.array([[0, 0, 32, 32]]))
    assert correct(np.array([201.0, 201.0, 221.0, 221.0]), truth)  # any ground-truth box will do
    assert not correct(None, truth) and not correct(np.array([0, 0, 10, 10]), np.zeros((0, 4)))


def test_saliency_metrics_on_hand_made_masks():
    truth = np.zeros((10, 10), dtype=bool)
    truth[2:6, 2:7] = True  # 20 of 100 pixels
    perfect, empty, full = Saliency(), Saliency(), Saliency()
    perfect.add(truth.astype(float), truth)
    empty.add(np.zeros((10, 10)), truth)
    full.add(np.ones((10, 10)), truth)
    assert perfect.metrics() == (
        {"saliency_acc": 100.0, "saliency_iou": 100.0, "saliency_max_f": pytest.approx(100.0)},
        None,
    )
    # an empty mask: right on the 80 background pixels, IoU 0, precision 1 but recall 0 -> F 0
    assert empty.metrics()[0] == {"saliency_acc": 80, "saliency_iou": 0.0, "saliency_max_f": 0.0}
    # all foreground: precision 0.2, recall 1 -> F = 1.3 * 0.2 / (0.3 * 0.2 + 1)
    m, _ = full.metrics()
    assert (m["saliency_acc"], m["saliency_iou"]) == (pytest.approx(20), pytest.approx(20))
    assert m["saliency_max_f"] == pytest.approx(100 * 1.3 * 0.2 / (0.06 + 1))
    # An empty ground truth has no score: an empty prediction there scored IoU and F of 100 (0/0 taken as
    # perfect), while any method that predicts something scored 0. It is left out and counted.
    both = Saliency()
    both.add(np.zeros((4, 4)), np.zeros((4, 4), dtype=bool))
    assert both.metrics() == ({}, "none of the 1 test image(s) has any foreground in its ground truth")
    perfect.add(np.ones((4, 4)), np.zeros((4, 4), dtype=bool))
    assert perfect.metrics()[0]["saliency_iou"] == 100.0 and perfect.empty_truth == 1


def test_max_f_averages_each_threshold_over_images_before_the_max():
    rng = np.random.default_rng(0)
    preds = [rng.random((12, 9)) for _ in range(3)]
    truths = [rng.random((12, 9)) > 0.6 for _ in range(3)]
    curves = []
    for p, t in zip(preds, truths, strict=True):  # TokenCut's loop, threshold by threshold
        row = []
        for thr in np.arange(0.0, 1.0, 1.0 / BINS):
            m = p > thr
            tp, area, gt = (m & t).sum(), m.sum(), t.sum()
            prec, rec = (1.0 if area == 0 else tp / area), (1.0 if gt == 0 else tp / gt)
            row.append(0.0 if 0.3 * prec + rec == 0 else 1.3 * prec * rec / (0.3 * prec + rec))
        curves.append(row)
        np.testing.assert_allclose(f_curve(p, t), row, atol=1e-12)
    sal = Saliency()
    for p, t in zip(preds, truths, strict=True):
        sal.add(p, t)
    assert sal.metrics()[0]["saliency_max_f"] == pytest.approx(100 * np.mean(curves, axis=0).max())
    assert sal.metrics()[0]["saliency_max_f"] < 100 * np.mean(
        np.max(curves, axis=1)
    )  # not the mean of maxima


def test_segmentation_retrieval_labels_a_query_by_its_nearest_reference():
    engine = SegRetrieval(num_classes=3)
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    truth = np.zeros((4, 4), dtype=np.int64)
    truth[1:3, 1:3] = 2
    tokens = np.zeros((4, 4, 2))
    tokens[..., 0] = 1.0
    engine.add_reference(SegRetrieval.descriptor(tokens, mask.astype(float)), mask, truth)
    engine.add_reference(None, np.zeros((4, 4), dtype=bool), truth)  # an empty mask is skipped
    assert engine.labels == [2] and engine.skipped == 1
    pred = engine.predict(SegRetrieval.descriptor(tokens, mask.astype(float)), mask)
    assert (pred == truth).all()
    conf = np.bincount(truth.ravel() * 3 + pred.ravel(), minlength=9).reshape(3, 3)
    assert miou(conf) == 1.0 and miou(conf, [2]) == 1.0


# -- geometry of boxes and masks --------------------------------------------------------------------------
def test_boxes_are_cells_times_the_patch_clipped_to_the_unpadded_image():
    geo = _geo(5, 7, cell=16, width=100, height=70)  # padded to 112 x 80
    assert box_to_pixels((2, 1, 7, 5), geo) == [32.0, 16.0, 100.0, 70.0]
    assert box_to_pixels((2, 1, 7, 5), geo, clip=False) == [32.0, 16.0, 112.0, 80.0]
    halved = Geometry(200, 140, 100, 70, 0, 0, 112, 80, 7, 5, 16)  # capped to half size
    assert box_to_pixels((2, 1, 7, 5), halved) == [64.0, 32.0, 200.0, 140.0]
    grid = np.zeros((5, 7))
    grid[4, 6] = 1
    up = mask_to_pixels(grid, geo, smooth=False)
    assert up.shape == (70, 100) and up[64:, 96:].all() and up.sum() == 6 * 4


# -- the baselines ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [baselines.lost, baselines.tokencut])
def test_lost_and_tokencut_box_the_object(method):
    feats = _scene()
    d = method(feats)
    assert d.box == (3, 2, 7, 5)
    assert box_to_pixels(d.box, feats.geometry) == [48.0, 32.0, 112.0, 80.0]


def test_lost_layer_normalises_patch_features_standing_in_for_keys_as_its_cnn_path():
    rng = np.random.default_rng(0)
    keys = np.array([1.0, 0.2]) + 0.05 * rng.random((8, 10, 2))  # non-negative, as CNN features after ReLU
    keys[2:5, 3:7] = np.array([0.2, 1.0]) + 0.05 * rng.random((3, 4, 2))
    keys = keys.astype(np.float32)
    as_keys = ImageFeatures(keys, None, keys, _geo(8, 10), keys_are_tokens=False)
    assert baselines.lost(as_keys).box == (0, 0, 10, 8)  # every similarity positive: nothing stands out
    as_tokens = ImageFeatures(keys, None, keys, _geo(8, 10), keys_are_tokens=True)
    assert baselines.lost(as_tokens).box == (3, 2, 7, 5)


def test_lost_breaks_degree_ties_as_its_own_torch_argsort_call_does():
    # three cliques of 10 patches (columns 0-1, 2-3, 4-5): every degree is 9, so the seed is a pure tie-break
    keys = np.zeros((5, 6, 3), dtype=np.float32)
    for c in range(3):
        keys[:, 2 * c : 2 * c + 2, c] = 1.0
    feats = ImageFeatures(keys, None, keys, _geo(5, 6))
    seed = int(torch.argsort(-torch.full((30,), 9.0), descending=True)[0])  # LOST: argsort(cent, descending)
    column = 2 * ((seed % 6) // 2)
    assert baselines.lost(feats).box == (column, 0, column + 2, 5)


def test_dinoseg_keeps_the_top_mass_and_the_quirks_of_its_component_choice():
    feats = _scene()
    # one component of attention: LOST's code boxes the zero region (label 0), here the whole grid
    assert baselines.dinoseg(feats, head=4).box == (0, 0, 10, 8)
    # two separate blobs of attention: LOST's code never picks the last-numbered component
    h, w = 8, 10
    att = np.full((h, w, 1), 1e-6, dtype=np.float32)
    att[0:2, 0:2] = 1.0  # component 1 (4 patches)
    att[5:8, 5:9] = 1.0  # component 2 (12 patches), larger but last in raster order
    two = ImageFeatures(feats.keys, att / att.sum(), feats.keys, _geo(h, w))
    assert baselines.dinoseg(two, head=0).box == (0, 0, 2, 2)


def test_the_fast_eigensolver_gives_tokencuts_partition():
    rng = np.random.default_rng(1)
    for side in (6, 14, 20):
        yy, xx = np.mgrid[:side, :side]
        obj = (((yy - side / 2) ** 2 + (xx - side / 3) ** 2) < (side / 4) ** 2).ravel()
        f = rng.normal(size=(side * side, 16)) + 2.5 * obj[:, None] * rng.normal(size=16)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        w = np.where(f @ f.T > 0.2, 1.0, 1e-5)
        dense, fast = second_eigenvector_dense(w), second_eigenvector(w)
        assert abs(np.corrcoef(dense, fast)[0, 1]) > 1 - 1e-8
        a, b = dense > dense.mean(), fast > fast.mean()
        assert (a == b).all() or (a == ~b).all()


def test_a_partition_is_certain_only_when_no_entry_could_cross_the_mean_or_overtake_the_seed():
    y, scale = np.array([1.0, 0.9, -0.5, -0.6]), np.ones(4)
    assert partition_is_certain(y, scale, 1e-3)
    assert not partition_is_certain(y, scale, 0.3)  # within 0.3, -0.6 could overtake the seed 1.0
    near_mean = np.array([1.0, 0.9, 0.2002, -0.6, -0.7])  # mean 0.16: entry 2 sits 0.04 above it
    assert partition_is_certain(near_mean, np.ones(5), 0.01)
    assert not partition_is_certain(near_mean, np.ones(5), 0.05)
    rival = np.array([1.0, -0.999, 0.5, -0.4])  # the seed could be either end: opposite sides of the mean
    assert not partition_is_certain(rival, np.ones(4), 1e-3)
    assert partition_is_certain(rival, np.ones(4), 1e-4)
    twins = np.array(
        [1.0, 1.0, -0.5, -0.6]
    )  # identical patches tie for the seed: the component is the solver's
    assert not partition_is_certain(twins, np.ones(4), 1e-12)


def test_an_uncertified_lanczos_pass_falls_back_to_a_tight_one_then_to_the_dense_solve(monkeypatch):
    rng = np.random.default_rng(3)
    f = rng.normal(size=(144, 16))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    w = np.where(f @ f.T > 0.2, 1.0, 1e-5)
    tols = []
    real = spectral.eigsh
    monkeypatch.setattr(spectral, "eigsh", lambda *a, **k: tols.append(k["tol"]) or real(*a, **k))
    certain = second_eigenvector(w)
    assert tols == [spectral.FIRST_TOL]
    monkeypatch.setattr(spectral, "partition_is_certain", lambda *a: False)
    tols.clear()
    tight = second_eigenvector(w)
    assert tols == [spectral.FIRST_TOL, spectral.TOL]
    assert np.array_equal(tight, second_eigenvector_dense(w))  # neither pass proved it: TokenCut's own solve
    same = lambda y: y > y.mean() if (y > y.mean())[np.argmax(np.abs(y))] else y <= y.mean()  # noqa: E731
    assert (same(certain) == same(tight)).all() and (same(tight) == same(second_eigenvector_dense(w))).all()


def test_a_uniform_graph_gets_tokencuts_own_arbitrary_but_fixed_split():
    w = np.ones((16, 16))  # every patch like every other: eigenvalues repeat, any split is an eigenvector
    dense = second_eigenvector_dense(w)
    for _ in range(3):  # ARPACK alone would draw a different vector on each call here
        assert np.array_equal(second_eigenvector(w), dense)


def test_centre_and_whole_boxes_are_exact_fractions_of_the_image():
    d = baselines.centre(_scene())
    assert d.image_fraction == (0.25, 0.25, 0.75, 0.75)
    assert baselines.whole(_scene()).image_fraction == (0.0, 0.0, 1.0, 1.0)


# -- FOUND --------------------------------------------------------------------------------------------------
def test_found_seeds_on_the_least_attended_patch_and_masks_the_background():
    feats = _scene()
    bkg, seed = found.background(feats)
    y, x = divmod(seed, 10)
    assert not (3 <= x < 7 and 2 <= y < 5)  # the seed lies in the background
    expected = np.ones((8, 10), dtype=bool)
    expected[2:5, 3:7] = False
    assert (bkg == expected).all()
    beta = found.head_weights(feats.attention)
    assert beta.shape == (8,) and np.isfinite(beta).all()


def test_found_trains_a_head_that_segments_the_object():
    scenes = [_scene(box=(1 + i % 4, 1 + i % 3, 5 + i % 4, 4 + i % 3), seed=i) for i in range(12)]
    load = lambda pos: [scenes[int(p)] for p in pos]  # noqa: E731
    head, curve = found.train_found(load, 12, configs.FoundConfig(60, 6, epochs=40), seed=0)
    d = found.predict_found(head, scenes[0])
    assert d.box == (1, 1, 5, 4) and curve["loss_last"] < curve["loss_first"]
    assert curve["steps"] == 61  # the authors' loop stops after the step numbered max_iter
    assert (
        found.train_found(load, 12, configs.FoundConfig(500, 5), seed=0)[1]["steps"] == 9
    )  # or after 3 epochs


# -- HEAP ---------------------------------------------------------------------------------------------------
def _heap_scenes(n: int = 16) -> list[ImageFeatures]:
    return [_scene(box=(1 + i % 5, 1 + i % 3, 5 + i % 5, 5 + i % 3), seed=i) for i in range(n)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_heap_training_is_deterministic_lowers_its_loss_and_beats_its_untrained_head():
    scenes = _heap_scenes()
    load = lambda pos: [scenes[int(p)] for p in pos]  # noqa: E731
    cfg = configs.HeapConfig(groups=4, layers=1, dim=32, heads=2, iterations=60, batch=8, lr=3e-3)
    head, curve = heap.train_heap(load, len(scenes), cfg, seed=0)
    again, _ = heap.train_heap(load, len(scenes), cfg, seed=0)
    for (name, a), b in zip(head.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert curve["loss_last"]["total"] < curve["loss_first"]["total"]
    torch.manual_seed(0)
    untrained = heap.HeapHead(32, cfg).eval()
    head.eval()
    truth = [np.zeros((8, 10), dtype=bool) for _ in scenes]
    for t, i in zip(truth, range(len(scenes)), strict=True):
        t[1 + i % 3 : 5 + i % 3, 1 + i % 5 : 5 + i % 5] = True
    trained_iou = np.mean(
        [_iou(heap.predict_heap(head, s).mask, t) for s, t in zip(scenes, truth, strict=True)]
    )
    untrained_iou = np.mean(
        [_iou(heap.predict_heap(untrained, s).mask, t) for s, t in zip(scenes, truth, strict=True)]
    )
    assert trained_iou > untrained_iou and trained_iou > 0.8


def test_heap_heads_save_and_reload_to_the_same_predictions(tmp_path):
    scenes = _heap_scenes(4)
    cfg = configs.HeapConfig(groups=4, layers=1, dim=16, heads=2, iterations=3, batch=2, fg_rule="learned")
    head, _ = heap.train_heap(lambda pos: [scenes[int(p)] for p in pos], 4, cfg, seed=3)
    path = tmp_path / "heap_head.pt"
    path.write_bytes(heap.save_heap(head.eval()))
    back = heap.load_heap(path)
    assert back.cfg == head.cfg
    a, b = heap.predict_heap(head, scenes[1]), heap.predict_heap(back, scenes[1])
    assert (a.mask == b.mask).all() and np.allclose(a.embeddings, b.embeddings) and a.regions.shape == (8, 10)


@pytest.mark.parametrize("dropped", configs.LOSSES)
def test_each_heap_loss_can_be_removed(dropped):
    scenes = _heap_scenes(4)
    x, valid = heap._batch(scenes)
    bg = heap._pad_masks([heap.coarse_background(s, 0.3) for s in scenes], x.shape[1])
    torch.manual_seed(0)
    keep = tuple(t for t in configs.LOSSES if t != dropped)
    full = heap.HeapHead(32, configs.HeapConfig(dim=16, heads=2))
    ablated = heap.HeapHead(32, configs.HeapConfig(dim=16, heads=2, losses=keep))
    ablated.load_state_dict(full.state_dict())
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a, b = heap.losses(full, x, valid, bg, gen()), heap.losses(ablated, x, valid, bg, gen())
    assert float((a["total"] - b["total"]).detach()) == pytest.approx(float(a[dropped].detach()), rel=1e-5)


def test_the_border_seed_stands_in_where_there_is_no_attention():
    feats = _scene()
    tokens_only = ImageFeatures(feats.keys, None, feats.keys, feats.geometry, keys_are_tokens=True)
    bkg = heap.coarse_background(tokens_only, 0.3)
    assert bkg[0].all() and not bkg[2:5, 3:7].any()


# -- the attention the encoders return ----------------------------------------------------------------------
def test_timm_class_attention_is_the_blocks_own_softmax():
    import timm

    from probebench.encoders.base import Preprocess
    from probebench.encoders.timm_models import wrap_timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64).eval()
    model.blocks[-1].attn.fused_attn = False  # so the softmax output passes through attn_drop
    enc = wrap_timm(model, Preprocess(64, 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3))
    x = torch.randn(2, 3, 64, 96)
    feats = enc(x, [-1], keys=True, attention=True)
    seen = []
    hook = model.blocks[-1].attn.attn_drop.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        model.forward_features(x)
    hook.remove()
    expected = seen[-1][:, :, 0, 1:].transpose(1, 2).reshape(2, 4, 6, 3)
    assert feats.attention.shape == (2, 4, 6, 3)
    torch.testing.assert_close(feats.attention, expected, atol=1e-6, rtol=1e-5)


# -- the task end to end ----------------------------------------------------------------------------------
def test_discovery_runs_every_method_and_writes_per_image_outputs(
    tmp_path, monkeypatch, capsys, tiny_embedded
):
    import json

    from conftest import TINY_REGISTRY, call_cli, use_registry
    from PIL import Image

    from probebench.paths import results_dir

    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    tasks = tmp_path / "tasks.yaml"
    knobs = (
        "heap_iterations: 4, heap_batch: 4, heap_dim: 16, heap_heads: 2, found_iterations: 3, found_batch: 4"
    )
    methods = "[heap, heap_untrained, heap_no_inter, found, lost, tokencut, dinoseg, centre, whole]"
    tasks.write_text(
        f"disc: {{probe: discovery, dataset: embedded, knobs: {{methods: {methods}, {knobs}}}}}\n"
    )
    code, out, err = call_cli(
        monkeypatch, capsys, "run", "-e", "tiny_random", "-t", "disc", "--tasks", str(tasks)
    )
    assert code == 0, out + err
    (path,) = results_dir().rglob("tiny_random__embedded__disc.json")
    record = json.loads(path.read_text())
    m = record["metrics"]
    for method in (
        "heap",
        "heap_untrained",
        "heap_no_inter",
        "found",
        "lost",
        "tokencut",
        "dinoseg",
        "centre",
    ):
        assert 0 <= m[f"{method}_corloc"] <= 100 and 0 <= m[f"{method}_saliency_max_f"] <= 100
        assert f"{method}_retrieval_miou" in m
    assert m["whole_corloc"] == pytest.approx(100 * np.mean([_whole_hits(tiny_embedded)]))
    assert record["primary"]["name"] == "heap_corloc" and record["task"]["level"] == "discovery"
    assert record["knobs"]["geometry"]["mode"] == "native" and record["probe"]["keys"] == "keys"
    trained = record["probe"]["trained"]
    assert trained["heap"]["loss_first"]["total"] > 0 and trained["found"]["parameters"] == 193
    assert record["deviations"] == ["found-no-bilateral-solver", "found-no-augmentation", "saliency-padded"]
    folder = path.with_suffix("")
    lines = [json.loads(x) for x in (folder / "boxes.jsonl").read_text().splitlines()]
    assert len(lines) == m["n_images"] == len(tiny_embedded.split_indices("test"))
    first = lines[0]
    assert set(first["heap"]) == {"box", "correct", "iou", "mask"} and first["gt_boxes"]
    with Image.open(folder / first["tokencut"]["mask"]) as im:
        assert im.size == tuple(first["size"])
    head = heap.load_heap(folder / "heap_head.pt")
    assert head.cfg.iterations == 4
    regions = np.load(folder / "heap_regions.npz")
    assert regions["embeddings"].shape[:2] == (len(lines), head.cfg.groups)
    # finished results are skipped on a re-run
    code, out, _ = call_cli(
        monkeypatch, capsys, "run", "-e", "tiny_random", "-t", "disc", "--tasks", str(tasks)
    )
    assert code == 0 and "skip" in out.lower()


def _whole_hits(dataset) -> float:
    """The whole-image box's CorLoc on the embedded test images, from their ground truth alone."""
    from probebench.data import annotations

    hits = []
    for row in dataset.split_indices("test"):
        s = dataset.samples[row]
        w, h = s.ann["size"]
        hits.append(correct(np.array([0.0, 0.0, w, h]), annotations.boxes(dataset, s)))
    return float(np.mean(hits))


def test_encoders_without_attention_skip_found_and_dinoseg_and_say_so(
    tmp_path, monkeypatch, capsys, tiny_embedded
):
    import json

    from conftest import TINY_REGISTRY, call_cli, use_registry

    from probebench.paths import results_dir

    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(
        "disc: {probe: discovery, dataset: embedded, knobs: {heap_iterations: 2, heap_dim: 16}}\n"
    )
    code, out, err = call_cli(monkeypatch, capsys, "run", "-e", "lite0", "-t", "disc", "--tasks", str(tasks))
    assert code == 0, out + err
    record = json.loads(next(results_dir().rglob("lite0__embedded__disc.json")).read_text())
    assert set(record["probe"]["skipped_methods"]) == {"found", "dinoseg"}
    assert "found_corloc" not in record["metrics"] and "lost_corloc" in record["metrics"]
    assert record["probe"]["keys"] == "patch tokens" and record["deviations"] == ["saliency-padded"]
    assert any("stand in for keys" in w for w in record["warnings"])


def test_bad_discovery_knobs_are_one_line(tmp_path, monkeypatch, capsys):
    from conftest import call_cli

    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("disc: {probe: discovery, dataset: embedded, knobs: {methods: [heap, lsot]}}\n")
    code, out, err = call_cli(monkeypatch, capsys, "list", "tasks", "--tasks", str(tasks))
    assert code == 2 and "knobs.methods" in err and "Traceback" not in err


# -- ground truth -------------------------------------------------------------------------------------------
def test_ground_truth_boxes_follow_losts_conventions():
    from probebench.data import annotations
    from probebench.data.base import ImageDataset, Sample

    voc = Sample(
        "a.jpg",
        0,
        "test",
        {"boxes": [[0, 0, 10, 10, 0], [5, 5, 50, 40, 1]], "difficult": [1, 0], "truncated": [0, 0]},
    )
    ds = ImageDataset("v", Path("."), ["a", "b"], [voc])
    assert annotations.boxes(ds, voc).tolist() == [[0, 0, 10, 10], [5, 5, 50, 40]]
    assert annotations.boxes(ds, voc, exclude_hard=True).tolist() == [[5, 5, 50, 40]]
    assert annotations.boxes(ds, voc, "union").tolist() == [[0, 0, 50, 40]]
    all_hard = Sample("b.jpg", 0, "test", {"boxes": [[0, 0, 1, 1, 0]], "difficult": [0], "truncated": [1]})
    assert annotations.boxes(ds, all_hard, exclude_hard=True) is None  # the image leaves CorLoc
    coco = Sample(
        "c.jpg", 0, "train", {"boxes": [[1.4, 2.6, 10.5, 20.2, 0], [0, 0, 5, 5, 0]], "iscrowd": [0, 1]}
    )
    assert annotations.boxes(ds, coco).tolist() == [[1, 3, 10, 20]]  # crowd dropped, rounded


def test_a_voc_segmentation_folder_reads_with_its_palette_classes(tmp_path):
    from PIL import Image

    from probebench.data.annotations import label_map
    from probebench.data.formats import read_dataset

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[2:5, 2:6], labels[0, :] = 15, 255  # a person and an ignored border
    for stem, split in (("2008_000001", "train"), ("2008_000002", "val")):
        Image.new("RGB", (8, 8)).save(voc / "JPEGImages" / f"{stem}.jpg")
        mask = Image.fromarray(labels, mode="P")
        mask.putpalette([0, 0, 0] * 256)
        mask.save(voc / "SegmentationClass" / f"{stem}.png")
        (voc / "ImageSets/Segmentation" / f"{split}.txt").write_text(stem + "\n")
    ds = read_dataset("voc_seg", tmp_path, "voc12_seg")
    assert ds.splits == ["train", "val"] and ds.extra["mask_classes"][15] == "person"
    got = label_map(ds, ds.samples[0], "mask")
    assert (got == labels).all()


def test_dino_entries_interpolate_the_position_embedding_as_dino_does():
    """DINO's `interpolate_pos_encoding`: bicubic by scale factor (n + 0.1) / sqrt(N) per axis, no antialias;
    timm resamples to the size with antialias. At the trained size both leave the embedding alone."""
    import timm
    import torch.nn.functional as F

    from probebench.encoders.base import Preprocess
    from probebench.encoders.timm_models import wrap_timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64).eval()
    pre = Preprocess(64, 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3)
    dino, plain = wrap_timm(model, pre, pos_embed="dino"), wrap_timm(model, pre)
    original = model.pos_embed.detach().clone()
    seen = []
    hook = model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(1, 3, 96, 128)  # a 6 x 8 grid from a 4 x 4 one
    dino(x, [0])
    grid = original[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, scale_factor=(6.1 / 4, 8.1 / 4), mode="bicubic").permute(0, 2, 3, 1)
    tokens = model.patch_embed(x).reshape(1, 48, -1) + expected.reshape(1, 48, -1)
    torch.testing.assert_close(seen[-1][:, 1:], tokens, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.pos_embed, original) and tuple(model.patch_embed.grid_size) == (4, 4)
    plain(x, [0])
    assert not torch.allclose(seen[-1][:, 1:], tokens, atol=1e-4)  # timm's resampling differs
    small = torch.randn(1, 3, 64, 64)
    dino(small, [0])
    a = seen[-1]
    plain(small, [0])
    assert torch.equal(a, seen[-1])
    hook.remove()


def test_discovery_on_data_without_boxes_or_masks_is_one_line(tmp_path, monkeypatch, capsys):
    from conftest import TINY_REGISTRY, call_cli, use_registry
    from PIL import Image

    use_registry(tmp_path, monkeypatch, TINY_REGISTRY)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "flat" / split / cls).mkdir(parents=True)
            Image.new("RGB", (64, 64), (40 * len(cls), 90, 9)).save(tmp_path / "flat" / split / cls / "x.png")
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("disc: {probe: discovery, dataset: flat, knobs: {heap_iterations: 2}}\n")
    (tmp_path / "datasets.yaml").write_text(f"flat: {{format: image_folder, root: {tmp_path / 'flat'}}}\n")
    args = ["-t", "disc", "--tasks", str(tasks), "--datasets", str(tmp_path / "datasets.yaml")]
    code, out, err = call_cli(monkeypatch, capsys, "run", "-e", "tiny_random", *args)
    assert code == 2 and "neither boxes nor foreground masks" in err and "Traceback" not in err
