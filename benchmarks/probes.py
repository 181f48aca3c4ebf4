"""Probe speed and memory, side by side in one run.

linear: on the same cached features (the real EfficientNet-Lite0 pooled features of cub100, 100 species, when
        ../shared/data and the weights are present; otherwise synthetic features of the same shape, and the
        output says so), the full C sweep plus refit with
          (a) probebench's linear probe (torch L-BFGS, every grid point, warm starts),
          (b) scikit-learn LogisticRegression(solver="lbfgs") fit from zero at each of the 45 grid points,
          (c) scikit-learn used as fairly as it can be: one LogisticRegression(solver="lbfgs",
              warm_start=True) whose C is raised with set_params before each fit, in (a)'s increasing order,
              so every fit starts from the previous C's coefficients, and the refit starts from the chosen
              C's solution,
        all three choosing C on the same validation split by the same rule, then refit on train + val; (b) and
        (c) with the same max_iter and tol, which are also (a)'s. Convergence is reported as each side sees
        it, and for (b) and (c) also by (a)'s test (largest absolute gradient entry of the same objective
        <= tol), checked after the timing.
        Targets (issue 4): test top-1 within 0.5 points of scikit-learn (held to (b) and to (c)), (a) at least
        10x faster than (b). (c) has no speed target: (c)/(a) is what is left of (a)'s lead once
        scikit-learn warm-starts too, (b)/(c) what warm starting alone gives scikit-learn.
knn:    weighted kNN (k up to 200) through the kNN task on 100,000 x 768 random train features in the feature
        cache against 10,000 test features; peak resident memory of the process, with a 10,000-row train set
        alongside for scale. Target: under 2 GB. Each measurement runs in its own subprocess.

    python benchmarks/probes.py [linear|knn|all]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CUB = ROOT.parent / "shared" / "data" / "cub100"


def cub_features() -> tuple[dict, str]:
    """Train/test pooled features of cub100 from the real EfficientNet-Lite0, via the cache."""
    import numpy as np

    from probebench.cache.read import image_features, split_rows
    from probebench.data.formats.cub import read_cub
    from probebench.encoders.load import resolve_encoder
    from probebench.encoders.registry import load_registry
    from probebench.extraction.extract import extract_features
    from probebench.extraction.request import ExtractionOptions, FeatureRequest

    ds = read_cub(CUB, "cub100")
    spec = resolve_encoder(load_registry()["efficientnet_lite0"])
    res = extract_features(
        spec, ds, FeatureRequest(tokens=("cls", "pooled", "patches")), ExtractionOptions(progress=False)
    )
    layer = res.layers[-1]
    out = {}
    for split in ("train", "test"):
        rows, y = split_rows(res.store, ds, split)
        out[split] = (image_features(res.store, rows, layer, "pooled"), y)
    desc = f"real: cub100 ({len(out['train'][1])} train / {len(out['test'][1])} test, 100 classes), "
    desc += f"EfficientNet-Lite0 pooled features, dim {out['train'][0].shape[1]}"
    assert np.isfinite(out["train"][0]).all()
    return out, desc


def synthetic_features() -> tuple[dict, str]:
    import numpy as np

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, 1280))
    out = {}
    for split, n in (("train", 2903), ("test", 2999)):
        y = rng.integers(0, 100, n)
        out[split] = (np.abs(centres[y] + 2.5 * rng.normal(size=(n, 1280))).astype("float32"), y)
    return out, "SYNTHETIC: Gaussian class clusters shaped like cub100 (2903/2999 x 1280, 100 classes)"


def fit_watched(model, x, y) -> bool:
    """model.fit(x, y); False if scikit-learn warned that it did not converge (other warnings go through)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def max_gradient(model, x, y, c: float) -> float:
    """Largest absolute gradient entry of (a)'s objective, mean CE + ||W||^2 / (2 C N), at model's solution.

    scikit-learn's lbfgs minimises the same function (its C, scaled by 1/N, the bias not penalised), so this
    is (a)'s convergence test applied to a scikit-learn fit.
    """
    import numpy as np

    n = len(y)
    logits = x @ model.coef_.T + model.intercept_
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(n), np.searchsorted(model.classes_, y)] -= 1
    grad_w = x.T @ p / n + model.coef_.T / (c * n)
    return float(max(np.abs(grad_w).max(), np.abs(p.mean(0)).max()))


