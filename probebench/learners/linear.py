"""Linear probes: multinomial logistic regression on frozen features, regularisation chosen on validation.

The objective is scikit-learn's, scaled by 1/N so one tolerance fits every dataset size:
    mean cross-entropy(x W + b, y) + ||W||^2 / (2 C N)     (the bias is not penalised)
minimised full-batch with L-BFGS (strong Wolfe line search) in torch, so it runs on the CPU or a GPU.

C is chosen on the validation split from the established grid C = 10^linspace(-6, 5, 45) (OpenAI CLIP's
logistic-regression probe). Every grid point is fitted, in increasing C, each warm-started from the
previous solution: that is where the speed comes from (a coarse-to-fine search was tried and dropped: on
cub100 it fitted 33 of the 45 points, because validation accuracy is flat and noisy near the optimum, saved
nothing, and missed the full grid's choice). The model is then refit on train + val at the chosen C.

Variants: "plain", and "bn", MAE's linear probe head `BatchNorm1d(affine=False)` + `Linear`. With full-batch
optimisation a BatchNorm without affine is exactly a standardisation by the fitting set's mean and (biased)
variance, eps 1e-6 as in MAE, so "bn" standardises and then fits the same model. MAE trains that head with
LARS for 90 epochs on augmented images without weight decay; here the head is fit on cached features of
unaugmented images with the C sweep above (its largest C is almost unregularised): the deviation
`linear-no-augmentation`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from probebench import progress
from probebench.learners import defaults
from probebench.learners.split import carve_val
from probebench.metrics.classification import classification_metrics

C_GRID = np.logspace(*defaults.LINEAR_C_GRID_SPEC)


@dataclass
class LinearFit:
    weight: torch.Tensor  # (D, K)
    bias: torch.Tensor  # (K,)
    iterations: int
    converged: bool
    max_grad: float  # largest absolute gradient entry at the returned solution


def fit_logreg(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    c: float,
    init: LinearFit | None = None,
    *,
    max_iter: int = defaults.LINEAR_MAX_ITER,
    tol: float = defaults.LINEAR_TOL,
) -> LinearFit:
    """L2-regularised multinomial logistic regression. x (N, D) float, y (N,) long -> LinearFit."""
    n, d = x.shape
    w = init.weight.clone() if init is not None else x.new_zeros(d, num_classes)
    b = init.bias.clone() if init is not None else x.new_zeros(num_classes)
    w.requires_grad_(True)
    b.requires_grad_(True)
    reg = 1.0 / (c * n)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        opt.zero_grad()
        # float32 matmuls, float64 loss: in float32 the loss changes near the optimum fall below its
        # resolution and the line search stalls before the gradient tolerance is reached.
        loss = F.cross_entropy((x @ w + b).double(), y) + 0.5 * reg * w.double().square().sum()
        loss.backward()
        return loss

    opt.step(objective)
    objective()
    grad = max(w.grad.abs().max().item(), b.grad.abs().max().item())
    iterations = int(opt.state[w].get("n_iter", 0))
    return LinearFit(w.detach(), b.detach(), iterations, grad <= tol, grad)


def standardise(
    fit_x: torch.Tensor, *xs: torch.Tensor, eps: float = defaults.LINEAR_BN_EPS
) -> list[torch.Tensor]:
    """BatchNorm1d(affine=False) with the statistics of `fit_x`, applied to fit_x and every other x."""
    mean, var = fit_x.double().mean(0), fit_x.double().var(0, unbiased=False)
    scale = (var + eps).rsqrt()
    return [((t.double() - mean) * scale).to(fit_x.dtype) for t in (fit_x, *xs)]


def _score(fit: LinearFit, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Validation top-1 (%) and mean cross-entropy."""
    logits = x @ fit.weight + fit.bias
    return float((logits.argmax(1) == y).double().mean() * 100), float(F.cross_entropy(logits.double(), y))


