"""Image sizes from file headers, read once per version of a dataset's files.

Checking every annotation against its image needs every image's size, and a header read costs 0.1 to 0.3 ms:
seconds for COCO's 118k images, on every run. The sizes are cached under the probebench home, keyed by each
file's path, size and modification time (a changed file is read again), as one `.npy` array per set of files.
A cache file is untrusted input: one of the wrong shape or type is read again, never believed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
from pathlib import Path

import numpy as np

from probebench.errors import UserError
from probebench.io import atomic_write
from probebench.paths import home

log = logging.getLogger(__name__)

SIZES_VERSION = "1"
# EXIF orientations 5 to 8 turn the picture a quarter: the loader's image is the file's height wide.
_TURNED = (5, 6, 7, 8)


def header_size(path: Path) -> tuple[int, int, bool]:
    """(width, height, turned) of an image file as the loader reads it (EXIF orientation applied; turned:
    whether that swapped the file's sides); (0, 0, False) for what is not a readable regular file."""
    from probebench.data.loader import open_header  # torch comes with the loader: not at a reader's import

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO named x.jpg would block the open
            return 0, 0, False
        with open_header(path) as im:  # the header only: no pixel limit
            width, height = im.size
            turned = im.getexif().get(0x0112, 1) in _TURNED
    except (OSError, ValueError, SyntaxError):  # not an image, truncated, a broken EXIF block
        return 0, 0, False
    return (height, width, True) if turned else (width, height, False)


def _key(paths: list[Path]) -> str:
    h = hashlib.sha256(SIZES_VERSION.encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(json.dumps([str(p), st.st_size, st.st_mtime_ns]).encode())
        except OSError:
            h.update(json.dumps([str(p), None]).encode())
    return h.hexdigest()


def file_sizes(paths: list[Path]) -> np.ndarray:
    """(N, 3) int64: width, height and 1 where EXIF turned the picture, for each file (0, 0, 0 unreadable)."""
    if not paths:
        return np.zeros((0, 3), dtype=np.int64)
    cache = home() / "sizes" / f"{_key(paths)}.npy"
    if cache.is_file() and not cache.is_symlink():
        try:
            sizes = np.load(cache, allow_pickle=False)
            if sizes.shape == (len(paths), 3) and sizes.dtype == np.int64:
                return sizes
        except (OSError, ValueError):
            pass  # damaged: read the headers again
    sizes = np.array([header_size(p) for p in paths], dtype=np.int64).reshape(-1, 3)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, sizes, allow_pickle=False)
        atomic_write(cache, buf.getvalue())
    except (OSError, UserError) as exc:  # no cache: the next run reads the headers again
        log.debug("image sizes not cached: %s", exc)
    return sizes
