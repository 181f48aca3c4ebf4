"""Object-level probes (Zhu et al. Table 1 protocol): weighted kNN, linear (plain and MAE's BatchNorm
variant) and CAE's attentive probe, each reading one layer of cached features and one class per image.

The learners (torch) are imported when a probe evaluates: declaring knobs and needs, which the task
catalogue does for every task it lists, imports none of them."""

from __future__ import annotations

import numpy as np

from probebench.learners import defaults
from probebench.tasks.contract import Context, Evaluation, Metric, Needs, Probe
from probebench.tasks.knobs import Choice, Fields, Float, Int, Knob, List

MAX_K = 1000  # neighbours: far above the papers' 200; each test image keeps this many (similarity, index)
MAX_C_POINTS = 100  # a grid of C values: the papers' 45; each point is a full fit


def _train_test(ctx: Context):
    return ctx.roles["train"], ctx.roles["test"]


def _with_items(ctx: Context, ranks: dict, evaluation: Evaluation) -> Evaluation:
    """The evaluation with its per-item outcomes: each test image's hit and class (`classification_items`)."""
    from probebench.metrics.classification import classification_items
    from probebench.stats.items import ItemScores, item_ids

    test = ctx.roles["test"]
    evaluation.items = ItemScores()
    ids = item_ids(test.dataset, test.rows)
    classification_items(evaluation.items, ranks, test.labels, ids, evaluation.metrics)
    return evaluation


def _one_class(ctx: Context, metrics: list[str]) -> Evaluation | None:
    """An evaluation without numbers when the training images hold fewer than two classes: every test image
    would be called that class, so any accuracy is an artefact of the data, not a measurement."""
    train, test = _train_test(ctx)
    present = np.unique(train.labels)
    if len(present) >= 2:
        return None
    names = ", ".join(train.dataset.classes[int(c)] for c in present) or "none"
    why = f"the training images hold {len(present)} class ({names}): classification needs two or more"
    return Evaluation(
        {"n_test": len(test.rows)},
        {"probe": "not fitted", "n_train": len(train.rows)},
        undefined=dict.fromkeys(metrics, why),
    )


class KnnProbe(Probe):
    name = "knn"
    level = "object"
    description = "weighted kNN (cosine, exp(sim / T) votes), DINO's protocol"
    protocol_version = "1"
    reads_feature = True

    def knobs(self) -> dict[str, Knob]:
        return {
            "ks": List(list(defaults.KNN_KS), item=Int(20, ge=1, le=MAX_K), min_len=1, max_len=16),
            # a vote is exp(cosine / T) in float32, which overflows past exp(88): T >= 0.02 keeps it finite
            "temperature": Float(defaults.KNN_TEMPERATURE, ge=0.02, le=100.0),
        }

    def trained(self, knobs: dict) -> bool:
        return False  # neighbours and votes: no seed enters

    def needs(self, knobs: dict) -> Needs:
        return Needs(tokens=("cls", "pooled"))

    def primary(self, knobs: dict) -> Metric:
        k = 20 if 20 in knobs["ks"] else knobs["ks"][0]  # DINO reports k = 20
        return Metric(f"top1_k{k}")

    def evaluate(self, ctx: Context) -> Evaluation:
        from probebench.cache.read import check_feature, feature_blocks, image_features
        from probebench.learners import knn

        train, test = _train_test(ctx)
        check_feature(train.store, ctx.feature)
        (layer,) = ctx.layers
        ks = ctx.knobs["ks"]
        if trivial := _one_class(ctx, [f"{m}_k{k}" for k in ks for m in ("top1", "mean_per_class")]):
            return trivial
        if too_many := [k for k in ctx.knobs["ks"] if k > len(train.rows)]:
            ctx.warn(
                f"kNN k={too_many} is more than the {len(train.rows)} training images: those k vote with "
                "every training image"
            )
        metrics = knn.knn_classify(
            feature_blocks(train.store, train.rows, layer, ctx.feature),
            train.labels,
            image_features(test.store, test.rows, layer, ctx.feature),
            test.labels,
            len(train.dataset.classes),
            tuple(ctx.knobs["ks"]),
            ctx.knobs["temperature"],
            seed=ctx.resampling_seed,
            ranks=(ranks := {}),
        )
        return _with_items(ctx, ranks, Evaluation(metrics, {"probe": "knn", "n_train": len(train.rows)}))