def sklearn_sweep(x, y, xt, yt, num_classes: int, seed: int, *, warm: bool = False) -> dict:
    """(b), or with warm=True (c): the same protocol with scikit-learn.

    (b) fits one fresh LogisticRegression per grid point, each from zero. (c) is how a careful user would
    sweep C with scikit-learn: one LogisticRegression(warm_start=True), C raised with set_params before each
    fit in increasing order, so each fit starts from the previous coefficients. Both use (a)'s max_iter and
    tol (tol is also scikit-learn's default). Returns test top-1, chosen C, iterations, scikit-learn's
    convergence verdicts, and every fit's (rows, C, model) for checking convergence by (a)'s test after the
    timing.
    """
    import copy

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from probebench.learners.linear import C_GRID, MAX_ITER, TOL
    from probebench.learners.split import carve_val

    options = {"solver": "lbfgs", "max_iter": MAX_ITER, "tol": TOL}
    fit, val = carve_val(y, seed=seed)
    model = LogisticRegression(warm_start=True, **options)
    scores, fits, converged, iterations = [], [], [], 0
    for c in C_GRID:
        if warm:
            model.set_params(C=c)
        else:
            model = LogisticRegression(C=c, **options)
        converged.append(fit_watched(model, x[fit], y[fit]))
        iterations += int(model.n_iter_.max())
        proba = model.predict_proba(x[val])
        acc = float((model.classes_[proba.argmax(1)] == y[val]).mean() * 100)
        scores.append((acc, log_loss(y[val], proba, labels=model.classes_)))
        # (c) keeps a copy of each fit: the model itself moves on to the next C.
        fits.append((fit, float(c), copy.deepcopy(model) if warm else model))
    best = min(range(len(C_GRID)), key=lambda i: (-scores[i][0], scores[i][1]))
    if warm:
        # The refit on train + val starts from the chosen C's solution, as (a)'s does: a careful user holds
        # that solution already (train + val only adds the validation rows), and starting from zero, or from
        # the largest C's coefficients that `model` holds now, would only throw work away.
        final = copy.deepcopy(fits[best][2])
    else:
        final = LogisticRegression(C=C_GRID[best], **options)
    converged.append(fit_watched(final, x, y))
    iterations += int(final.n_iter_.max())
    fits.append((slice(None), float(C_GRID[best]), final))
    return {
        "top1": float((final.predict(xt) == yt).mean() * 100),
        "chosen_c": float(C_GRID[best]),
        "converged": converged,
        "iterations": iterations,
        "fits": fits,
    }


def linear_bench() -> None:
    import numpy as np
    import torch

    from probebench.learners.linear import TOL, linear_probe

    feats, desc = cub_features() if CUB.is_dir() else synthetic_features()
    (x, y), (xt, yt) = feats["train"], feats["test"]
    k = int(max(y.max(), yt.max()) + 1)
    print(f"data: {desc}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}"
    )
    t0 = time.perf_counter()
    ours, details = linear_probe(x, y, xt, yt, k)
    t_ours = time.perf_counter() - t0
    sk = {}
    for name, warm in (("b", False), ("c", True)):
        t0 = time.perf_counter()
        sk[name] = sklearn_sweep(x.astype(np.float64), y, xt.astype(np.float64), yt, k, seed=0, warm=warm)
        sk[name]["seconds"] = time.perf_counter() - t0
    ref, warm = sk["b"], sk["c"]
    t_ref, t_warm = ref["seconds"], warm["seconds"]
    x64 = x.astype(np.float64)
    for r in sk.values():  # (a)'s convergence test on every scikit-learn fit, outside the timing
        r["grads"] = [max_gradient(m, x64[rows], y[rows], c) for rows, c, m in r["fits"]]
    iters_ours = sum(p["iterations"] for p in details["val_curve"]) + details["refit_iterations"]
    print(
        f"  (a) probebench    {t_ours:8.1f} s  test top-1 {ours['top1']:.2f}  "
        f"C={details['chosen_c']:.3g}  ({len(details['val_curve'])} grid points fitted, "
        f"all converged: {details['all_converged']})  {iters_ours:,} L-BFGS iterations"
    )
    for label, r in (("(b) scikit-learn ", ref), ("(c) sklearn warm ", warm)):
        print(
            f"  {label} {r['seconds']:8.1f} s  test top-1 {r['top1']:.2f}  C={r['chosen_c']:.3g}  "
            f"({len(r['fits']) - 1} grid points fitted, all converged: {all(r['converged'])})  "
            f"{r['iterations']:,} L-BFGS iterations"
        )
    print(
        f"convergence of (b) and (c) by (a)'s test (max |gradient| <= {TOL:g}), over the 45 fits + refit: "
        + ", ".join(
            f"({n}) {sum(g <= TOL for g in r['grads'])}/{len(r['grads'])}, largest {max(r['grads']):.2g}"
            for n, r in sk.items()
        )
    )
    print(f"top-1 difference (a) - (b): {ours['top1'] - ref['top1']:+.2f} points   (target within 0.5)")
    print(f"top-1 difference (a) - (c): {ours['top1'] - warm['top1']:+.2f} points   (target within 0.5)")
    print(f"top-1 difference (b) - (c): {ref['top1'] - warm['top1']:+.2f} points")
    print(f"speed-up (b)/(a): {t_ref / t_ours:.1f}x   (target >= 10)")
    print(f"speed-up (c)/(a): {t_warm / t_ours:.1f}x   (no target: (a) against scikit-learn warm-started)")
    print(f"speed-up (b)/(c): {t_ref / t_warm:.1f}x   (what warm starts alone give scikit-learn)")
    print(f"same C chosen: {details['chosen_c'] == ref['chosen_c']}")
    print(
        f"same C chosen (a) and (c): {details['chosen_c'] == warm['chosen_c']}, "
        f"(b) and (c): {ref['chosen_c'] == warm['chosen_c']}"
    )


