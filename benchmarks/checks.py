"""What checking every annotation against its image costs when a dataset is read (issue 21).

For each real dataset in ../shared/data, side by side in one run: the reader with its checks and a cold size
cache (every image header read), the same with a warm cache (the sizes of this version of the files read
back), and the reader's own parsing with the checks skipped (the old cost). Prints seconds and the ratios.

    .venv/bin/python benchmarks/checks.py
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import tempfile
import time
from pathlib import Path
from unittest import mock

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def readers() -> dict:
    from probebench.data.formats.coco import read_coco
    from probebench.data.formats.cub import read_cub
    from probebench.data.formats.masks import read_mask_folder
    from probebench.data.formats.voc import read_voc

    return {
        "cub10parts (543 photos, 15 keypoints each)": lambda: read_cub(DATA / "cub10parts", "c"),
        "carparts (500 photos, COCO polygons)": lambda: read_coco(DATA / "carparts", "c"),
        "ccp (1,004 photos and label maps)": lambda: read_mask_folder(DATA / "ccp", "c", test_fraction=0.2),
        "fruit (300 photos, VOC boxes)": lambda: read_voc(DATA / "fruit", "f", ("train", "test")),
    }


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@contextlib.contextmanager
def unchecked():
    """The readers with their checks skipped (each reader module holds its own name for them)."""
    with contextlib.ExitStack() as stack:
        for module in ("coco", "cub", "masks", "voc"):
            mod = importlib.import_module(f"probebench.data.formats.{module}")
            stack.enter_context(mock.patch.object(mod, "check_annotations", lambda ds, clip_boxes=False: ds))
        yield


def main() -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores")
    print(f"{'dataset':46s} {'unchecked':>10s} {'cold':>8s} {'warm':>8s}  cold/unchecked  warm/unchecked")
    for name, read in readers().items():
        with tempfile.TemporaryDirectory() as home:
            os.environ["PROBEBENCH_HOME"] = home
            read()  # the page cache warm for every variant alike
            with unchecked():
                bare = min(timed(read) for _ in range(3))
        cold, warm = [], []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as home:
                os.environ["PROBEBENCH_HOME"] = home
                cold.append(timed(read))  # an empty size cache: every header read
                warm.append(timed(read))  # the sizes of these files read back
        print(
            f"{name:46s} {bare:9.2f}s {min(cold):7.2f}s {min(warm):7.2f}s  "
            f"{min(cold) / bare:13.2f}x  {min(warm) / bare:13.2f}x"
        )


if __name__ == "__main__":
    main()
