"""Files probebench writes and reads back: written whole or not at all, read as untrusted input.

Every record, table, job note and cache file is written by `atomic_write` (a temporary file renamed over the
target), with the permissions any other file the process creates would get: the process's umask applies, so
a results folder shared by a group stays readable to it. Every JSON file probebench reads back (records, job
notes, cache manifests) goes through `read_json`: a regular file (not a symlink, FIFO or folder), bounded in
size and nesting, and a failure is one `BadFile` naming the file and what is wrong with it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from probebench.errors import UserError

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
MAX_JSON_BYTES = 64 * 2**20  # records and notes are kB; a manifest of a million images is a few MB
MAX_JSON_DEPTH = 64  # far deeper than any file probebench writes


def current_umask() -> int:
    """The process's umask, read without changing it (Linux's /proc), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`: a reader sees the old
    file or the new one, never part of one, whenever the writer dies. The file gets mode 0666 less the
    umask, as `open()` would give it (mkstemp's own 0600 would hide a shared results folder from its group).
    A full disk is one line (the temporary file removed, so nothing partial looks valid); earlier files stay
    as they were."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise disk_error(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise disk_error(exc, path) from None
        raise


def disk_error(exc: OSError, path: Path) -> Exception:
    """A write failure as one line where the user can act on it (full disk, no permission), else as is."""
    if exc.errno in _FULL:
        return UserError(
            f"cannot write {path}: {exc.strerror or 'the disk is full'}; free space there (or point "
            "PROBEBENCH_HOME / PROBEBENCH_RESULTS elsewhere) and re-run: finished work is kept"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"cannot write {path}: {exc.strerror}; make the folder writable and re-run")
    return exc


class BadFile(ValueError):
    """A file probebench reads back that is not what it wrote: the message says which and why, in a few
    words (the caller names what the file was for)."""


def read_bytes(path: Path, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """A regular file's bytes, at most `max_bytes`. A symlink is refused: files probebench wrote are never
    links, and a link could point anywhere the user can read."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise BadFile(f"{path}: {exc.strerror or 'cannot be read'}") from None
    if stat.S_ISLNK(st.st_mode):
        raise BadFile(f"{path}: a symbolic link, not a file probebench wrote")
    if not stat.S_ISREG(st.st_mode):
        raise BadFile(f"{path}: not a regular file")
    if st.st_size > max_bytes:
        raise BadFile(f"{path}: {st.st_size} bytes, more than the {max_bytes} such a file can hold")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise BadFile(f"{path}: {exc.strerror or 'cannot be read'}") from None
    if len(data) > max_bytes:
        raise BadFile(f"{path}: more than the {max_bytes} bytes such a file can hold")
    return data


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping as soon as it passes `limit` (iterative: no recursion)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
    return deepest


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON file probebench wrote, read back as untrusted input: `read_bytes`'s checks, UTF-8, standard
    JSON only (NaN and Infinity are not JSON) and at most `max_depth` deep. Raises `BadFile`."""
    data = read_bytes(path, max_bytes)
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=no_constant)
    except UnicodeDecodeError:
        raise BadFile(f"{path}: not UTF-8 text") from None
    except RecursionError:
        raise BadFile(f"{path}: nested more than {max_depth} levels deep") from None
    except ValueError as exc:  # JSONDecodeError, and the constants refused below
        raise BadFile(f"{path}: not valid JSON ({str(exc).split(':')[0]})") from None
    if _depth(value, max_depth) > max_depth:
        raise BadFile(f"{path}: nested more than {max_depth} levels deep")
    return value


def no_constant(name: str) -> Any:
    """`json.loads`'s parse_constant: NaN and Infinity are refused (they are not JSON)."""
    raise ValueError(f"{name} is not a JSON value")
