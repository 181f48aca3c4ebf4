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
read from the cache's memory map, never copied once per pair.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from probebench.data.pairs import PAIR_MODES
from probebench.metrics.correspondence import THRESHOLDS, metric_name
from probebench.tasks.contract import Context, Evaluation, Metric, Needs, Probe
from probebench.tasks.knobs import Choice, Float, Int, Knob, List

if TYPE_CHECKING:
    import torch

    from probebench.cache.store import FeatureStore
    from probebench.stats.items import ItemScores

PAIRS_FILE = "pairs.csv"


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
            ctx.warn(f"{n} {reason}: no pair from them")
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
            return Evaluation({"n_pairs": 0}, details, undefined={metric_name(a): why for a in k["alphas"]})
        for reason, n in sorted(tested.skipped.items()):
            ctx.warn(f"{n} {reason}, left out of PCK")
        return _score(ctx, tested, details)


class _Tested:
    """Every tested keypoint (M rows): its pair, part, source point, true and predicted target points,
    reference size, and the centre of the target patch the true point falls in (the best a patch-centre
    prediction can do). Rows go into arrays that double when full: thousands of small per-pair arrays kept
    alive between the matching's temporaries fragmented the heap until memory grew with the pairs."""

    # columns of `values`: source x, y; true x, y; predicted x, y; reference size; bound x, y
    COLUMNS = {
        "source": slice(0, 2),
        "true": slice(2, 4),
        "pred": slice(4, 6),
        "size": 6,
        "bound": slice(7, 9),
    }

    def __init__(self) -> None:
        self.pairs: list[tuple[int, int]] = []  # (source row, target row) of pairs with a tested keypoint
        self.ids = np.empty((1024, 2), dtype=np.int64)  # pair index, part
        self.values = np.empty((1024, 9), dtype=np.float64)
        self.n = 0
        self.skipped: Counter = Counter()
        self.image_reads = 0  # images whose grid was read

    def add(self, pair: tuple[int, int], parts, source, true, pred, size: float, bound) -> None:
        m = len(parts)
        while self.n + m > len(self.ids):
            self.ids = np.concatenate([self.ids, np.empty_like(self.ids)])
            self.values = np.concatenate([self.values, np.empty_like(self.values)])
        rows = slice(self.n, self.n + m)
        self.ids[rows, 0], self.ids[rows, 1] = len(self.pairs), parts
        self.values[rows] = np.column_stack([source, true, pred, np.full(m, size), bound])
        self.pairs.append(pair)
        self.n += m

    def column(self, key: str) -> np.ndarray:
        if key in ("pair", "part"):
            return self.ids[: self.n, 0 if key == "pair" else 1]
        return self.values[: self.n, self.COLUMNS[key]]

    @property
    def pair(self) -> np.ndarray:
        return self.column("pair")


class _Grids:
    """Each image's (h, w, C) grid as a tensor view of the cache's memory-mapped shard, as stored (float16
    or float32): read from disk once and then from the page cache, with no copy kept in the process, so
    memory stays flat in the number of pairs (converted float32 copies, one per image, grew the heap with
    the pairs). `reads` counts the images whose grid was asked for."""

    def __init__(self, store: FeatureStore, name: str, rows: np.ndarray, device: torch.device) -> None:
        import torch

        self.device = device
        with warnings.catch_warnings():  # read-only memory maps: the tensors are only read
            warnings.simplefilter("ignore", UserWarning)
            views = [torch.from_numpy(g) for g in store.load_grids(name, rows)] if len(rows) else []
        self.views = dict(zip(np.asarray(rows).tolist(), views, strict=True))
        self.asked: set[int] = set()

    def __getitem__(self, row: int) -> torch.Tensor:
        self.asked.add(row)
        return self.views[row].to(self.device) if self.device.type != "cpu" else self.views[row]

    @property
    def reads(self) -> int:
        return len(self.asked)

    def work_buffer(self) -> torch.Tensor:
        """One float32 (h*w, C) buffer of the largest grid, which every pair's target is copied into."""
        import torch

        cells = max((int(v.shape[0]) * int(v.shape[1]) for v in self.views.values()), default=1)
        width = max((int(v.shape[2]) for v in self.views.values()), default=1)
        return torch.empty((cells, width), dtype=torch.float32, device=self.device)


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
    grids = _Grids(test.store, name, rows, ctx.device)
    work = grids.work_buffer()
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
        uv = match_points(query, grids[target], k["soft_radius"], k["soft_temperature"], work)
        bound = g_t.grid_to_image(np.floor(g_t.image_to_grid(true)) + 0.5)  # the true point's patch centre
        out.add((source, target), parts, src, true, g_t.grid_to_image(uv), size, bound)
    out.image_reads = grids.reads
    return out


def _score(ctx: Context, tested: _Tested, details: dict) -> Evaluation:
    from probebench.metrics.correspondence import grouped_pck

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
    from probebench.metrics.correspondence import items_array, pair_counts
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