def knn_dataset(n_train: int, n_test: int, home: str):
    from probebench.data.base import ImageDataset, Sample

    n = n_train + n_test
    samples = [Sample(f"{i}.jpg", int(i % 1000), "train" if i < n_train else "test") for i in range(n)]
    return ImageDataset("bench", Path(home), [str(c) for c in range(1000)], samples)


def knn_write(n_train: int, n_test: int, dim: int, home: str) -> None:
    """Random features into a feature store, as extraction would leave them (4,096-row shards)."""
    import numpy as np

    from probebench.cache.store import FeatureStore

    rng = np.random.default_rng(0)
    n = n_train + n_test
    store = FeatureStore.open("bench", "bench", f"{n_train:016d}", {}, n, 4096)
    for shard in store.missing_shards():
        rows = store.shard_rows(shard)
        arrays = {"valid": np.ones(len(rows), bool), "pooled.L0": rng.normal(size=(len(rows), dim))}
        store.write_shard(shard, {**arrays, "pooled.L0": arrays["pooled.L0"].astype("float32")})
    store.set_meta(layers=[0], encoder={"num_prefix_tokens": 0, "feature_dim": dim})


def knn_run(n_train: int, n_test: int, home: str) -> None:
    """The kNN task on the store written by knn_write, in a fresh process; prints peak RSS as JSON."""
    from probebench.cache.store import FeatureStore
    from probebench.tasks import get_task

    ds = knn_dataset(n_train, n_test, home)
    store = FeatureStore.open("bench", "bench", f"{n_train:016d}", {}, len(ds), 4096)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    metrics, _ = get_task("knn").evaluate(store, ds, 0, "pooled")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"seconds": time.perf_counter() - t0, "peak_mb": peak, "before_mb": before}
    print(json.dumps({**result, "top1_k20": metrics["top1_k20"]}))


def knn_bench() -> None:
    results = {}
    for n_train in (10_000, 100_000):
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "PROBEBENCH_HOME": home}
            for mode in ("knn-write", "knn-run"):
                out = subprocess.run(
                    [sys.executable, __file__, mode, str(n_train), home],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=env,
                ).stdout
            results[n_train] = json.loads(out.strip().splitlines()[-1])
    for n_train, r in results.items():
        print(
            f"  kNN {n_train:>7,} x 768 train vs 10,000 test: {r['seconds']:6.1f} s, "
            f"peak RSS {r['peak_mb']:6.0f} MB ({r['before_mb']:.0f} MB before the task: Python + torch), "
            f"top-1 {r['top1_k20']:.2f} (random features: chance is 0.1)"
        )
    peak = results[100_000]["peak_mb"]
    print(
        f"100k peak RSS: {peak / 1024:.2f} GB   (target < 2 GB); "
        f"100k/10k ratio {peak / results[10_000]['peak_mb']:.2f}x"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "knn-write":
        sys.exit(knn_write(int(sys.argv[2]), 10_000, 768, sys.argv[3]))
    if len(sys.argv) > 1 and sys.argv[1] == "knn-run":
        sys.exit(knn_run(int(sys.argv[2]), 10_000, sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["linear", "knn", "all"])
    args = parser.parse_args()
    if args.what in ("knn", "all"):
        knn_bench()
    if args.what in ("linear", "all"):
        linear_bench()
