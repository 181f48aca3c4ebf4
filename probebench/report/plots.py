"""The report's figures, each drawn from the long leaderboard table (matplotlib, no display needed).

Every figure names the data its numbers come from in its title and marks synthetic data, so a figure
copied out of the report still says what it shows. Each function returns None where the records hold
nothing to draw (no part-level task, no layer sweep, ...).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from probebench.results.tables import family_order, headline  # noqa: E402

log = logging.getLogger(__name__)

_PALETTE = plt.get_cmap("tab10").colors


def family_colour(family: str) -> tuple:
    return _PALETTE[family_order(family) % len(_PALETTE)]


def _data_label(rows: pd.DataFrame) -> str:
    """'embedded (synthetic), fruit': each dataset once, synthetic ones marked."""
    seen = rows.drop_duplicates("dataset")
    return ", ".join(
        d + (" (synthetic)" if s else "") for d, s in zip(seen.dataset, seen.synthetic, strict=True)
    )


# Zhu et al.'s headline pair: the linear probe on whole images against part retrieval. Each axis takes the
# first of these tasks that most encoders have a number for, else any task most encoders have.
AXIS_PREFERENCE = {
    "object": ("linear_bn_imagenet", "linear_imagenet", "linear_bn", "linear"),
    "part": ("part_retrieval_cub200", "part_retrieval_coco", "part_retrieval"),
}


def _axis_task(h: pd.DataFrame, level: str) -> tuple[str, str] | None:
    """The (task, dataset) of a level for the headline plot: among those most encoders have a headline
    number for, the first in AXIS_PREFERENCE, else the first by name."""
    rows = h[h.level == level]
    if rows.empty:
        return None
    counts = rows.groupby(["task", "dataset"])["encoder"].nunique().reset_index()
    counts = counts[counts.encoder == counts.encoder.max()]
    prefer = AXIS_PREFERENCE.get(level, ())
    counts = counts.assign(_p=counts.task.map(lambda t: prefer.index(t) if t in prefer else len(prefer)))
    best = counts.sort_values(["_p", "task", "dataset"]).iloc[0]
    return best["task"], best["dataset"]


def _err(rows: pd.DataFrame) -> np.ndarray | None:
    """(2, n) error-bar lengths from lo/hi, zero where a number has no interval."""
    if rows[["lo", "hi"]].isna().all().all():
        return None
    lo = (rows["value"] - rows["lo"]).fillna(0).clip(lower=0)
    hi = (rows["hi"] - rows["value"]).fillna(0).clip(lower=0)
    return np.vstack([lo.to_numpy(), hi.to_numpy()])


def _legend_families(ax, families: list[str]) -> None:
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=family_colour(f), label=f)
        for f in sorted(set(families), key=family_order)
    ]
    ax.legend(handles=handles, title="family", fontsize=8, title_fontsize=8, loc="best")


def object_vs_part(long: pd.DataFrame, ranks: pd.DataFrame | None = None) -> Figure | None:
    """The headline: each encoder's object-level score against its part-level score, coloured by family,
    95 % intervals as error bars. The axes are the object and the part task most encoders ran. With `ranks`
    (`probebench.stats.ranks.rank_tasks`), each label carries the encoder's 95 % rank interval on both."""
    h = headline(long)
    obj, part = _axis_task(h, "object"), _axis_task(h, "part")
    if obj is None or part is None:
        return None
    x = h[(h.task == obj[0]) & (h.dataset == obj[1])].set_index("encoder")
    y = h[(h.task == part[0]) & (h.dataset == part[1])].set_index("encoder")
    both = x.index.intersection(y.index)
    if both.empty:
        return None
    x, y = x.loc[both], y.loc[both]
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for enc in both:
        colour = family_colour(x.loc[enc, "family"])
        xe, ye = _err(x.loc[[enc]]), _err(y.loc[[enc]])
        ax.errorbar(
            x.loc[enc, "value"], y.loc[enc, "value"], xerr=xe, yerr=ye, fmt="o", color=colour, capsize=3
        )
    ax.set_xlabel(f"object level: {obj[0]} on {obj[1]}, {x.iloc[0]['metric']}")
    ax.set_ylabel(f"part level: {part[0]} on {part[1]}, {y.iloc[0]['metric']}")
    _legend_families(ax, list(x["family"]))
    ax.set_title(f"Objects against parts\ndata: {_data_label(pd.concat([x, y]))}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    names = list(both)
    if ranks is not None and not ranks.empty:
        names = [f"{e} (ranks {_rank_span(ranks, obj, e)}, {_rank_span(ranks, part, e)})" for e in both]
        ax.set_title(ax.get_title() + "\nlabels: encoder (95 % rank interval: object, part)", fontsize=10)
    _labels(ax, names, x["value"].to_numpy(float), y["value"].to_numpy(float))
    return fig


def _rank_span(ranks: pd.DataFrame, task: tuple[str, str], encoder: str) -> str:
    """`2-4`: an encoder's 95 % rank interval on a task, `?` where it has none."""
    r = ranks[(ranks.task == task[0]) & (ranks.dataset == task[1]) & (ranks.encoder == encoder)]
    if r.empty or pd.isna(r.iloc[0]["rank_lo"]):
        return "?"
    lo, hi = int(r.iloc[0]["rank_lo"]), int(r.iloc[0]["rank_hi"])
    return str(lo) if lo == hi else f"{lo}-{hi}"


# Where a label may sit, as offsets in points from its point: nearest ring first, right before left, so a
# label stays beside its point where there is room and moves out (with a leader line) only where there is not.
_DIRECTIONS = ((1, 0.6), (1, -1.4), (-1, 0.6), (-1, -1.4), (0, 1.2), (0, -2.2))
_LABEL_OFFSETS = [(r * dx, r * dy) for r in (5, 12, 22, 34, 48) for dx, dy in _DIRECTIONS]


def _labels(ax, names: list[str], xs: np.ndarray, ys: np.ndarray) -> None:
    """Name each point without any label covering another label or a point: greedily, top point first, each
    label takes the first offset in `_LABEL_OFFSETS` that keeps it clear and inside the axes, with a thin
    line back to its point when it had to move away. Encoders of one family often score alike, so clusters
    are the usual case. (adjustText, tried first, left labels over the markers of a cluster at the edge.)"""
    from matplotlib.transforms import Bbox

    ax.margins(0.15)  # room beside points at the edge (scores near 100)
    ax.figure.canvas.draw()  # settle limits and layout: placement works in display pixels
    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    points = [ax.transData.transform((px, py)) for px, py in zip(xs, ys, strict=True)]
    taken = [Bbox.from_extents(p[0] - 5, p[1] - 5, p[0] + 5, p[1] + 5) for p in points]  # the markers
    for i in np.argsort(-np.asarray(ys), kind="stable"):
        xy = (xs[i], ys[i])
        for offset in _LABEL_OFFSETS:
            text, box = _label(ax, names[i], xy, offset, renderer)
            fits = inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1)
            if fits and not any(box.overlaps(t) for t in taken):
                break
            text.remove()
        else:
            offset = _LABEL_OFFSETS[0]  # no room anywhere: beside its point
            text, box = _label(ax, names[i], xy, offset, renderer)
        if offset not in _LABEL_OFFSETS[: len(_DIRECTIONS)]:  # moved beyond the nearest ring
            text.remove()
            _label(ax, names[i], xy, offset, renderer, leader=True)
        taken.append(box)


