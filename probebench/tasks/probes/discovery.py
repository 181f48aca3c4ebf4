"""Unsupervised object discovery (HEAP, with LOST, TokenCut, FOUND, DINO-seg and trivial boxes as baselines):
CorLoc, saliency and segmentation retrieval from one set of cached features.

A task reads, per image at its own size (native geometry, zero-padded to a multiple of the patch), the last
block's keys and class attention where the encoder has them, and the last block's patch tokens (which stand in
for keys on encoders without attention, and give retrieval descriptors). Roles: `train` fits the trained
methods (HEAP, FOUND; DUTS-TR in the papers' tasks), `reference` is the retrieval database (VOC12 train),
`test` is scored. Methods are a knob; `heap_no_<loss>` trains HEAP without that loss (the `heap_ablation`
task) and `heap_untrained` scores its initial head (the honest control).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image

from probebench.data import annotations
from probebench.data.annotations import ANNOTATIONS, ignore_index, label_classes
from probebench.discovery.configs import (
    DINOSEG_HEAD,
    LOST_K,
    TOKENCUT_EPS,
    TOKENCUT_TAU,
    FoundConfig,
    HeapConfig,
    config_knobs,
)
from probebench.discovery.methods import METHODS, Fitted
from probebench.errors import UserError
from probebench.metrics.discovery import SALIENCY, CorLoc, Saliency, SegRetrieval
from probebench.metrics.segmentation import confusion, count_rows, miou
from probebench.stats.items import ItemScores
from probebench.tasks.contract import Context, Evaluation, Metric, Needs, Probe, RoleData
from probebench.tasks.knobs import Bool, Choice, Float, Int, Knob, List, Text

PRIMARY = ("corloc", "saliency_max_f", "saliency_iou", "retrieval_miou", "retrieval_miou_subset")


@dataclass
class _Source:
    """One role's images as discovery methods read them."""

    role: RoleData
    keys: str  # the token array standing in for keys
    tokens: str
    attention: bool

    def __call__(self, positions: np.ndarray) -> list:
        """One `ImageFeatures` per position."""
        from probebench.discovery.base import ImageFeatures

        rows = self.role.rows[np.asarray(positions, dtype=np.int64)]
        store = self.role.store
        keys = store.load_grids(self.keys, rows)
        tokens = store.load_grids(self.tokens, rows) if self.tokens != self.keys else keys
        att = store.load_grids("attention", rows) if self.attention else [None] * len(rows)
        geo = store.load_geometry(rows, self.keys)
        return [
            ImageFeatures(k, a, t, g, keys_are_tokens=self.keys == self.tokens)
            for k, a, t, g in zip(keys, att, tokens, geo, strict=True)
        ]


def _source(role: RoleData, layer: int) -> _Source:
    from probebench.cache.store import array_name

    arrays = role.store.token_arrays
    tokens = array_name("patches", layer)
    keys = "keys" if "keys" in arrays else tokens
    return _Source(role, keys, tokens, "attention" in arrays and keys == "keys")


def _png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


