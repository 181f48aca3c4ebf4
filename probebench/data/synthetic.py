"""Procedural object/part dataset: deterministic, download-free, fast to generate.

An object class is a fixed arrangement of 2-3 convex parts (circles, rectangles, polygons) laid out
in a unit box that is jittered, flipped, scaled to 25-80% of the image side and placed at random.
Every part type has its own texture family (stripes, dots, checker, rings, grid, noise) and hue
range, so parts are recognisable by shape *and* texture, while strong random backgrounds (noise,
gradients, stripes, checkers in random colours) keep the mean image colour uninformative of the class.

Only IEEE-exact numpy arithmetic (no sin/exp) is used on pixels, and every sample draws from its
own ``default_rng([seed, index])``, so pixel content is identical across runs, orders and machines
(PNG bytes additionally depend on the zlib build behind Pillow).
"""

from __future__ import annotations

import colorsys
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

GENERATOR_VERSION = "2"  # 2: each part's keypoint (pixels unchanged from 1)

Shape = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (u, v) in object-box units -> bool mask

# part name -> (class, texture family, hue centre); index + 1 is the value in part masks.
# No two parts of the same shape kind (ellipse / rectangle / polygon) share a texture family.
_PART_SPECS: dict[str, tuple[str, str, float]] = {
    "snowman_body": ("snowman", "noise", 0.60),
    "snowman_head": ("snowman", "grid", 0.10),
    "snowman_hat": ("snowman", "stripes_h", 0.85),
    "house_wall": ("house", "checker", 0.05),
    "house_roof": ("house", "stripes_d", 0.35),
    "house_door": ("house", "grid", 0.65),
    "tree_trunk": ("tree", "stripes_v", 0.08),
    "tree_crown": ("tree", "dots", 0.33),
    "lamp_base": ("lamp", "checker", 0.75),
    "lamp_pole": ("lamp", "noise", 0.15),
    "lamp_shade": ("lamp", "stripes_h", 0.55),
    "car_body": ("car", "stripes_d", 0.98),
    "car_window": ("car", "grid", 0.50),
    "car_wheels": ("car", "rings", 0.25),
}
PARTS: tuple[str, ...] = tuple(_PART_SPECS)
PART_OF: dict[str, str] = {name: spec[0] for name, spec in _PART_SPECS.items()}
CLASSES: tuple[str, ...] = tuple(dict.fromkeys(PART_OF.values()))

MIN_PART_PIXELS = 4  # every part must stay visible after occlusion by later parts
_MAX_LAYOUT_TRIES = 100


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> Shape:
    return lambda u, v: ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 <= 1.0


def _rect(x0: float, y0: float, x1: float, y1: float) -> Shape:
    return lambda u, v: (u >= x0) & (u < x1) & (v >= y0) & (v < y1)


def _polygon(*pts: tuple[float, float]) -> Shape:
    """Convex polygon as the intersection of half-planes (works for either vertex winding)."""

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        sides = [
            (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0)
            for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True)
        ]
        return np.all([s >= 0 for s in sides], axis=0) | np.all([s <= 0 for s in sides], axis=0)

    return inside


def _union(*shapes: Shape) -> Shape:
    return lambda u, v: np.any([s(u, v) for s in shapes], axis=0)


def _layout(cls: str, rng: np.random.Generator) -> list[tuple[str, Shape]]:
    """Parts of one object in unit-box coordinates, in drawing order (later parts occlude)."""
    j = lambda a: a + rng.uniform(-0.04, 0.04)  # noqa: E731 - per-parameter layout jitter
    if cls == "snowman":
        return [
            ("snowman_body", _ellipse(0.5, j(0.7), j(0.3), j(0.28))),
            ("snowman_head", _ellipse(j(0.5), 0.33, j(0.18), j(0.17))),
            ("snowman_hat", _rect(j(0.36), 0.0, j(0.64), j(0.18))),
        ]
    if cls == "house":
        return [
            ("house_wall", _rect(j(0.1), 0.45, j(0.9), 1.0)),
            ("house_roof", _polygon((0.0, 0.48), (1.0, 0.48), (j(0.5), 0.0))),
            ("house_door", _rect(j(0.4), j(0.68), j(0.6), 1.0)),
        ]
    if cls == "tree":
        return [
            ("tree_trunk", _rect(j(0.42), 0.5, j(0.58), 1.0)),
            ("tree_crown", _ellipse(0.5, j(0.38), j(0.42), j(0.36))),
        ]
    if cls == "lamp":
        return [
            ("lamp_pole", _rect(j(0.45), 0.3, j(0.55), 0.92)),
            ("lamp_base", _ellipse(0.5, 0.92, j(0.3), j(0.08))),
            ("lamp_shade", _polygon((j(0.3), 0.0), (j(0.7), 0.0), (j(0.88), 0.38), (j(0.12), 0.38))),
        ]
    if cls == "car":
        r = j(0.14)
        return [
            ("car_window", _polygon((j(0.25), 0.12), (j(0.7), 0.12), (0.82, 0.45), (0.15, 0.45))),
            ("car_body", _rect(0.0, j(0.4), 1.0, j(0.78))),
            ("car_wheels", _union(_ellipse(j(0.25), 0.82, r, r), _ellipse(j(0.75), 0.82, r, r))),
        ]
    raise ValueError(f"unknown class {cls!r}")


