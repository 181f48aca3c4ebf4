"""Object-level probes (Zhu et al. Table 1 protocol): weighted kNN, linear (plain and MAE's BatchNorm
variant) and CAE's attentive probe, each reading one layer of cached features and one class per image."""

from __future__ import annotations

import numpy as np

from probebench.probes import attentive, knn, linear, split
from probebench.tasks.base import Context, Evaluation, Metric, Needs, Probe, register_probe
from probebench.tasks.features import check_feature, feature_blocks, image_features, token_reader


def _train_test(ctx: Context):
    return ctx.roles["train"], ctx.roles["test"]


@register_probe
class KnnProbe(Probe):
    name = "knn"
    level = "object"
    description = "weighted kNN (cosine, exp(sim / T) votes), DINO's protocol"
    protocol_version = "1"
    reads_feature = True

    def defaults(self) -> dict:
        return {"ks": list(knn.DEFAULT_KS), "temperature": knn.TEMPERATURE}

    def check(self, knobs: dict) -> None:
        if not knobs["ks"] or any(not isinstance(k, int) or k < 1 for k in knobs["ks"]):
            raise ValueError(f"knobs.ks: give positive whole numbers, not {knobs['ks']!r}")

    def needs(self, knobs: dict) -> Needs:
        return Needs(tokens=("cls", "pooled"))

    def primary(self, knobs: dict) -> Metric:
        k = 20 if 20 in knobs["ks"] else knobs["ks"][0]  # DINO reports k = 20
        return Metric(f"top1_k{k}")

    def evaluate(self, ctx: Context) -> Evaluation:
        train, test = _train_test(ctx)
        check_feature(train.store, ctx.feature)
        (layer,) = ctx.layers
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
            seed=ctx.seed,
        )
        return Evaluation(metrics, {"probe": "knn", "similarity": "cosine", "n_train": len(train.rows)})


@register_probe
class LinearProbe(Probe):
    name = "linear"
    level = "object"
    description = "logistic regression, C swept on a validation split carved from train, refit on train+val"
    protocol_version = "1"
    reads_feature = True

    def defaults(self) -> dict:
        return {
            "variant": "plain",
            "c_grid": list(linear.C_GRID_SPEC),
            "max_iter": linear.MAX_ITER,
            "tol": linear.TOL,
            "val_fraction": split.VAL_FRACTION,
            "bn_eps": linear.BN_EPS,
        }

    def check(self, knobs: dict) -> None:
        if knobs["variant"] not in linear.VARIANTS:
            raise ValueError(
                f"knobs.variant: use one of {', '.join(linear.VARIANTS)}, not {knobs['variant']!r}"
            )
        if len(knobs["c_grid"]) != 3 or int(knobs["c_grid"][2]) < 1:
            raise ValueError("knobs.c_grid: [log10 of the first C, log10 of the last C, number of points]")

    def needs(self, knobs: dict) -> Needs:
        return Needs(tokens=("cls", "pooled"))

    def primary(self, knobs: dict) -> Metric:
        return Metric("top1")

    def evaluate(self, ctx: Context) -> Evaluation:
        train, test = _train_test(ctx)
        check_feature(train.store, ctx.feature)
        (layer,) = ctx.layers
        k = ctx.knobs
        metrics, details = linear.linear_probe(
            image_features(train.store, train.rows, layer, ctx.feature),
            train.labels,
            image_features(test.store, test.rows, layer, ctx.feature),
            test.labels,
            len(train.dataset.classes),
            variant=k["variant"],
            seed=ctx.seed,
            device=ctx.device,
            max_iter=k["max_iter"],
            grid=np.logspace(*k["c_grid"][:2], int(k["c_grid"][2])),
            tol=k["tol"],
            val_fraction=k["val_fraction"],
            bn_eps=k["bn_eps"],
        )
        return Evaluation(metrics, {**details, "n_train": len(train.rows)})


@register_probe
class AttentiveProbe(Probe):
    name = "attentive"
    level = "object"
    description = "CAE's attentive probe: cross-attention block, BatchNorm, linear; epoch chosen on val"
    protocol_version = "1"

    def defaults(self) -> dict:
        return {
            "variant": "cae",
            "epochs": attentive.EPOCHS,
            "warmup_epochs": attentive.WARMUP_EPOCHS,
            "batch_size": attentive.BATCH_SIZE,
            "base_lr": attentive.BASE_LR,
            "head_dim": attentive.HEAD_DIM,
            "val_fraction": split.VAL_FRACTION,
        }

    def needs(self, knobs: dict) -> Needs:
        return Needs(tokens=("cls", "patches"))

    def primary(self, knobs: dict) -> Metric:
        return Metric("top1")

    def evaluate(self, ctx: Context) -> Evaluation:
        train, test = _train_test(ctx)
        (layer,) = ctx.layers
        k = ctx.knobs
        # The width of the probed layer's tokens, not the last layer's (CNN stages differ).
        dim = train.store.width(f"patches.L{layer}")
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
            seed=ctx.seed,
            device=ctx.device,
        )
        return Evaluation(
            metrics, {**details, "n_train": len(train.rows), "tokens": "all (prefix + patches)"}
        )
