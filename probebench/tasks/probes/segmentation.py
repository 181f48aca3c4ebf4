"""Linear semantic segmentation on frozen tokens, at part level (Zhu et al. Table 4) and object level (their
Table 2 and Figure 6): the same probe, tagged by what its labels are.

A task reads sliding windows of its images (`probebench.data.views.windows`, a cached view) in native geometry
with
un-normed tokens of four layers ("4/12", "6/12", "8/12", "12/12": blocks 4, 6, 8, 12 of a 12-block ViT, scaled
to other depths and to CNN stages; knob `head: last` reads the last block alone), trains the head of
`probebench.learners.seghead` on the training windows and scores mmseg's slide inference on the test images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from probebench.data.annotations import (
    ANNOTATIONS,
    ignore_index,
    label_classes,
    label_map,
    reduce_zero_label,
    resize_nearest,
)
from probebench.data.views.windows import WindowSpec
from probebench.errors import UserError
from probebench.learners import defaults
from probebench.metrics.segmentation import confusion, count_items, count_rows, segmentation_metrics
from probebench.tasks.contract import Context, Evaluation, Metric, Needs, Probe, RoleData
from probebench.tasks.knobs import Bool, Choice, Float, Int, Knob

if TYPE_CHECKING:
    from probebench.learners import seghead
    from probebench.stats.items import ItemScores

MAX_WINDOW = 2048  # pixels of a sliding window's side
# pixels of a rescaled image's sides: `long` bounds the longer, `short` (half of it) the shorter, so no
# image is rescaled past 8192 x 4096 (the papers' largest is LIP's (4096, 320))
MAX_SIDE = 8192
HEADS = {"concat4": ("4/12", "6/12", "8/12", "12/12"), "last": ("last",)}
# the record's `deviations` (`probebench.tasks.deviations`)
DEPARTURES = ["segmentation-no-augmentation", "segmentation-fp32", "segmentation-loss-labelled-pixels"]


@dataclass
class _Labels:
    """Label maps of one role's images, one image at a time (windows of an image are consecutive rows)."""

    role: RoleData
    annotation: str
    reduce_zero: bool
    _row: int = -1
    _map: np.ndarray | None = None
    _scaled: tuple[tuple[int, int], np.ndarray] | None = None  # the image's labels at one rescaled size

    @property
    def ignore(self) -> int:
        return ignore_index(self.role.dataset)

    def of_image(self, row: int) -> np.ndarray:
        """(H, W) labels of the image under window `row`, at its stored size, background ignored if
        reduced."""
        sample = self.role.dataset.samples[row]
        source = int(sample.ann["source_row"])
        if source != self._row:
            labels = label_map(self.role.dataset, sample, self.annotation)
            self._map = reduce_zero_label(labels, self.ignore) if self.reduce_zero else labels
            self._row, self._scaled = source, None
        return self._map

    def of_window(self, row: int) -> np.ndarray:
        """The labels the window at `row` shows: the image's labels resized (nearest) to the rescaled size,
        then cut to the window."""
        ann = self.role.dataset.samples[row].ann
        (sw, sh), (x0, y0, x1, y1) = ann["scale_to"], ann["crop"]
        labels = self.of_image(row)
        if self._scaled is None or self._scaled[0] != (sw, sh):  # windows of one image share the rescale
            self._scaled = ((sw, sh), resize_nearest(labels, sw, sh))
        return self._scaled[1][y0:y1, x0:x1]


def read_windows(role: RoleData, layers: list[int]) -> seghead.Windows:
    """The role's windows as the head reads them: per layer (n, h, w, C) grids, one bucket per grid shape."""
    from probebench.cache.store import array_name
    from probebench.geometry import Geometry
    from probebench.learners import seghead

    store, rows = role.store, role.rows
    names = [array_name("patches", layer) for layer in layers]
    order = store.token_arrays
    grids = store.load("grids", rows)[:, [order.index(n) for n in names]]  # (N, L, 2) (h, w) per layer
    _, bucket = np.unique(grids.reshape(len(rows), -1), axis=0, return_inverse=True)
    geo = [Geometry.from_row(g) for g in store.load("geometry", rows)]

    def read(positions: np.ndarray) -> list[np.ndarray]:
        picked = rows[positions]
        h_w = grids[positions[0]]
        return [
            store.load_tokens(name, picked).reshape(len(picked), int(h), int(w), -1)
            for name, (h, w) in zip(names, h_w, strict=True)
        ]

    return seghead.Windows(
        read=read,
        bucket=bucket.ravel(),
        input_hw=np.array([(g.input_h, g.input_w) for g in geo], dtype=np.int64),
    )


