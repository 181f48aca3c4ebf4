"""Where probebench keeps things. One root, overridable by environment, so tests and users can redirect it."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from probebench.errors import UserError

_SAFE = re.compile(r"^[a-z0-9][a-z0-9_\-.]*$")
# Names become parts of file names (`runs/<encoder>__<dataset>__<task>__<suffixes>.json`, cache folders,
# view names such as `<dataset>.crops-keypoints-<hash>`): three names of this length, their suffixes and
# separators stay under the 255 bytes most file systems allow for one component.
MAX_NAME = 64
MAX_COMPONENT = 255


def home() -> Path:
    """`$PROBEBENCH_HOME`, else `$XDG_CACHE_HOME/probebench`, else `~/.cache/probebench`."""
    if env := os.environ.get("PROBEBENCH_HOME"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "probebench"


def features_dir() -> Path:
    return home() / "features"


def data_cache_dir() -> Path:
    return home() / "data"


def data_root(explicit: Path | None = None) -> Path | None:
    """The base folder of datasets: `--data-root`, else `$PROBEBENCH_DATA`, else None (asked only here)."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("PROBEBENCH_DATA")
    return Path(env) if env else None


def user_file(explicit: Path | None, default_name: str, what: str, flag: str) -> Path | None:
    """A user config: the file given with `flag` (which must exist), else `./<default_name>` when present."""
    if explicit is not None:
        if Path(explicit).exists() and not Path(explicit).is_file():
            raise UserError(f"{what} {explicit} is not a regular file; pass a YAML file to {flag}")
        if not Path(explicit).is_file():
            raise UserError(f"{what} {explicit} not found; pass an existing file to {flag}")
        return Path(explicit)
    local = Path(default_name)
    return local if local.is_file() else None


def results_dir() -> Path:
    """`$PROBEBENCH_RESULTS`, else `./results` (records under runs/, the leaderboard beside them)."""
    return Path(os.environ.get("PROBEBENCH_RESULTS", "results"))


def safe_name(name: str, what: str, limit: int = MAX_COMPONENT - 10) -> str:
    """Names that become path components must not escape their folder, and must fit the file system with
    the suffixes added to them (`limit` characters)."""
    if not _SAFE.match(name) or ".." in name:
        raise UserError(f"{what} {name!r} is not a valid name: use lowercase letters, digits, '_', '-', '.'")
    if len(name) > limit:
        raise UserError(f"{what} {name[:40]!r}... has {len(name)} characters; give one of at most {limit}")
    return name


def slug(name: str, what: str = "encoder") -> str:
    """A name as a path component. Registry names are already safe and are used as they are; a model named
    directly (`timm:vit_small_patch16_dinov3.lvd1689m`, `hf:facebook/dinov2-small@main`) becomes lowercase
    letters, digits and '-' plus a short hash of the exact name, so ':', '/', '@' and capitals never reach
    the file system and two names that differ only there never share a file."""
    if _SAFE.match(name) and ".." not in name:
        return safe_name(name, what)
    readable = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48]
    return safe_name(f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:8]}", what)


def fits_component(name: str, what: str) -> str:
    """A file name made of several names must fit one path component (255 bytes on most file systems)."""
    if len(name.encode()) > MAX_COMPONENT:
        raise UserError(
            f"{what} {name[:60]!r}... would be {len(name.encode())} bytes long, more than a file name may "
            f"be ({MAX_COMPONENT}); give the encoder, dataset or task a shorter name"
        )
    return name


def writable_dir(path: Path, what: str, fix: str) -> Path:
    """`path` as a folder this process can write in (created when missing), checked before any work starts
    so that a finished extraction or probe is never lost to a folder it cannot be saved in."""
    path = Path(path)
    blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{what} {path}: {blocker} is a file, not a folder; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UserError(f"{what} {path} is not writable ({exc.strerror or exc}); {fix}") from None
    return path


def check_writable(results_root: Path | None = None) -> None:
    """The results folder and the feature cache, before a run's work starts."""
    fix = (
        "pass --results a writable folder"
        if results_root is not None
        else "set PROBEBENCH_RESULTS to a writable folder or run from one"
    )
    writable_dir((results_root or results_dir()) / "runs", "results folder", fix)
    home_fix = (
        "point PROBEBENCH_HOME at a writable folder"
        if os.environ.get("PROBEBENCH_HOME")
        else "set PROBEBENCH_HOME to a writable folder"
    )
    writable_dir(features_dir(), "feature cache", home_fix)