class DiscoveryProbe(Probe):
    name = "discovery"
    level = "discovery"
    description = "object discovery: HEAP and baselines; CorLoc, saliency (acc, IoU, max F), seg retrieval"
    # 2: LOST and TokenCut tie-breaks and LOST's CNN LayerNorm as the authors' code; 3: saliency leaves out
    # images whose ground truth is empty (they scored 100 for an empty prediction)
    protocol_version = "3"
    roles = ("train", "reference", "test")
    default_splits = {"train": "train", "reference": "train", "test": "test"}
    reads = "keys"

    def knobs(self) -> dict[str, Knob]:
        return {
            "methods": List(
                ["heap", "found", "lost", "tokencut", "dinoseg", "centre", "whole"],
                item=Choice("heap", tuple(METHODS)),
                min_len=1,
            ),
            "primary": Choice("corloc", PRIMARY),  # the first method's metric a leaderboard shows
            "max_side": Int(0, ge=0, le=16_384),  # 0: every image at its own size, as LOST; else capped
            "gt_boxes": Choice("instances", annotations.BOX_MODES),
            "exclude_hard": Bool(False),
            # class label maps for retrieval; "none" skips it
            "retrieval_annotation": Choice("object_mask", (*ANNOTATIONS, "none")),
            # a subset scored as well, e.g. FOUND's 7 VOC classes
            "retrieval_classes": List([], item=Text("")),
            "outputs": Bool(True),
            # keys of RoPE models (DINOv3, EVA-02, PE): as the block's attention uses them, or before RoPE
            "rope_keys": Choice("rotated", ("rotated", "unrotated")),
            "lost_k": Int(LOST_K, ge=1, le=1_000_000),
            "tokencut_tau": Float(TOKENCUT_TAU, ge=-1.0, le=1.0),  # a cosine similarity
            "tokencut_eps": Float(TOKENCUT_EPS, gt=0.0, le=1.0),
            "dinoseg_head": Int(DINOSEG_HEAD, ge=0, le=1024),
            # FOUND's and HEAP's settings, with the domains their classes declare
            **config_knobs(FoundConfig, "found"),
            **config_knobs(HeapConfig, "heap"),
        }

    def check(self, knobs: dict) -> None:
        if knobs["heap_dim"] % knobs["heap_heads"]:
            raise ValueError("knobs.heap_dim must be a multiple of knobs.heap_heads")

    def trained(self, knobs: dict) -> bool:
        return any(METHODS[m].trained for m in knobs["methods"])  # LOST, TokenCut, DINO-seg: no seed

    def needs(self, knobs: dict) -> Needs:
        return Needs(
            tokens=("patches",),
            layers=("last",),
            geometry="native",
            max_side=knobs["max_side"] or None,
            labels=False,
            optional=("keys", "attention"),
            rotated_keys=knobs["rope_keys"] == "rotated",
        )

    def primary(self, knobs: dict) -> Metric:
        return Metric(f"{knobs['methods'][0]}_{knobs['primary']}")

    # -- evaluation ----------------------------------------------------------------------------------------
    def evaluate(self, ctx: Context) -> Evaluation:
        k = ctx.knobs
        (layer,) = ctx.layers
        train, test = _source(ctx.roles["train"], layer), _source(ctx.roles["test"], layer)
        methods = list(dict.fromkeys(k["methods"]))
        skipped = {}
        if not test.attention:
            why = "no class-token attention (the encoder has no keys or no class token)"
            skipped = {m: why for m in methods if METHODS[m].needs_attention}
            methods = [m for m in methods if m not in skipped]
            for m in skipped:
                ctx.warn(f"{m} skipped: {why}")
        if "dinoseg" in methods and len(test.role.rows):
            heads = test([0])[0].attention.shape[-1]
            if k["dinoseg_head"] >= heads:
                ctx.warn(
                    f"dinoseg: the encoder has {heads} heads, no head {k['dinoseg_head']}; "
                    f"head {heads - 1} is used"
                )
                k = {**k, "dinoseg_head": heads - 1}
        if test.keys != "keys":
            ctx.warn(f"no attention keys: the patch tokens of block {layer} stand in for keys")
        ds = test.role.dataset
        if not (annotations.has_boxes(ds) or annotations.has_foreground(ds)):
            raise UserError(
                f"discovery on {ds.name!r}: its images have neither boxes nor foreground masks to score "
                "against; use a dataset with boxes (VOC, COCO) or masks (saliency sets, mask folders)"
            )
        if len(train.role.rows) == 0 and any(METHODS[m].trained for m in methods):
            raise UserError("discovery: the train role has no images to fit HEAP and FOUND on")
        n = len(train.role.rows)
        fitted = {m: METHODS[m].fit(train, n, k, ctx.training_seed) for m in methods}
        trained = {m: f.details for m, f in fitted.items() if f.details}
        outputs = {name: data for f in fitted.values() for name, data in f.outputs.items()}
        undefined: dict[str, str] = {}
        items = ItemScores()
        metrics, per_image, answers = _score(fitted, test, k, ctx, outputs, undefined, items)
        reference = _source(ctx.roles["reference"], layer)
        metrics |= _retrieval(fitted, reference, test, answers, k, undefined, items, ctx.resampling_seed)
        details = {
            "probe": "object discovery",
            "train_images": n,
            "methods": methods,
            "skipped_methods": skipped,
            "trained": trained,
            "keys": "keys" if test.keys == "keys" else "patch tokens",
            "attention": test.attention,
            "dinoseg_head": k["dinoseg_head"] if "dinoseg" in methods else None,
            "ground_truth": {"boxes": k["gt_boxes"], "exclude_hard": k["exclude_hard"]},
        }
        deviations = ["found-no-bilateral-solver", "found-no-augmentation"] if "found" in methods else []
        if any(f"{m}_saliency_max_f" in metrics for m in methods):
            deviations.append("saliency-padded")
        if k["outputs"]:
            outputs["boxes.jsonl"] = (
                "\n".join(json.dumps(r, allow_nan=False) for r in per_image).encode() + b"\n"
            )
        kept = outputs if k["outputs"] else {}
        return Evaluation(metrics, details, kept, undefined, deviations, items if items.metrics else None)


