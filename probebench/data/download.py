"""Dataset downloads that survive bad networks: resume, verify, unpack atomically.

torchvision's `download_and_extract_archive` checks an md5 but neither resumes a partial file nor
extracts atomically; both matter for multi-GB archives. Here a download goes to `<file>.part`, resumes with an
HTTP Range request, is verified against its pinned checksum, and only then renamed. Extraction goes into a
temporary sibling folder that is renamed into place, so a dataset folder is either complete or absent. Archive
members that would land outside the target (absolute paths, `..`) are refused.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from probebench.errors import UserError

CHUNK = 1 << 20


def checksum(path: Path, spec: str) -> bool:
    """spec: 'md5:<hex>' or 'sha256:<hex>'."""
    algo, _, expected = spec.partition(":")
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest() == expected.lower()


def fetch(url: str, dest: Path, spec: str, *, progress: bool | None = None, timeout: float = 60) -> Path:
    """Download `url` to `dest`, resuming `dest.part`; verify `spec`; return `dest`."""
    if dest.is_file() and checksum(dest, spec):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            if have and resp.status != 206:  # the server ignored the range: start over
                have = 0
            total = resp.headers.get("Content-Length")
            total = int(total) + have if total is not None else None
            with (
                open(part, "ab" if have else "wb") as f,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=None if progress is None else not progress,
                ) as bar,
            ):
                while block := resp.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise UserError(
            f"download of {url} stopped ({exc}); {part.stat().st_size if part.exists() else 0} bytes "
            "are kept: run the same command again to resume"
        ) from None
    if total is not None and part.stat().st_size < total:
        raise UserError(
            f"download of {url} ended early ({part.stat().st_size} of {total} bytes); run the same "
            "command again to resume"
        )
    if not checksum(part, spec):
        part.unlink()
        raise UserError(
            f"download of {url} does not match its checksum {spec}; the file was deleted, run the "
            "command again (if it repeats, the server's file has changed)"
        )
    os.replace(part, dest)
    return dest


def _safe_members(names: list[str], target: Path) -> None:
    root = target.resolve()
    for name in names:
        if os.path.isabs(name) or not (root / name).resolve().is_relative_to(root):
            raise UserError(f"archive member {name!r} would be written outside {target}; refusing to unpack")


def unpack_archive(archive: Path, target: Path) -> Path:
    """Extract `archive` so that `target` appears complete or not at all."""
    if target.exists():
        return target
    tmp = target.with_name(f".{target.name}.extracting-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                _safe_members(z.namelist(), tmp)
                z.extractall(tmp)
        else:
            with tarfile.open(archive) as t:
                _safe_members(t.getnames(), tmp)
                t.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