def search_c(
    x_fit: torch.Tensor,
    y_fit: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    num_classes: int,
    *,
    grid: np.ndarray = C_GRID,
    max_iter: int = defaults.LINEAR_MAX_ITER,
    tol: float = defaults.LINEAR_TOL,
) -> tuple[int, dict[int, tuple[float, float, LinearFit]]]:
    """LinearFit every grid point on x_fit (increasing C, warm-started) and score it on x_val.

    Returns the chosen grid index and {grid index: (val top-1 %, val loss, LinearFit)}. The choice is the best
    validation top-1; ties (common on small validation splits) go to the lower validation cross-entropy,
    then to the smaller C.
    """
    done: dict[int, tuple[float, float, LinearFit]] = {}
    previous = None
    with progress.stage("linear probe: C grid", total=len(grid), unit="C") as advance:
        for i, c in enumerate(grid):
            previous = fit_logreg(x_fit, y_fit, num_classes, float(c), previous, max_iter=max_iter, tol=tol)
            done[i] = (*_score(previous, x_val, y_val), previous)
            advance()
    best = min(done, key=lambda i: (-done[i][0], done[i][1], i))
    return best, done


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    *,
    variant: str = "plain",
    seed: int = 0,
    resampling_seed: int = 0,
    device: str | torch.device = "cpu",
    ranks: dict[str, np.ndarray] | None = None,
    max_iter: int = defaults.LINEAR_MAX_ITER,
    grid: np.ndarray = C_GRID,
    tol: float = defaults.LINEAR_TOL,
    val_fraction: float = defaults.VAL_FRACTION,
    bn_eps: float = defaults.LINEAR_BN_EPS,
) -> tuple[dict, dict]:
    """Sweep C on a validation split carved from train, refit on train + val, test once.

    x_* (N, D) features, y_* (N,) class indices -> (metrics, details). details holds the chosen C, the
    validation curve, iteration counts and whether every fit converged. `seed` (the training seed) carves
    the validation split, `resampling_seed` draws the intervals; `ranks` receives the test rows'
    true-class ranks (`classification_metrics`).
    """
    if variant not in defaults.LINEAR_VARIANTS:
        raise ValueError(f"unknown linear probe variant {variant!r}; use one of {defaults.LINEAR_VARIANTS}")
    t0 = time.perf_counter()
    fit_rows, val_rows = carve_val(np.asarray(y_train), val_fraction, seed)
    x = torch.as_tensor(np.asarray(x_train, dtype=np.float32), device=device)
    y = torch.as_tensor(np.asarray(y_train), dtype=torch.long, device=device)
    xt = torch.as_tensor(np.asarray(x_test, dtype=np.float32), device=device)
    f, v = torch.as_tensor(fit_rows, device=device), torch.as_tensor(val_rows, device=device)
    x_fit, x_val = standardise(x[f], x[v], eps=bn_eps) if variant == "bn" else (x[f], x[v])
    best, done = search_c(x_fit, y[f], x_val, y[v], num_classes, grid=grid, max_iter=max_iter, tol=tol)
    t_sweep = time.perf_counter() - t0

    x_all, xt = standardise(x, xt, eps=bn_eps) if variant == "bn" else (x, xt)
    final = fit_logreg(x_all, y, num_classes, float(grid[best]), done[best][2], max_iter=max_iter, tol=tol)
    scores = (xt @ final.weight + final.bias).cpu()
    metrics = classification_metrics(scores, np.asarray(y_test), seed=resampling_seed, ranks=ranks)
    details = {
        "probe": "linear",
        "variant": variant,
        "c_grid": [float(c) for c in grid],
        "chosen_c": float(grid[best]),
        "chosen_index": best,
        "val_curve": [
            {
                "index": i,
                "c": float(grid[i]),
                "val_top1": done[i][0],
                "val_loss": done[i][1],
                "iterations": done[i][2].iterations,
                "converged": done[i][2].converged,
            }
            for i in sorted(done)
        ],
        "val_fraction": val_fraction,
        "n_fit": len(fit_rows),
        "n_val": len(val_rows),
        "refit_iterations": final.iterations,
        "all_converged": all(d[2].converged for d in done.values()) and final.converged,
        "max_iter": max_iter,
        "tol": tol,
        "sweep_s": round(t_sweep, 3),
        "total_s": round(time.perf_counter() - t0, 3),
    }
    return metrics, details