class _SegmentationProbe(Probe):
    roles = ("train", "test")
    default_splits = {"train": "train", "test": "test"}
    reads = "patch grids"
    # 2: label stores wide enough for every label (labels above 255 were stored mod 256), and no mIoU
    # where no pixel is labelled or training holds one class
    protocol_version = "2"
    annotation = "mask"
    reduce_zero = True

    def knobs(self) -> dict[str, Knob]:
        # The authors' ADE20K config; shipped tasks on small data set smaller windows and fewer iterations.
        # Sizes are bounded by what an image can be rescaled to in memory: the papers' largest test scale
        # is LIP's (4096, 320) and their largest window 512.
        return {
            "head": Choice("concat4", tuple(HEADS)),
            "annotation": Choice(self.annotation, ANNOTATIONS),
            "reduce_zero_label": Bool(self.reduce_zero),
            "crop": Int(512, ge=16, le=MAX_WINDOW),
            "stride": Int(341, ge=1, le=MAX_WINDOW),
            "short": Int(512, ge=16, le=MAX_SIDE // 2),
            "long": Int(2048, ge=16, le=MAX_SIDE),
            "iterations": Int(defaults.SEGHEAD_ITERATIONS, ge=1, le=10_000_000),
            "batch_size": Int(defaults.SEGHEAD_BATCH_SIZE, ge=1, le=1024),
            "lr": Float(defaults.SEGHEAD_LR, gt=0.0, le=10.0),
            "weight_decay": Float(defaults.SEGHEAD_WEIGHT_DECAY, ge=0.0, le=10.0),
            "warmup_iters": Int(defaults.SEGHEAD_WARMUP_ITERS, ge=0, le=10_000_000),
        }

    def check(self, knobs: dict) -> None:
        if knobs["warmup_iters"] >= knobs["iterations"]:
            raise ValueError("knobs.warmup_iters: give fewer warm-up iterations than iterations")
        self._spec(knobs)

    @staticmethod
    def _spec(knobs: dict) -> WindowSpec:
        try:
            return WindowSpec(knobs["crop"], knobs["stride"], knobs["short"], knobs["long"])
        except UserError as exc:
            raise ValueError(f"knobs.crop/stride/short/long: {exc}") from None

    def needs(self, knobs: dict) -> Needs:
        return Needs(
            tokens=("patches",),
            layers=HEADS[knobs["head"]],
            geometry="native",
            labels=False,
            norm=False,  # the configs take block outputs before the final LayerNorm
            windows=self._spec(knobs),
        )

    def primary(self, knobs: dict) -> Metric:
        return Metric("miou")

    def evaluate(self, ctx: Context) -> Evaluation:
        from probebench.cache.store import array_name
        from probebench.learners import seghead

        train, test = ctx.roles["train"], ctx.roles["test"]
        k = ctx.knobs
        names = label_classes(train.dataset, k["annotation"])
        names = names[1:] if k["reduce_zero_label"] else names
        if not names:
            raise UserError(f"task on {train.dataset.name!r}: no classes to segment besides the background")
        dims = [train.store.width(array_name("patches", layer)) for layer in ctx.layers]
        labels = _Labels(train, k["annotation"], k["reduce_zero_label"])
        windows = read_windows(train, ctx.layers)
        store, counts = seghead.label_store(
            len(train.rows),
            int(windows.input_hw[:, 0].max()),
            int(windows.input_hw[:, 1].max()),
            lambda i: labels.of_window(int(train.rows[i])),
            labels.ignore,
            len(names),
        )
        trained = [names[c] for c in np.nonzero(counts)[0]]
        if len(trained) < 2:
            # One class to learn is a head that always says it: 100 on every pixel it is scored on.
            why = (
                "the training images hold no labelled pixel (all background or ignored): nothing to train"
                if not trained
                else f"the training images hold one class ({trained[0]}) besides what is ignored: a head "
                "that always predicts it scores 100"
            )
            return Evaluation({"n_images": 0}, {"probe": "not fitted"}, undefined=_undefined(why))
        head, details = seghead.train_head(
            windows,
            store,
            dims,
            len(names),
            ignore=labels.ignore,
            iterations=k["iterations"],
            batch_size=k["batch_size"],
            lr=k["lr"],
            weight_decay=k["weight_decay"],
            warmup_iters=k["warmup_iters"],
            seed=ctx.training_seed,
            device=ctx.device,
        )
        conf, items = self._score(head, test, ctx, len(names))
        n_images = len(next(iter(items.ids.values()), []))
        present = int((conf.sum(1) > 0).sum())
        undefined = {}
        if conf.sum():
            metrics = segmentation_metrics(conf, names)
            metrics |= {f"{m}_ci95": items.interval(m, ctx.resampling_seed) for m in ("miou", "macc", "aacc")}
        else:
            items = None
            metrics = {}
            undefined = _undefined("the test images hold no labelled pixel (all background or ignored)")
        metrics |= {"n_images": n_images, "classes_in_ground_truth": present}
        details |= {
            "probe": "linear segmentation",
            "layers": ctx.layers,
            "channels": dims,
            "num_classes": len(names),
            "windows": {"train": len(train.rows), "test": len(test.rows)},
            "epochs": round(k["iterations"] * k["batch_size"] / max(len(train.rows), 1), 2),
        }
        if present < len(names) and not undefined:
            ctx.warn(f"{len(names) - present} of {len(names)} classes never occur in the test ground truth")
        return Evaluation(metrics, details, undefined=undefined, deviations=DEPARTURES, items=items)

    @staticmethod
    def _score(
        head: seghead.LinearSegHead, test: RoleData, ctx: Context, k: int
    ) -> tuple[np.ndarray, ItemScores]:
        """The confusion matrix (K, K) over every test image, and each image's pixel counts per class
        (intersection, ground truth, prediction), from which mIoU, mAcc and aAcc are recomputed."""
        from probebench.learners import seghead

        labels = _Labels(test, ctx.knobs["annotation"], ctx.knobs["reduce_zero_label"])
        windows = read_windows(test, ctx.layers)
        source = np.array([test.dataset.samples[r].ann["source_row"] for r in test.rows])
        conf = np.zeros((k, k), dtype=np.int64)
        images = np.unique(source)
        counts, ids = [], []
        for image in images:
            pos = np.nonzero(source == image)[0]
            first = test.dataset.samples[int(test.rows[pos[0]])].ann
            boxes = np.array([test.dataset.samples[int(test.rows[p])].ann["crop"] for p in pos])
            truth = labels.of_image(int(test.rows[pos[0]]))
            pred = seghead.predict_image(
                head,
                windows.read(pos),
                boxes,
                tuple(int(v) for v in windows.input_hw[pos[0]]),
                tuple(first["scale_to"]),
                truth.shape,
                ctx.device,
            )
            one = confusion(pred, truth, k, labels.ignore)
            conf += one
            counts.append(count_rows(one))
            ids.append(test.dataset.samples[int(test.rows[pos[0]])].path)
        per_image = np.stack(counts) if counts else np.zeros((0, 3, k), dtype=np.int64)
        return conf, count_items(ids, per_image)


def _undefined(why: str) -> dict[str, str]:
    return {m: why for m in ("miou", "macc", "aacc")}


class PartSegmentationProbe(_SegmentationProbe):
    name = "part_segmentation"
    level = "part"
    description = "linear part segmentation: 1x1 conv over 4 blocks' patch grids, slide inference, mIoU"


class ObjectSegmentationProbe(_SegmentationProbe):
    name = "object_segmentation"
    level = "object"
    description = "linear object segmentation (object vs background by default), as part_segmentation"
    annotation = "object_mask"
    reduce_zero = False