def _score(
    fitted: dict[str, Fitted],
    test: _Source,
    k: dict,
    ctx: Context,
    outputs: dict,
    undefined: dict,
    items: ItemScores,
):
    """CorLoc and saliency of every method on the test images; per-image records, mask files, and the
    per-image outcomes (into `items`). A metric the test images cannot define goes to `undefined` with the
    reason."""
    from probebench.discovery.base import to_image

    ds = test.role.dataset
    with_boxes = annotations.has_boxes(ds) or annotations.has_foreground(ds)
    with_fg = annotations.has_foreground(ds)
    corloc = {m: CorLoc() for m in fitted}
    sal = {m: Saliency() for m in fitted}
    regions: dict[str, list] = {m: [] for m in fitted}
    answers: dict[str, list] = {m: [] for m in fitted}  # grid-size answers, for retrieval
    unanswered: dict[str, list[str]] = {m: [] for m in fitted}  # why a method gave no answer
    no_boxes, per_image = 0, []
    for pos in range(len(test.role.rows)):
        (feats,) = test([pos])
        sample = ds.samples[int(test.role.rows[pos])]
        truth = annotations.boxes(ds, sample, k["gt_boxes"], k["exclude_hard"]) if with_boxes else None
        if truth is not None and len(truth) == 0:  # nothing to find: no box can be right, so not counted
            no_boxes += 1
            truth = None
        fg = annotations.foreground(ds, sample) if with_fg else None
        line = {"image": sample.path, "size": [feats.geometry.width, feats.geometry.height]}
        if truth is not None:
            line["gt_boxes"] = truth.round(2).tolist()
        for m, method in fitted.items():
            d = method.predict(feats)
            if d.why is not None:
                unanswered[m].append(d.why)
            answers[m].append(d)
            if d.regions is not None:
                regions[m].append((d.regions, d.embeddings))
            box, full = to_image(d, feats.geometry)
            entry = {"box": None if box is None else [round(v, 2) for v in box]}
            if truth is not None:
                entry["correct"], entry["iou"] = corloc[m].add(
                    None if box is None else np.asarray(box), truth, sample.path
                )
            if fg is not None:
                sal[m].add(full, fg, sample.path)
            if k["outputs"]:
                name = f"mask.{m}.{pos:06d}.png"
                outputs[name] = _png(full > 0.5)
                entry["mask"] = name
            line[m] = entry
        per_image.append(line)
    metrics: dict = {"n_images": len(per_image), "corloc_images": len(per_image) - no_boxes}
    if no_boxes and with_boxes:
        ctx.warn(f"{no_boxes} test image(s) have no ground-truth box and are left out of CorLoc")
    for m in fitted:
        method_sal = sal[m] if with_fg else None
        metrics |= _method_metrics(m, corloc[m], method_sal, with_boxes, ctx, undefined, items)
        for why, n in Counter(unanswered[m]).items():
            ctx.warn(f"{m}: {n} test image(s) {why}: no box (each a miss) and an empty mask")
    if with_fg:
        empty = next(iter(sal.values())).empty_truth if sal else 0
        metrics |= {"n_saliency_images": len(per_image) - empty, "n_saliency_empty_truth": empty}
        if empty and empty < len(per_image):
            ctx.warn(f"{empty} test image(s) have an empty ground-truth mask and are left out of saliency")
    if k["outputs"]:
        for m, maps in regions.items():
            if maps:
                outputs[f"{m}_regions.npz"] = _regions_npz(maps)
    return metrics, per_image, answers