def _label(
    ax, name: str, xy: tuple[float, float], offset: tuple[float, float], renderer, leader: bool = False
):
    """An annotation `offset` points from `xy`, and the box of its text alone in display pixels."""
    from matplotlib.text import Text

    dx, dy = offset
    text = ax.annotate(
        name,
        xy,
        xytext=offset,
        textcoords="offset points",
        fontsize=8,
        ha="left" if dx > 0 else "right" if dx < 0 else "center",
        va="center",
        arrowprops={"arrowstyle": "-", "color": "0.4", "lw": 0.6, "shrinkB": 3} if leader else None,
    )
    text.update_positions(renderer)
    return text, Text.get_window_extent(text, renderer)  # an annotation's own extent adds its line


def bars(long: pd.DataFrame) -> Figure | None:
    """One panel per task and dataset: each encoder's headline score, encoders grouped by family."""
    h = headline(long)
    if h.empty:
        return None
    panels = list(h.groupby(["level", "task", "dataset"], sort=True))
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, ((level, task, dataset), df) in zip(axes.flat, panels, strict=False):
        df = df.assign(_o=df.family.map(family_order)).sort_values(["_o", "encoder"])
        pos = np.arange(len(df))
        ax.bar(pos, df.value, yerr=_err(df), color=[family_colour(f) for f in df.family], capsize=2)
        ax.set_xticks(pos, df.encoder, rotation=45, ha="right", fontsize=7)
        variant = f" ({df.variant.iloc[0]})" if df.variant.iloc[0] else ""
        synthetic = " (synthetic)" if df.synthetic.any() else ""
        ax.set_title(f"{level}: {task}\n{dataset}{synthetic}, {df.metric.iloc[0]}{variant}", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    _legend_families(axes.flat[0], list(h.family))
    fig.tight_layout()
    return fig


def layer_curves(long: pd.DataFrame) -> Figure | None:
    """Score against block index, one line per encoder and task, object and part side by side, where a
    layer sweep (`--layer`) ran."""
    sweep = long[long.layer_sweep & long.primary & long.level.isin(["object", "part"])]
    if sweep.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, level in zip(axes, ("object", "part"), strict=True):
        df = sweep[sweep.level == level]
        for (enc, task, dataset), line in df.groupby(["encoder", "task", "dataset"]):
            line = line.assign(layer=line.layer.astype(int)).sort_values("layer")
            ax.plot(
                line.layer,
                line.value,
                marker="o",
                color=family_colour(line.family.iloc[0]),
                label=f"{enc}: {task} ({dataset})",
            )
        ax.set_xlabel("block index")
        ax.set_ylabel("score")
        ax.set_title(
            f"{level} level" + (f", data: {_data_label(df)}" if not df.empty else ": no sweep"), fontsize=9
        )
        if not df.empty:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def encoded_vs_projected(long: pd.DataFrame) -> Figure | None:
    """Part retrieval with the encoded (mean patch token) against the projected (projection head) feature,
    for each encoder that has both: the part-to-whole evidence of Zhu et al.'s Table 3."""
    ap = long[
        (long.level == "part")
        & long.primary
        & ~long.layer_sweep
        & long.feature.isin(["encoded", "projected"])
    ]
    pairs = ap.pivot_table(index=["encoder", "dataset"], columns="feature", values="value", aggfunc="first")
    if "projected" not in pairs.columns or "encoded" not in pairs.columns:
        return None
    pairs = pairs.dropna(subset=["encoded", "projected"])
    if pairs.empty:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(pairs) + 2), 3.6))
    pos = np.arange(len(pairs))
    ax.bar(pos - 0.2, pairs.encoded, 0.4, label="encoded", color="tab:blue")
    ax.bar(pos + 0.2, pairs.projected, 0.4, label="projected", color="tab:orange")
    ax.set_xticks(pos, [f"{e}\n{d}" for e, d in pairs.index], fontsize=8)
    ax.set_ylabel(f"part retrieval, {ap.metric.iloc[0]}")
    ax.set_title(f"Encoded against projected features\ndata: {_data_label(ap)}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def discovery_grid(record_dir: Path, image_root: Path | None, title: str, count: int = 4) -> Figure | None:
    """The same first `count` images of one discovery record, one column per method: its mask (tinted)
    and box (solid) over the ground-truth boxes (dashed white). `record_dir` holds the record's
    boxes.jsonl and mask PNGs; images are read from `image_root` where it exists, else a grey canvas."""

    from probebench.data.loader import read_rgb

    lines = _grid_lines(record_dir / "boxes.jsonl", count)
    if not lines:
        return None
    methods = [k for k, v in lines[0].items() if isinstance(v, dict) and "box" in v]
    fig, axes = plt.subplots(
        len(lines), len(methods), figsize=(1.9 * len(methods), 1.9 * len(lines)), squeeze=False
    )
    for r, line in enumerate(lines):
        width, height = line["size"]
        path = _inside(image_root, line["image"]) if image_root else None
        picture = np.full((height, width, 3), 128, dtype=np.uint8)
        if path is not None and path.is_file():
            try:  # as the probe saw it: EXIF orientation applied, the same pixel limit
                picture = np.asarray(read_rgb(str(path)))
            except (OSError, ValueError) as exc:
                log.warning("discovery grid: %s drawn as grey (%s)", line["image"], exc)
        for c, method in enumerate(methods):
            ax = axes[r, c]
            ax.imshow(picture, interpolation="nearest")
            found = line[method] if isinstance(line.get(method), dict) else {}
            mask_file = _inside(record_dir, found.get("mask"))
            mask = _mask(mask_file) if mask_file is not None else None
            if mask is not None:
                tint = ListedColormap(["cyan"])  # the mask in cyan: boxes are green or red
                ax.imshow(np.ma.masked_where(~mask, mask), cmap=tint, alpha=0.45, interpolation="nearest")
            for x0, y0, x1, y1 in line.get("gt_boxes", []):
                ax.add_patch(
                    plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", ls="--", lw=1.2)
                )
            if found.get("box") is not None:  # None: the method found no foreground in this image
                x0, y0, x1, y1 = found["box"]
                colour = "lime" if found.get("correct") else "red"
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.5))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(method, fontsize=8)
    legend = "mask cyan; box green: correct (IoU >= 0.5), red: not; dashed: ground truth"
    fig.suptitle(f"{title}\n{legend}", fontsize=9)
    fig.tight_layout()
    return fig