def _frac(v: np.ndarray) -> np.ndarray:
    return v - np.floor(v)  # numpy's float `%` is several times slower


def _lerp(c1: np.ndarray, c2: np.ndarray, w: np.ndarray) -> np.ndarray:
    return c1 + w[..., None] * (c2 - c1)


def _texture(
    kind: str, x: np.ndarray, y: np.ndarray, colours: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Two-colour pattern over the part's pixels; the pattern family is what identifies a part."""
    period = rng.uniform(4, 8)
    centre = (x.mean(), y.mean())  # sums of half-integer pixel centres are exact, hence order-independent
    if kind == "stripes_h":
        t = _frac(y / period) < 0.5
    elif kind == "stripes_v":
        t = _frac(x / period) < 0.5
    elif kind == "stripes_d":
        t = _frac((x + y) / period) < 0.5
    elif kind == "checker":
        t = (np.floor(x / period) + np.floor(y / period)) % 2 == 0
    elif kind == "dots":
        t = (_frac(x / period) - 0.5) ** 2 + (_frac(y / period) - 0.5) ** 2 < 0.09
    elif kind == "grid":
        t = (_frac(x / period) < 0.75) & (_frac(y / period) < 0.75)
    elif kind == "rings":
        t = _frac(np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / period) < 0.5
    elif kind == "noise":
        t = rng.random(x.shape) < 0.75  # speckle of the darker colour on a solid base
    else:
        raise ValueError(f"unknown texture {kind!r}")
    return colours[(~t).astype(np.intp)]


def _part_colours(hue: float, rng: np.random.Generator) -> np.ndarray:
    """Base colour jittered around the part's hue, plus a darker partner for the pattern."""
    h = (hue + rng.uniform(-0.05, 0.05)) % 1.0
    c1 = 255.0 * np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.5, 0.9), rng.uniform(0.7, 1.0)))
    return np.stack([c1, c1 * rng.uniform(0.3, 0.55)])


