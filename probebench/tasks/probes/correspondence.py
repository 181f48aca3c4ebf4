"""Semantic keypoint correspondence (SPair-71k, PF-PASCAL/WILLOW, CUB pairs): PCK of nearest-neighbour
matches between two images of one category, from cached patch tokens only.

For each pair (`probebench.data.pairs`) and each keypoint labelled in both images: the source's feature at
the keypoint, its most similar target patch by cosine, the prediction at that patch's centre (or a window
soft-argmax), mapped back to the target's original pixels, where PCK's threshold is measured
(`probebench.metrics.correspondence`). Images are whole: `stretch` resizes each to the evaluation size
without a crop (a centre crop would drop keypoints), `native` reads each at its own size (longer side capped
by `max_side`).

Declared before any number was looked at: the last block's final-normed patch tokens (the encoder's output
features, what DINOv2 and DINOv3 match on; `--layer` sweeps the rest), the patch a keypoint falls in, the
best patch's centre, the whole image stretched to the encoder's own evaluation size. Each image's grid is
read from the cache once and kept while pairs use it (a bounded cache of grids), never once per pair.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from probebench.data.pairs import PAIR_MODES
from probebench.metrics.correspondence import THRESHOLDS
from probebench.tasks.contract import Context, Evaluation, Metric, Needs, Probe
from probebench.tasks.knobs import Choice, Float, Int, Knob, List

if TYPE_CHECKING:
    import torch

    from probebench.cache.store import FeatureStore
    from probebench.stats.items import ItemScores

PAIRS_FILE = "pairs.csv"
GRID_CACHE_BYTES = 512 * 2**20  # grids kept in memory while pairs use them


class KeypointCorrespondenceProbe(Probe):
    name = "keypoint_correspondence"
    level = "part"
    description = "keypoint correspondence between images of one category: nearest patch by cosine, PCK"
    protocol_version = "1"
    roles = ("test",)
    default_splits = {"test": "test"}
    reads = "patch grids"

    def knobs(self) -> dict[str, Knob]:
        return {
            "alphas": List([0.05, 0.1, 0.15], Float(0.1, gt=0, le=1), min_len=1, max_len=8, unique=True),
            "threshold": Choice("box", THRESHOLDS),
            "framing": Choice("stretch", ("stretch", "native")),
            "max_side": Int(0, ge=0, le=16_384),  # native: 0 reads each image at its own size
            "sampling": Choice("patch", ("patch", "bilinear")),
            # window soft-argmax around the best patch: 0 is off (the patch centre); values are ours, declared
            "soft_radius": Int(0, ge=0, le=8),
            "soft_temperature": Float(0.04, gt=0, le=10),
            "pairs": Choice("sampled", PAIR_MODES),
            "pairs_per_category": Int(100, ge=1, le=1_000_000),
            "min_visibility": Int(1, ge=1, le=2),  # CUB: 1 visible; COCO: 1 labelled, 2 visible
        }

    def check(self, knobs: dict) -> None:
        if knobs["max_side"] and knobs["framing"] != "native":
            raise ValueError("max_side caps native framing; drop it, or give framing: native")

    def trained(self, knobs: dict) -> bool:
        return knobs["pairs"] == "sampled"  # nothing is fitted, but the run's seed draws the pairs

    def needs(self, knobs: dict) -> Needs:
        native = knobs["framing"] == "native"
        return Needs(
            tokens=("patches",),
            geometry=knobs["framing"],
            max_side=(knobs["max_side"] or None) if native else None,
        )

    def primary(self, knobs: dict) -> Metric:
        from probebench.metrics.correspondence import metric_name

        alphas = knobs["alphas"]
        return Metric(metric_name(0.1 if 0.1 in alphas else alphas[0]))

    def evaluate(self, ctx: Context) -> Evaluation:
        from probebench.data.pairs import draw_pairs, listed_pairs

        test = ctx.roles["test"]
        k = ctx.knobs
        if k["pairs"] == "listed":
            draw = listed_pairs(test.dataset, test.split, test.rows)
        else:
            draw = draw_pairs(test.dataset, test.rows, k["pairs"], k["pairs_per_category"], ctx.training_seed)
        for reason, n in sorted(draw.skipped.items()):
            ctx.warn(f"{n} {reason}: no pair of them")
        papers = test.dataset.extra.get("pck_threshold")
        if papers and papers != k["threshold"]:
            ctx.warn(
                f"PCK measured by the {k['threshold']} here; this dataset's papers measure it by the {papers}"
            )
        tested = _match_pairs(ctx, draw.pairs, draw.parts)
        skipped = draw.skipped + tested.skipped
        details = {
            "probe": "keypoint_correspondence",
            "pairs": k["pairs"],
            "n_pairs": int(len(tested.pairs)),
            "n_keypoints": int(len(tested.pair)),
            "skipped": dict(sorted(skipped.items())),
        }
        if len(tested.pair) == 0:
            why = "no pair shares a labelled keypoint that lies on both images' grids: PCK has no keypoint"
            return Evaluation({"n_pairs": 0}, details, undefined={_name(a): why for a in k["alphas"]})
        for reason, n in sorted(tested.skipped.items()):
            ctx.warn(f"{n} {reason}, left out of PCK")
        return _score(ctx, tested, details)


def _name(alpha: float) -> str:
    from probebench.metrics.correspondence import metric_name

    return metric_name(alpha)


class _Tested:
    """Every tested keypoint (M rows): its pair, part, true and predicted target points, reference size, and
    the centre of the target patch the true point falls in (the best a patch-centre prediction can do)."""

    def __init__(self) -> None:
        self.pairs: list[tuple[int, int]] = []  # (source row, target row) of pairs with a tested keypoint
        keys = ("pair", "part", "source", "true", "pred", "size", "bound")
        self.rows: dict[str, list] = {k: [] for k in keys}
        self.skipped: Counter = Counter()
        self.image_reads = 0  # grids read from the cache (an image used by many pairs is read about once)

    def add(self, pair: tuple[int, int], parts, source, true, pred, size: float, bound) -> None:
        index = len(self.pairs)
        self.pairs.append(pair)
        for key, value in (
            ("pair", np.full(len(parts), index)),
            ("part", parts),
            ("source", source),
            ("true", true),
            ("pred", pred),
            ("size", np.full(len(parts), size)),
            ("bound", bound),
        ):
            self.rows[key].append(value)

    def column(self, key: str) -> np.ndarray:
        return np.concatenate(self.rows[key]) if self.rows[key] else np.zeros(0)

    @property
    def pair(self) -> np.ndarray:
        return self.column("pair").astype(np.int64)


class _Grids:
    """Each image's (h, w, C) grid as float32 on the probe's device, read from the cache on first use and
    kept (least recently used first out) within `GRID_CACHE_BYTES`: pairs of one category reuse a few
    images, so a dataset's pairs read each image about once, and memory stays flat in the number of pairs."""

    def __init__(self, store: FeatureStore, name: str, device: torch.device) -> None:
        self.store, self.name, self.device = store, name, device
        self.kept: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.reads = 0

    def __getitem__(self, row: int) -> torch.Tensor:
        import torch

        if row in self.kept:
            self.kept.move_to_end(row)
            return self.kept[row]
        (grid,) = self.store.load_grids(self.name, [row])
        tensor = torch.from_numpy(np.array(grid, dtype=np.float32)).to(self.device)
        self.reads += 1
        self.kept[row] = tensor
        self.bytes += tensor.numel() * 4
        while self.bytes > GRID_CACHE_BYTES and len(self.kept) > 1:
            _, old = self.kept.popitem(last=False)
            self.bytes -= old.numel() * 4
        return tensor