MAX_GRID_SIDE = 8192  # pixels: a grey canvas stands in for an image that is not at hand


def _grid_lines(path: Path, count: int) -> list[dict]:
    """The first `count` per-image lines of a discovery record's boxes.jsonl, read as untrusted input: a
    line that is not what the probe writes leaves the grid out (with a log line), never the report."""
    from probebench.io import BadFile, no_constant, read_bytes

    if not path.is_file():
        return []
    try:
        text = read_bytes(path, 512 * 2**20).decode("utf-8")
        lines = [json.loads(x, parse_constant=no_constant) for x in text.splitlines()[:count] if x.strip()]
    except (BadFile, UnicodeDecodeError, ValueError, RecursionError) as exc:
        log.warning("discovery grid of %s left out: %s", path.parent.name, exc)
        return []
    for line in lines:
        size = line.get("size") if isinstance(line, dict) else None
        ok = (
            isinstance(line, dict)
            and isinstance(line.get("image"), str)
            and isinstance(size, list)
            and len(size) == 2
            and all(isinstance(v, int) and 0 < v <= MAX_GRID_SIDE for v in size)
            and all(_box(b) for b in line.get("gt_boxes", []))
            and all(_box(v.get("box")) or v.get("box") is None for v in line.values() if isinstance(v, dict))
        )
        if not ok:
            log.warning("discovery grid of %s left out: its boxes.jsonl is not the probe's", path.parent.name)
            return []
    return lines


def _mask(path: Path) -> np.ndarray | None:
    """A mask PNG the probe wrote, as (H, W) bool; None for what is not one (drawn without its mask)."""
    from PIL import Image

    from probebench.data.loader import read_rgb

    if not path.is_file():
        return None
    try:  # read_rgb: a regular file within the pixel limit, never a pipe or a decompression bomb
        return np.asarray(read_rgb(str(path)).convert("L")) > 127
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("discovery grid: mask %s left out (%s)", path.name, exc)
        return None


def _box(box) -> bool:
    return isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)


def _inside(folder: Path, name) -> Path | None:
    """`folder / name` for a relative name that stays inside `folder`, else None (drawn as nothing)."""
    from probebench.data.base import confined
    from probebench.errors import UserError

    if not isinstance(name, str) or not name:
        return None
    try:
        return confined(folder, name, "")
    except UserError:
        return None


def save(fig: Figure, stem: Path) -> list[Path]:
    """stem.png and stem.svg; the figure is closed."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(out[0], dpi=110)
    fig.savefig(out[1])
    plt.close(fig)
    return out
