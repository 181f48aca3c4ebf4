"""Part-level probes (Zhu et al. Table 3, left): part retrieval over part crops.

A task reads crops through its `crops:` field (a cached view of its dataset, `probebench.data.views.crops`);
part
classification is the object-level linear and attentive probes on such a view (tagged `part` by it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from probebench.tasks.contract import Context, Evaluation, Metric, Needs, Probe
from probebench.tasks.knobs import Bool, Choice, Knob

if TYPE_CHECKING:
    from probebench.stats.items import ItemScores

# "encoded": the mean of the final-normed patch tokens (the authors' `model.extract`); "projected": the
# projection head's output (MoCo v3 projector, DINO and iBOT heads on the class token); "cls": the
# class token.
FEATURES = {"encoded": "pooled", "cls": "cls", "projected": "projection"}


class PartRetrievalProbe(Probe):
    name = "part_retrieval"
    level = "part"
    description = "cosine retrieval of part crops by part label, average precision per query (AP, mAP)"
    protocol_version = "1"
    roles = ("test",)
    default_splits = {"test": "test"}

    def knobs(self) -> dict[str, Knob]:
        return {"feature": Choice("encoded", tuple(FEATURES)), "include_self": Bool(True)}

    def trained(self, knobs: dict) -> bool:
        return False  # cosine ranking: no seed enters

    def needs(self, knobs: dict) -> Needs:
        return Needs(tokens=(FEATURES[knobs["feature"]],))

    def primary(self, knobs: dict) -> Metric:
        return Metric("ap")  # Table 3 says "AP"; the authors' script prints AP and mAP, both are recorded

    def evaluate(self, ctx: Context) -> Evaluation:
        from probebench.cache.read import check_feature, image_features
        from probebench.learners import retrieval

        test = ctx.roles["test"]
        (layer,) = ctx.layers
        kind = ctx.knobs["feature"]
        present, sizes = np.unique(test.labels, return_counts=True)
        why = None
        if len(present) < 2:
            why = (
                f"the crops hold {len(present)} part class: every crop would retrieve only its own class, so "
                "AP is 100 whatever the features; retrieval needs two or more"
            )
        elif sizes.max() < 2:
            why = "every crop is the only one of its part class: no query has another crop to retrieve"
        if why:
            return Evaluation(
                {"n_crops": len(test.rows)},
                {"probe": "not fitted"},
                undefined=dict.fromkeys(("ap", "map"), why),
            )
        if kind == "projected":
            x = test.store.load("projection", test.rows).astype(np.float32)
        else:
            check_feature(test.store, FEATURES[kind])
            x = image_features(test.store, test.rows, layer, FEATURES[kind])
        ap = retrieval.average_precisions(
            x, test.labels, include_self=ctx.knobs["include_self"], device=ctx.device
        )
        if ctx.knobs["include_self"] and (alone := int(sizes[sizes == 1].sum())):
            ctx.warn(
                f"{alone} crop(s) are the only one of their part class: ranked against themselves, their "
                "AP is 100 whatever the features"
            )
        metrics = retrieval.retrieval_metrics(ap, test.labels, seed=ctx.resampling_seed)
        names = test.dataset.classes
        metrics["per_class_ap"] = {names[int(c)]: v for c, v in metrics["per_class_ap"].items()}
        details = {
            "probe": "part_retrieval",
            "feature": kind,
            "n_crops": len(test.rows),
        }
        return Evaluation(metrics, details, items=_retrieval_items(ap, test))


def _retrieval_items(ap: np.ndarray, test) -> ItemScores:
    """Each query's AP (queries without a positive have none and are left out, as in the metric) and its
    part class, which mAP averages by."""
    from probebench.stats.items import ItemScores, item_ids

    keep = ~np.isnan(ap)
    ids = [name for name, k in zip(item_ids(test.dataset, test.rows), keep, strict=True) if k]
    items = ItemScores()
    items.add("ap", "mean", "queries", ids, ap[keep], whole_set=True)
    items.add("map", "class_mean", "queries", ids, ap[keep], labels=test.labels[keep], whole_set=True)
    return items