def _match_pairs(ctx: Context, pairs: np.ndarray, listed: list[list[int]] | None) -> _Tested:
    """Match every pair's shared keypoints (only the parts its list names, for listed pairs): predictions in
    the target's original pixels."""
    from probebench.cache.store import array_name
    from probebench.data.pairs import labelled_keypoints, shared_keypoints
    from probebench.learners.matching import match_points, point_features
    from probebench.metrics.correspondence import reference_size

    test = ctx.roles["test"]
    k = ctx.knobs
    (layer,) = ctx.layers
    name = array_name("patches", layer)
    where = f"dataset {test.dataset.name!r}"
    rows = np.unique(pairs) if len(pairs) else np.zeros(0, dtype=np.int64)
    geometry = dict(zip(rows.tolist(), test.store.load_geometry(rows, name), strict=True))
    samples = test.dataset.samples
    points = {r: labelled_keypoints(samples[r], k["min_visibility"], where) for r in rows.tolist()}
    grids = _Grids(test.store, name, ctx.device)
    out = _Tested()
    for i, (source, target) in enumerate(pairs.tolist()):
        parts, src, true = shared_keypoints(points[source], points[target])
        if listed is not None:
            named = np.isin(parts, listed[i])
            parts, src, true = parts[named], src[named], true[named]
        if len(parts) == 0:
            out.skipped["pairs without a keypoint labelled in both images"] += 1
            continue
        on_grid = geometry[source].cell_of(src)[:, 0] >= 0
        if not on_grid.all():
            out.skipped["keypoints outside the source's grid"] += int((~on_grid).sum())
            parts, src, true = parts[on_grid], src[on_grid], true[on_grid]
            if len(parts) == 0:
                continue
        g_t = geometry[target]
        labelled = np.array(list(points[target].values()), dtype=np.float64).reshape(-1, 2)
        sample = test.dataset.samples[target]
        size = reference_size(sample, k["threshold"], (g_t.width, g_t.height), labelled, where)
        if size <= 0:
            out.skipped["pairs whose target's reference size is 0"] += 1
            continue
        query = point_features(grids[source], geometry[source].image_to_grid(src), k["sampling"])
        uv = match_points(query, grids[target], k["soft_radius"], k["soft_temperature"])
        bound = g_t.grid_to_image(np.floor(g_t.image_to_grid(true)) + 0.5)  # the true point's patch centre
        out.add((source, target), parts, src, true, g_t.grid_to_image(uv), size, bound)
    out.image_reads = grids.reads
    return out


