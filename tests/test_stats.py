"""The statistics behind comparisons: per-item metrics equal the probes' own, the bootstrap equals a plain
loop and scipy's, a known difference is found and a null one is not (at its nominal rate), Holm is Holm."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from probebench.metrics.classification import bootstrap, per_class_mean
from probebench.metrics.segmentation import confusion, segmentation_metrics
from probebench.stats.bootstrap import (
    bootstrap_entrants,
    holm,
    p_value,
    percentile_interval,
    resample_weights,
)
from probebench.stats.items import ItemMetric, ItemScores, evaluate_kind

MEAN = ItemMetric(kind="mean", group="g", array="a")


def _counts(pred: np.ndarray, gt: np.ndarray, k: int) -> np.ndarray:
    """(3, K) intersection, ground truth and prediction pixels of one image."""
    conf = confusion(pred, gt, k)
    return np.stack([np.diag(conf), conf.sum(1), conf.sum(0)])


def test_each_kind_s_estimate_is_the_probe_s_own_metric():
    rng = np.random.default_rng(0)
    hits, labels = rng.random(300) < 0.6, rng.integers(0, 7, 300)
    items = ItemScores()
    ids = [f"img{i}" for i in range(300)]
    items.add("top1", "mean", "test", ids, hits)
    items.add("mean_per_class", "class_mean", "test", ids, hits, labels=labels)
    assert items.estimate("top1") == pytest.approx(hits.mean() * 100, abs=1e-9)
    assert items.estimate("mean_per_class") == pytest.approx(per_class_mean(hits, labels), abs=1e-9)
    k, images = 5, []
    for _ in range(12):
        gt = rng.integers(0, k, (9, 11))
        gt[rng.random(gt.shape) < 0.1] = 255
        pred = np.where(rng.random(gt.shape) < 0.7, gt % k, rng.integers(0, k, gt.shape))
        images.append((pred, gt))
    conf = sum(confusion(p, g, k) for p, g in images)
    counts = np.stack([_counts(p, g, k) for p, g in images])
    seg = ItemScores()
    for m in ("miou", "macc", "aacc"):
        seg.add(m, m, "test", [f"i{j}" for j in range(12)], counts, array="counts")
    want = segmentation_metrics(conf)
    for m in ("miou", "macc", "aacc"):
        assert seg.estimate(m) == pytest.approx(want[m], abs=1e-9)


def test_the_bootstrap_is_a_plain_loop_over_the_same_draws():
    rng = np.random.default_rng(1)
    values, labels = rng.random(50), rng.integers(0, 4, 50)
    idx = np.random.default_rng(7).integers(0, 50, size=(300, 50))
    loop = [values[i].mean() * 100 for i in idx]
    dist = bootstrap_entrants(MEAN, [[values]], resamples=300, seed=7)
    assert np.allclose(dist.draws[:, 0], loop, atol=1e-9)
    spec = ItemMetric(kind="class_mean", group="g", array="a", labels="l")
    dist = bootstrap_entrants(spec, [[values]], labels, resamples=300, seed=7)
    assert np.allclose(dist.draws[:, 0], [per_class_mean(values[i], labels[i]) for i in idx], atol=1e-9)
    # the record's own top-1 intervals draw the same indices: the engine gives the same interval
    hits = values > 0.5
    ci = bootstrap(hits, labels, seed=7, resamples=300)["acc"]
    ours = bootstrap_entrants(MEAN, [[hits]], resamples=300, seed=7)
    assert np.allclose(percentile_interval(ours.draws[:, 0]), ci, atol=1e-9)


def test_weights_come_in_chunks_that_are_one_draw(monkeypatch):
    import probebench.stats.bootstrap as b

    whole = np.concatenate(list(resample_weights(40, 100, 3)))
    monkeypatch.setattr(b, "CHUNK_BYTES", 8 * 40 * 7)  # 7 resamples a chunk
    assert np.array_equal(np.concatenate(list(resample_weights(40, 100, 3))), whole)
    assert (whole.sum(1) == 40).all()


def test_a_paired_difference_matches_scipy_s_paired_bootstrap():
    rng = np.random.default_rng(2)
    a = rng.random(400) < 0.70
    b = np.where(rng.random(400) < 0.8, a, rng.random(400) < 0.6)  # correlated with a: pairing matters
    dist = bootstrap_entrants(MEAN, [[a], [b]], resamples=4000, seed=0)
    ours = percentile_interval(dist.draws[:, 0] - dist.draws[:, 1])
    ref = sps.bootstrap(
        (a.astype(float), b.astype(float)),
        lambda x, y, axis: 100 * (x.mean(axis) - y.mean(axis)),
        paired=True,
        vectorized=True,
        n_resamples=4000,
        method="percentile",
        rng=np.random.default_rng(1),
    ).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.6)  # two Monte Carlo draws of 4000
    unpaired = percentile_interval(
        bootstrap_entrants(MEAN, [[a]], resamples=4000, seed=0).draws[:, 0]
        - bootstrap_entrants(MEAN, [[b]], resamples=4000, seed=9).draws[:, 0]
    )
    assert (ours[1] - ours[0]) < 0.8 * (unpaired[1] - unpaired[0])  # pairing narrows it


def test_a_known_difference_is_found_and_a_null_one_at_its_nominal_rate():
    rng = np.random.default_rng(3)
    a = rng.random(500) < 0.75
    b = np.where(rng.random(500) < 0.9, a, False)  # b misses about 7.5 points more
    d = bootstrap_entrants(MEAN, [[a], [b]], resamples=2000, seed=0)
    diff = d.estimates[0] - d.estimates[1]
    assert diff > 0 and p_value(d.draws[:, 0] - d.draws[:, 1], diff) < 0.01
    positives = 0
    for rep in range(200):
        r = np.random.default_rng(1000 + rep)
        x, y = r.random(300) < 0.7, r.random(300) < 0.7  # the same accuracy: no difference
        d = bootstrap_entrants(MEAN, [[x], [y]], resamples=1000, seed=rep)
        est = d.estimates[0] - d.estimates[1]
        positives += p_value(d.draws[:, 0] - d.draws[:, 1], est) < 0.05
    assert 0.02 <= positives / 200 <= 0.09, positives


def test_seeds_widen_the_interval_and_average_the_estimate():
    rng = np.random.default_rng(4)
    base = rng.random(300) < 0.6
    seeds = [np.where(rng.random(300) < 0.15, ~base, base) for _ in range(4)]
    one = bootstrap_entrants(MEAN, [[seeds[0]]], resamples=2000, seed=0)
    many = bootstrap_entrants(MEAN, [seeds], resamples=2000, seed=0)
    assert many.estimates[0] == pytest.approx(np.mean([s.mean() * 100 for s in seeds]))
    lo1, hi1 = percentile_interval(one.draws[:, 0])
    lo, hi = percentile_interval(many.draws[:, 0])
    assert hi - lo > 0 and np.isfinite([lo, hi]).all() and abs((hi - lo) - (hi1 - lo1)) < 10


def test_holm_is_the_step_down_loop():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan, 0.5])
    ref = np.full(6, np.nan)
    order = [3, 0, 2, 1, 5]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (5 - rank) * p[i]))
        ref[i] = running
    assert np.allclose(holm(p), ref, equal_nan=True)


def test_a_count_metric_recomputes_from_resampled_counts_not_per_image_means():
    # image 0: a big class-0 region predicted right; image 1: a tiny class-1 region missed
    c0 = np.array([[100, 0], [100, 0], [100, 0]])
    c1 = np.array([[0, 0], [0, 1], [1, 0]])
    counts = np.stack([c0, c1])
    spec = ItemMetric(kind="miou", group="g", array="c")
    both = evaluate_kind(spec, counts, None, np.ones((1, 2)))[0]
    assert both == pytest.approx(100 * (100 / 101 + 0) / 2)
    assert evaluate_kind(spec, counts, None, np.array([[2.0, 0.0]]))[0] == pytest.approx(100.0)


def test_all_pairs_at_once_are_each_pair_alone():
    from probebench.stats.bootstrap import pairwise_differences

    rng = np.random.default_rng(5)
    outcomes = [[rng.random(120) < q] for q in (0.5, 0.6, 0.7, 0.65)]
    dist = bootstrap_entrants(MEAN, outcomes, resamples=500, seed=2)
    pairs = pairwise_differences(dist)
    assert len(pairs.i) == 6
    for i, j, d, lo, hi, p in zip(
        pairs.i, pairs.j, pairs.difference, pairs.lo, pairs.hi, pairs.p, strict=True
    ):
        draws = dist.draws[:, i] - dist.draws[:, j]
        assert d == pytest.approx(dist.estimates[i] - dist.estimates[j])
        assert (lo, hi) == pytest.approx(percentile_interval(draws))
        assert p == pytest.approx(p_value(draws, d))


def test_afamily_difference_resamples_the_encoders_within_each_family():
    from probebench.stats.claims import family_difference

    rng = np.random.default_rng(6)

    def family(*accuracies):
        return [[rng.random(2000) < a] for a in accuracies]

    side = np.array([True] * 3 + [False] * 3)
    clear = bootstrap_entrants(MEAN, family(0.80, 0.82, 0.81) + family(0.60, 0.62, 0.61), resamples=1000)
    est, lo, hi = family_difference(clear, side, 1.0, 0)
    assert est == pytest.approx(20, abs=2) and lo > 10 and hi < 30
    assert family_difference(clear, side, -1.0, 0)[2] < 0, "lower is better: the same data contradicts"
    # the higher family's mean is above, but its encoders disagree: one encoder decides, so not supported
    split = bootstrap_entrants(MEAN, family(0.95, 0.55, 0.80) + family(0.72, 0.74, 0.73), resamples=1000)
    est, lo, hi = family_difference(split, side, 1.0, 0)
    assert est > 2 and lo < 0 < hi
    items_only = percentile_interval(split.draws[:, :3].mean(1) - split.draws[:, 3:].mean(1))
    assert items_only[0] > 0, "resampling items alone would have called it"


def test_an_items_file_is_read_as_untrusted_input(tmp_path):
    import io
    import zipfile

    from probebench.stats.items import BadItems, items_digest, read_items

    items = ItemScores()
    items.add("top1", "mean", "test", ["a.jpg", "b.jpg", "a.jpg"], np.array([True, False, True]))
    assert items.ids["test"] == ["a.jpg", "b.jpg", "a.jpg#2"], "a repeated name stays a second item"
    data = items.to_bytes()
    path = tmp_path / "items.npz"
    path.write_bytes(data)
    back = read_items(path, items_digest(data), items.metrics)
    assert back.estimate("top1") == pytest.approx(200 / 3)

    def refused(blob: bytes, why: str, sha: str | None = None) -> None:
        path.write_bytes(blob)
        with pytest.raises(BadItems, match=why):
            read_items(path, sha or items_digest(blob), items.metrics)

    refused(data, "its sha256 is not the one its record keeps", sha="0" * 64)
    refused(b"not a zip", "not a readable .npz")
    buf = io.BytesIO()
    np.savez(buf, ids__test=np.array(["a", "b", "c"], dtype=object), top1=np.ones(3))
    refused(buf.getvalue(), "holds object, not numbers or names")  # it would need pickle: refused
    buf = io.BytesIO()
    np.savez(buf, ids__test=np.array(["a", "b", "c"]), top1=np.ones(2))
    refused(buf.getvalue(), "array 'top1' is not 3 numeric rows")
    buf = io.BytesIO()
    np.savez(buf, ids__test=np.array(["a", "a", "c"]), top1=np.ones(3))
    refused(buf.getvalue(), "item names repeat")
    buf = io.BytesIO()
    np.savez(buf, ids__test=np.array(["a", "b", "c"]), top1=np.array([1.0, np.nan, 0.0]))
    refused(buf.getvalue(), "not finite")
    for values, why in (
        (np.array([1e6, 0.0, 1.0]), "values outside"),  # a hit is 0 or 1
        (np.ones((3, 5)), "not 1-dimensional"),
    ):
        buf = io.BytesIO()
        np.savez(buf, ids__test=np.array(["a", "b", "c"]), top1=values)
        refused(buf.getvalue(), why)
    # a header may claim any shape: checked against the member's bytes before an array is made
    buf = io.BytesIO()
    np.savez(buf, ids__test=np.array(["a", "b", "c"]), top1=np.ones(3))
    forged = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename == "top1.npy":  # the header's padding absorbs the longer shape
                raw = raw.replace(b"(3,)", b"(1099511627776,)")
            dst.writestr(info.filename, raw)
    refused(forged.getvalue(), "claims \\(1099511627776,\\) of float64, more than its")
    path.unlink()
    (tmp_path / "elsewhere.npz").write_bytes(data)
    path.symlink_to(tmp_path / "elsewhere.npz")
    with pytest.raises(BadItems, match="symbolic link"):
        read_items(path, items_digest(data), items.metrics)


def test_a_family_difference_is_wrong_at_about_its_nominal_rate_with_few_encoders():
    from probebench.stats.bootstrap import Distribution
    from probebench.stats.claims import family_difference

    rng = np.random.default_rng(8)
    for k in (2, 3):
        wrong = 0
        for rep in range(200):
            effects = rng.normal(0, 2, 2 * k)  # encoders differ; their families do not
            dist = Distribution(effects, effects + rng.normal(0, 0.3, (500, 2 * k)))
            _, lo, hi = family_difference(dist, np.arange(2 * k) < k, 1.0, rep)
            wrong += not lo <= 0 <= hi
        assert wrong / 200 <= 0.09, (k, wrong)
