"""Linear and attentive probes: the objective is scikit-learn's, the search finds the full grid's optimum, the
validation split is carved from train, the BN variant is scale-free, and the attentive block is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from probebench.learners.attentive import AttentivePooler, attentive_probe
from probebench.learners.linear import C_GRID, fit_logreg, linear_probe, search_c
from probebench.learners.split import carve_val


def blobs(n: int, d: int, k: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(k, d))
    y = rng.integers(0, k, n)
    return (centres[y] + noise * rng.normal(size=(n, d))).astype(np.float32), y


def test_val_split_is_stratified_seeded_and_keeps_a_row_of_every_class():
    labels = np.array([0] * 10 + [1] * 5 + [2])
    fit, val = carve_val(labels, 0.2, seed=0)
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]
    assert sorted([*fit, *val]) == list(range(16)) and 15 in fit, "the single class-2 row stays in fit"
    assert np.array_equal(carve_val(labels, 0.2, seed=0)[1], val)
    assert not np.array_equal(carve_val(labels, 0.2, seed=1)[1], val)


def test_objective_and_solution_match_scikit_learn():
    x, y = blobs(300, 8, 3, 2.0, 0)
    ours = fit_logreg(torch.tensor(x, dtype=torch.float64), torch.tensor(y), 3, c=0.5, tol=1e-6)
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10000).fit(x.astype(np.float64), y)
    assert ours.converged
    # softmax parameters are defined up to a shift per feature; compare centred weights and predictions
    w, w_ref = ours.weight.numpy().T, ref.coef_
    np.testing.assert_allclose(w - w.mean(0), w_ref - w_ref.mean(0), atol=1e-4)
    np.testing.assert_array_equal((x @ w.T + ours.bias.numpy()).argmax(1), ref.predict(x))


def test_warm_started_sweep_matches_independent_fits():
    """Warm starts change the path, not the answer: each point's validation score is that of a cold fit."""
    x, y = blobs(600, 40, 10, 4.0, 1)
    xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y)
    best, done = search_c(xt[:400], yt[:400], xt[400:], yt[400:], 10)
    assert len(done) == len(C_GRID) and 0 < best < len(C_GRID) - 1, "a case where regularisation matters"
    for i in (best, 10, 30):
        cold = fit_logreg(xt[:400], yt[:400], 10, float(C_GRID[i]))
        val = float(((xt[400:] @ cold.weight + cold.bias).argmax(1) == yt[400:]).double().mean() * 100)
        assert val == pytest.approx(done[i][0], abs=0.5)


def test_linear_probe_separable_and_records_its_sweep():
    x, y = blobs(300, 16, 4, 0.1, 2)
    xt, yt = blobs(100, 16, 4, 0.1, 3)
    metrics, details = linear_probe(x, y, xt, yt, 4)
    assert metrics["top1"] == 100.0 and details["all_converged"]
    assert details["n_fit"] + details["n_val"] == 300 and details["chosen_c"] in C_GRID
    assert [p["c"] for p in details["val_curve"]] == list(C_GRID)


def test_bn_variant_is_invariant_to_feature_scale_and_shift():
    x, y = blobs(300, 16, 4, 3.0, 4)
    xt, yt = blobs(200, 16, 4, 3.0, 5)
    scale = np.geomspace(1e-3, 1e3, 16).astype(np.float32)
    bn, details = linear_probe(x, y, xt, yt, 4, variant="bn")
    bn_scaled, details_scaled = linear_probe(x * scale + 5, y, xt * scale + 5, yt, 4, variant="bn")
    assert bn["top1"] == pytest.approx(bn_scaled["top1"], abs=0.5)
    assert details["chosen_c"] == details_scaled["chosen_c"]


def naive_cross_attention(pool: AttentivePooler, tokens: torch.Tensor) -> torch.Tensor:
    """The textbook block: project the query and every token, multi-head attention, output projection."""
    b, t, c = tokens.shape
    h, d = pool.heads, c // pool.heads
    q = pool.q(pool.norm_q(pool.query)).view(1, h, 1, d)
    k = pool.k(pool.norm_k(tokens)).view(b, t, h, d).transpose(1, 2)
    v = pool.v(pool.norm_v(tokens)).view(b, t, h, d).transpose(1, 2)
    attn = (q @ k.transpose(-2, -1) * d**-0.5).softmax(-1)
    return pool.proj((attn @ v).reshape(b, c))


def test_attentive_block_equals_the_textbook_cross_attention():
    torch.manual_seed(0)
    pool = AttentivePooler(128)
    for norm in (pool.norm_q, pool.norm_k, pool.norm_v):  # non-trivial affines, so folding them is tested
        torch.nn.init.normal_(norm.weight, 1.0, 0.5)
        torch.nn.init.normal_(norm.bias, 0.0, 0.5)
    torch.nn.init.normal_(pool.v.bias)
    tokens = torch.randn(5, 17, 128) * 3 + 1
    assert pool.heads == 2
    torch.testing.assert_close(pool(tokens), naive_cross_attention(pool, tokens), atol=1e-4, rtol=1e-4)


def test_attentive_probe_finds_the_informative_token_and_is_deterministic():
    """Class evidence sits in one random token position per image (chance is 25 %)."""
    rng = np.random.default_rng(0)
    n, t, c, k = 400, 16, 64, 4
    y = rng.integers(0, k, n)
    tokens = rng.normal(size=(n, t, c)).astype(np.float32)
    where = rng.integers(0, t, n)
    tokens[np.arange(n), where, :k] += 6 * np.eye(k)[y]
    read_tr = lambda pos: tokens[:300][pos]  # noqa: E731
    read_te = lambda pos: tokens[300:][pos]  # noqa: E731
    kw = {"epochs": 15, "warmup_epochs": 2, "batch_size": 32, "base_lr": 0.1}
    m1, d1 = attentive_probe(read_tr, y[:300], read_te, y[300:], k, c, **kw)
    m2, d2 = attentive_probe(read_tr, y[:300], read_te, y[300:], k, c, **kw)
    assert m1["top1"] > 70 and m1 == m2 and d1["val_curve"] == d2["val_curve"]
    assert d1["chosen_epoch"] == 1 + int(np.argmax(d1["val_curve"])) and len(d1["val_curve"]) == 15