class LinearProbe(Probe):
    name = "linear"
    level = "object"
    description = "logistic regression, C swept on a validation split carved from train, refit on train+val"
    protocol_version = "1"
    reads_feature = True

    def knobs(self) -> dict[str, Knob]:
        log10_c = Float(0.0, ge=-12.0, le=12.0)
        return {
            "variant": Choice("plain", defaults.LINEAR_VARIANTS),
            "c_grid": Fields(
                list(defaults.LINEAR_C_GRID_SPEC),
                fields=(
                    ("log10 of the first C", log10_c),
                    ("log10 of the last C", log10_c),
                    ("number of points", Int(45, ge=1, le=MAX_C_POINTS)),
                ),
            ),
            "max_iter": Int(defaults.LINEAR_MAX_ITER, ge=1, le=100_000),
            "tol": Float(defaults.LINEAR_TOL, gt=0.0, le=1.0),
            "val_fraction": Float(defaults.VAL_FRACTION, gt=0.0, lt=1.0),
            "bn_eps": Float(defaults.LINEAR_BN_EPS, gt=0.0, le=1.0),
        }

    def check(self, knobs: dict) -> None:
        first, last, _ = knobs["c_grid"]
        if first > last:
            raise ValueError(f"knobs.c_grid: the first C (10^{first:g}) is above the last (10^{last:g})")

    def needs(self, knobs: dict) -> Needs:
        return Needs(tokens=("cls", "pooled"))

    def primary(self, knobs: dict) -> Metric:
        return Metric("top1")

    def evaluate(self, ctx: Context) -> Evaluation:
        from probebench.cache.read import check_feature, image_features
        from probebench.learners import linear

        train, test = _train_test(ctx)
        check_feature(train.store, ctx.feature)
        (layer,) = ctx.layers
        k = ctx.knobs
        if trivial := _one_class(ctx, ["top1", "mean_per_class"]):
            return trivial
        metrics, details = linear.linear_probe(
            image_features(train.store, train.rows, layer, ctx.feature),
            train.labels,
            image_features(test.store, test.rows, layer, ctx.feature),
            test.labels,
            len(train.dataset.classes),
            variant=k["variant"],
            seed=ctx.training_seed,
            resampling_seed=ctx.resampling_seed,
            device=ctx.device,
            ranks=(ranks := {}),
            max_iter=k["max_iter"],
            grid=np.logspace(*k["c_grid"][:2], int(k["c_grid"][2])),
            tol=k["tol"],
            val_fraction=k["val_fraction"],
            bn_eps=k["bn_eps"],
        )
        evaluation = Evaluation(
            metrics, {**details, "n_train": len(train.rows)}, deviations=["linear-no-augmentation"]
        )
        return _with_items(ctx, ranks, evaluation)


class AttentiveProbe(Probe):
    name = "attentive"
    level = "object"
    description = "CAE's attentive probe: cross-attention block, BatchNorm, linear; epoch chosen on val"
    protocol_version = "1"

    def knobs(self) -> dict[str, Knob]:
        return {
            "variant": Choice("cae", ("cae",)),
            "epochs": Int(defaults.ATTENTIVE_EPOCHS, ge=1, le=10_000),
            "warmup_epochs": Int(defaults.ATTENTIVE_WARMUP_EPOCHS, ge=0, le=10_000),
            # BatchNorm needs two rows; CAE's batch is 8192
            "batch_size": Int(defaults.ATTENTIVE_BATCH_SIZE, ge=2, le=8192),
            "base_lr": Float(defaults.ATTENTIVE_BASE_LR, gt=0.0, le=100.0),
            "head_dim": Int(defaults.ATTENTIVE_HEAD_DIM, ge=1, le=4096),
            "val_fraction": Float(defaults.VAL_FRACTION, gt=0.0, lt=1.0),
        }

    def check(self, knobs: dict) -> None:
        if knobs["warmup_epochs"] >= knobs["epochs"]:
            raise ValueError(
                f"knobs.warmup_epochs: {knobs['warmup_epochs']} warm-up epochs leave none of the "
                f"{knobs['epochs']} to train at the full rate; give fewer than epochs"
            )

    def needs(self, knobs: dict) -> Needs:
        return Needs(tokens=("cls", "patches"))

    def primary(self, knobs: dict) -> Metric:
        return Metric("top1")

    def evaluate(self, ctx: Context) -> Evaluation:
        from probebench.cache.read import token_reader
        from probebench.cache.store import array_name
        from probebench.learners import attentive

        train, test = _train_test(ctx)
        (layer,) = ctx.layers
        k = ctx.knobs
        if trivial := _one_class(ctx, ["top1", "mean_per_class"]):
            return trivial
        # The width of the probed layer's tokens, not the last layer's (CNN stages differ).
        dim = train.store.width(array_name("patches", layer))
        metrics, details = attentive.attentive_probe(
            token_reader(train.store, train.rows, layer),
            train.labels,
            token_reader(test.store, test.rows, layer),
            test.labels,
            len(train.dataset.classes),
            dim,
            epochs=k["epochs"],
            warmup_epochs=k["warmup_epochs"],
            batch_size=k["batch_size"],
            base_lr=k["base_lr"],
            head_dim=k["head_dim"],
            val_fraction=k["val_fraction"],
            seed=ctx.training_seed,
            resampling_seed=ctx.resampling_seed,
            device=ctx.device,
            ranks=(ranks := {}),
        )
        evaluation = Evaluation(
            metrics,
            {**details, "n_train": len(train.rows)},
            deviations=["attentive-no-augmentation", "attentive-epoch-on-val"],
        )
        return _with_items(ctx, ranks, evaluation)