def _background(x: np.ndarray, y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random-colour background, strong enough that the mean image colour says little about the class."""
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    kind = rng.integers(4)
    if kind == 0:  # smooth noise: bilinear upsampling of a coarse random grid
        n = int(rng.integers(3, 8))
        grid = rng.uniform(0, 1, (n + 1, n + 1))
        g = (np.arange(size) + 0.5) / size * n  # separable: interpolate along x, then along y
        i = g.astype(int)
        f = g - i
        rows = grid[:, i] * (1 - f) + grid[:, i + 1] * f
        return _lerp(c1, c2, rows[i] * (1 - f[:, None]) + rows[i + 1] * f[:, None])
    d = rng.uniform(-1, 1, 2) + 1e-3  # direction via sqrt only: no platform-dependent trig
    d /= np.sqrt(d[0] ** 2 + d[1] ** 2)
    proj = x * d[0] + y * d[1]
    if kind == 1:  # linear gradient across the image
        return _lerp(c1, c2, (proj - proj.min()) / (proj.max() - proj.min()))
    period = rng.uniform(6, 24)
    if kind == 2:
        t = _frac(proj / period) < 0.5
    else:
        t = (np.floor(x / period) + np.floor(y / period)) % 2 == 0
    return np.stack([c1, c2])[(~t).astype(np.intp)]


def _rasterise(label: int, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Part mask of one object; re-samples the layout until every part keeps visible pixels."""
    size = x.shape[0]
    for _ in range(_MAX_LAYOUT_TRIES):
        side = rng.uniform(0.25, 0.8) * size
        aspect = rng.uniform(0.85, 1.15, 2)
        sx, sy = side * aspect / aspect.max()  # longer side of the object box is exactly `side`
        ox, oy = rng.uniform(0, size - sx), rng.uniform(0, size - sy)
        u, v = (x - ox) / sx, (y - oy) / sy
        u = 1.0 - u if rng.random() < 0.5 else u  # mirror so objects are not always left-right identical
        mask = np.zeros((size, size), np.uint8)
        parts = _layout(CLASSES[label], rng)
        for name, shape in parts:
            mask[shape(u, v) & (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)] = PARTS.index(name) + 1
        if all((mask == PARTS.index(name) + 1).sum() >= MIN_PART_PIXELS for name, _ in parts):
            return mask
    raise RuntimeError(f"could not lay out a visible {CLASSES[label]} at image_size={size}")


def render_sample(label: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (RGB uint8 image, uint8 part mask) for one object of class `label`."""
    x, y = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    mask = _rasterise(label, x, y, rng)
    img = _background(x, y, size, rng)
    for idx in np.unique(mask[mask > 0]):
        _, kind, hue = _PART_SPECS[PARTS[idx - 1]]
        sel = mask == idx
        img[sel] = _texture(kind, x[sel], y[sel], _part_colours(hue, rng), rng)
    return np.rint(np.clip(img, 0, 255)).astype(np.uint8), mask


def _box(obj: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(obj)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def part_keypoints(mask: np.ndarray) -> list[list[float]]:
    """One keypoint per visible part, [x, y, 1, part index] in pixels (pixel centres): the part's pixel
    nearest its visible pixels' centroid (lowest row, then column, on a tie), so the point lies on the part
    even where another part occludes its middle. mask (H, W) part values (index + 1, 0 background)."""
    out = []
    for value in np.unique(mask[mask > 0]):
        ys, xs = np.nonzero(mask == value)
        d = (xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2
        k = int(np.argmin(d))  # nonzero's order is row-major: the first minimum is the lowest row, column
        out.append([float(xs[k]) + 0.5, float(ys[k]) + 0.5, 1, int(value) - 1])
    return out


def _is_complete(root: Path) -> bool:
    try:
        return "samples" in json.loads((root / "annotations.json").read_text())
    except (OSError, ValueError):
        return False


def _write_all(out: Path, n_train: int, n_test: int, size: int, seed: int) -> None:
    for sub in ("images", "parts", "objects"):
        (out / sub).mkdir(parents=True)
    samples = []
    for i in range(n_train + n_test):
        split, k = ("train", i) if i < n_train else ("test", i - n_train)
        label = k % len(CLASSES)  # interleaved so any prefix of a split is class-balanced
        img, mask = render_sample(label, size, np.random.default_rng([seed, i]))
        names = {sub: f"{sub}/{i:05d}.png" for sub in ("images", "parts", "objects")}
        for sub, arr in (("images", img), ("parts", mask), ("objects", (mask > 0).astype(np.uint8) * 255)):
            Image.fromarray(arr).save(out / names[sub], format="PNG", compress_level=1)
        files = {"file": names["images"], "parts": names["parts"], "objects": names["objects"]}
        samples.append(
            files | {"split": split, "label": label, "box": _box(mask > 0), "keypoints": part_keypoints(mask)}
        )
    meta = {"generator_version": GENERATOR_VERSION, "seed": seed, "image_size": size}
    meta |= {"classes": list(CLASSES), "parts": list(PARTS), "part_of": PART_OF, "samples": samples}
    (out / "annotations.json").write_text(json.dumps(meta, indent=1))  # last: marks completeness


def _remove_dead_leftovers(root: Path) -> None:
    """Remove `<root>.tmp-<pid>` folders of generators that were killed (their process is gone); the
    folders of live generators are left alone."""
    removed = 0
    for tmp in root.parent.glob(f"{root.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
        except PermissionError:
            pass  # alive, another user's
    if removed:
        log.warning("removed %d folder(s) left by an interrupted generation of %s", removed, root.name)


def generate(
    root: Path, *, per_class_train: int = 40, per_class_test: int = 20, image_size: int = 160, seed: int = 0
) -> Path:
    """Write the dataset under `root` and return `root`.

    Built in a sibling tmp dir and renamed into place, so `root` is either absent or complete; an
    existing complete `root` is returned untouched (its parameters are not re-checked).
    """
    root = Path(root)
    if _is_complete(root):
        return root
    _remove_dead_leftovers(root)
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # our own pid's leftover (a reused pid)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        n = len(CLASSES)
        _write_all(tmp, per_class_train * n, per_class_test * n, image_size, seed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if root.exists() and not _is_complete(root):  # a partial leftover from an interrupted run
        shutil.rmtree(root)
    try:
        os.replace(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_complete(root):  # otherwise a concurrent generator won the race: use its output
            raise
    return root