def _score(ctx: Context, tested: _Tested, details: dict) -> Evaluation:
    from probebench.metrics.correspondence import grouped_pck, metric_name

    test = ctx.roles["test"]
    k = ctx.knobs
    dataset = test.dataset
    pair, part = tested.pair, tested.column("part").astype(np.int64)
    error = np.linalg.norm(tested.column("pred") - tested.column("true"), axis=1)
    size = tested.column("size")
    bound_error = np.linalg.norm(tested.column("bound") - tested.column("true"), axis=1)
    pairs = np.asarray(tested.pairs, dtype=np.int64)
    names = _keypoint_names(dataset, int(part.max()) + 1)
    category = np.array([dataset.samples[int(s)].label for s in pairs[:, 0]], dtype=np.int64)[pair]
    metrics: dict = {"n_pairs": len(pairs), "n_keypoints": len(pair)}
    items = _items(tested, names, k["alphas"], error, size, dataset)
    for alpha in k["alphas"]:
        hits = error <= alpha * size
        m = metric_name(alpha)
        metrics[m] = float(hits.mean() * 100)
        metrics[f"{m}_ci95"] = items.interval(m, ctx.resampling_seed)
        metrics[f"{m}_per_category"] = grouped_pck(hits, category, dataset.classes)
        metrics[f"{m}_per_keypoint"] = grouped_pck(hits, part, names)
        # PCK if every match were the right patch: how far the grid's cell size alone caps this number
        metrics[f"{m}_grid_bound"] = float((bound_error <= alpha * size).mean() * 100)
    details |= {"image_reads": tested.image_reads, "threshold": k["threshold"]}
    outputs = {PAIRS_FILE: _pairs_csv(tested, names, error, size, k["alphas"], dataset)}
    return Evaluation(metrics, details, outputs=outputs, items=items)


def _keypoint_names(dataset, count: int) -> list[str]:
    """The dataset's keypoint names, or 1-based ids where it names none."""
    names = list(dataset.extra.get("keypoint_names") or [])
    return names + [str(i + 1) for i in range(len(names), count)]


def _items(tested: _Tested, names: list[str], alphas, error, size, dataset) -> ItemScores:
    """Pairs as items: per pair, per keypoint name, (hits, keypoints, keypoints) for each alpha."""
    from probebench.metrics.correspondence import items_array, metric_name, pair_counts
    from probebench.stats.items import ItemScores, item_ids

    pairs = np.asarray(tested.pairs, dtype=np.int64)
    source, target = item_ids(dataset, pairs[:, 0]), item_ids(dataset, pairs[:, 1])
    ids = [f"{s} > {t}" for s, t in zip(source, target, strict=True)]
    part = tested.column("part").astype(np.int64)
    items = ItemScores()
    for alpha in alphas:
        counts = pair_counts(error <= alpha * size, tested.pair, part, len(pairs), len(names))
        items.add(metric_name(alpha), "aacc", "pairs", ids, counts, array=items_array(alpha))
    return items


def _pairs_csv(tested: _Tested, names, error, size, alphas, dataset) -> bytes:
    """One row per tested keypoint: the pair, the keypoint, its source point, true and predicted target
    points (original pixels), the error, the threshold's reference size and the hit at each alpha."""
    from probebench.metrics.correspondence import metric_name
    from probebench.results.render import csv_cell

    pairs = np.asarray(tested.pairs, dtype=np.int64)
    pair, part = tested.pair, tested.column("part").astype(np.int64)
    src, true, pred = tested.column("source"), tested.column("true"), tested.column("pred")
    buf = io.StringIO()
    writer = csv.writer(buf)
    head = ["pair", "source", "target", "keypoint", "source_x", "source_y", "true_x", "true_y"]
    writer.writerow([*head, "pred_x", "pred_y", "error", "reference_size", *map(metric_name, alphas)])
    for m in range(len(pair)):
        s, t = (dataset.samples[int(r)].path for r in pairs[pair[m]])
        coords = [f"{v:.2f}" for v in (*src[m], *true[m], *pred[m], error[m], size[m])]
        hits = [int(error[m] <= a * size[m]) for a in alphas]
        writer.writerow([int(pair[m]), csv_cell(s), csv_cell(t), csv_cell(names[part[m]]), *coords, *hits])
    return buf.getvalue().encode()