def _method_metrics(
    method: str,
    corloc: CorLoc,
    saliency: Saliency | None,
    with_boxes: bool,
    ctx: Context,
    undefined: dict,
    items: ItemScores,
) -> dict:
    """One method's CorLoc and saliency metrics, `<method>_<metric>`, each with its interval over the
    images, and their per-image outcomes (into `items`); what the test images cannot define goes to
    `undefined` with the reason."""
    out = {}
    if corloc.hits:
        out[f"{method}_corloc"], out[f"{method}_corloc_ci95"] = corloc.metrics(ctx.resampling_seed)
        items.add(f"{method}_corloc", "mean", "corloc", corloc.names, np.asarray(corloc.hits))
    elif with_boxes:
        undefined[f"{method}_corloc"] = "no test image has a ground-truth box"
    if saliency is not None:
        values, why = saliency.metrics()
        out |= {f"{method}_{name}": v for name, v in values.items()}
        undefined |= {f"{method}_{name}": why for name in SALIENCY if why}
        if values:
            per_image = {"saliency_acc": saliency.acc, "saliency_iou": saliency.iou}
            for name, v in per_image.items():
                items.add(f"{method}_{name}", "mean", "saliency", saliency.names, np.asarray(v))
            curves = np.stack(saliency.curves)
            items.add(f"{method}_saliency_max_f", "max_f", "saliency", saliency.names, curves)
            for name in SALIENCY:
                out[f"{method}_{name}_ci95"] = items.interval(f"{method}_{name}", ctx.resampling_seed)
    return out


def _retrieval(
    fitted: dict[str, Fitted],
    ref: _Source,
    test: _Source,
    answers: dict,
    k: dict,
    undefined: dict,
    items: ItemScores,
    resampling_seed: int,
) -> dict:
    """Segmentation retrieval per method, where both datasets carry class label maps; the test images'
    answers come from scoring (`answers`), the reference images' are computed here. Each mIoU has its
    interval over the test images, whose pixel counts go into `items`. A mean IoU over no class (no labelled
    pixel, nothing predicted) goes to `undefined`."""
    from probebench.discovery.base import to_image

    annotation = k["retrieval_annotation"]
    if annotation == "none":
        return {}
    try:
        names = label_classes(test.role.dataset, annotation)
        label_classes(ref.role.dataset, annotation)
    except UserError:
        return {}
    if len(names) < 2 or not annotations.has_foreground(test.role.dataset):
        return {}
    subset = [names.index(c) for c in k["retrieval_classes"] if c in names]
    out = {}
    for m, method in fitted.items():
        engine = SegRetrieval(len(names), ignore_index(test.role.dataset))
        for pos in range(len(ref.role.rows)):
            (feats,) = ref([pos])
            sample = ref.role.dataset.samples[int(ref.role.rows[pos])]
            d = method.predict(feats)
            mask = to_image(d, feats.geometry)[1] > 0.5
            desc = SegRetrieval.descriptor(feats.tokens, d.mask.astype(np.float64))
            engine.add_reference(desc, mask, annotations.classes(ref.role.dataset, sample, annotation))
        conf = np.zeros((len(names), len(names)), dtype=np.int64)
        counts, ids = [], []
        for pos in range(len(test.role.rows)):
            (feats,) = test([pos])
            sample = test.role.dataset.samples[int(test.role.rows[pos])]
            d = answers[m][pos]
            mask = to_image(d, feats.geometry)[1] > 0.5
            pred = engine.predict(SegRetrieval.descriptor(feats.tokens, d.mask.astype(np.float64)), mask)
            truth = annotations.classes(test.role.dataset, sample, annotation)
            one = confusion(pred, truth, len(names), engine.ignore)
            conf += one
            counts.append(count_rows(one))
            ids.append(sample.path)
        for name, classes in (("retrieval_miou", None), ("retrieval_miou_subset", subset)):
            if name.endswith("subset") and not subset:
                continue
            value = miou(conf, classes)
            if np.isnan(value):
                undefined[f"{m}_{name}"] = "no class occurs in the test labels or the predictions"
            else:
                out[f"{m}_{name}"] = 100.0 * value
                array, per_image = f"{m}_retrieval_counts", np.stack(counts)
                items.add(f"{m}_{name}", "miou", "images", ids, per_image, classes=classes, array=array)
                out[f"{m}_{name}_ci95"] = items.interval(f"{m}_{name}", resampling_seed)
        out[f"{m}_retrieval_references"] = len(engine.labels)
    return out


def _regions_npz(maps: list) -> bytes:
    """Region maps (one (h, w) uint8 array per test image) and region embeddings (n, K, d) float16."""
    buf = io.BytesIO()
    arrays = {f"map_{i:06d}": m for i, (m, _) in enumerate(maps)}
    np.savez_compressed(buf, embeddings=np.stack([e for _, e in maps]).astype(np.float16), **arrays)
    return buf.getvalue()
