"""Files from the Hugging Face hub cache and the web, and the one line a user reads when they are absent:
offline, a model is loaded from the cache as a user loads it with `HF_HUB_OFFLINE=1`, and a missing file names
where it was looked for and how to put it there."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from probebench.encoders.registry import EncoderEntry
from probebench.encoders.weights import sha256_file
from probebench.errors import UserError, WeightsUnavailable
from probebench.io import BadFile, read_json

HF_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)


def hf_cached(repo: str, filenames: tuple[str, ...], revision: str | None = None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        hit = try_to_load_from_cache(repo, name, revision=revision)
        if isinstance(hit, str):
            return Path(hit)
    return None


def blob_id(path: Path) -> str:
    """The hub cache names LFS blobs by their sha256: reuse it rather than re-hashing hundreds of MB."""
    real = Path(os.path.realpath(path))
    return (
        real.name
        if len(real.name) == 64 and all(c in "0123456789abcdef" for c in real.name)
        else sha256_file(real)
    )


def missing_hub(entry: EncoderEntry, repo: str, files: tuple[str, ...]) -> WeightsUnavailable:
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub"
    )
    return WeightsUnavailable(
        f"encoder {entry.name!r}: {repo}/{' or '.join(files)} is not in the Hugging Face cache ({cache}) and "
        "the hub cannot be reached; run once with network access, or copy the cache folder "
        f"models--{repo.replace('/', '--')} there"
    )


def hub_json(entry: EncoderEntry, path: Path) -> dict:
    """A JSON file of the hub cache, read as untrusted input: anything but a JSON object is one line."""
    try:
        value = read_json(path)
    except BadFile as exc:
        value = exc
    if not isinstance(value, dict):
        raise UserError(
            f"encoder {entry.name!r}: {path} is not a JSON object ({value}); delete it from the cache so "
            "that it is downloaded again"
        )
    return value


def download_weights(entry: EncoderEntry, url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)  # writes a temp file, then renames
    except Exception as exc:  # noqa: BLE001 - urllib raises many types; all mean "could not download"
        raise WeightsUnavailable(
            f"encoder {entry.name!r}: cannot download {url} ({type(exc).__name__}); "
            "download it elsewhere and "
            f"put it at {path}, or pass --weights PATH"
        ) from None


def hub_repo(entry: EncoderEntry) -> str:
    """The hub repository a hub source's weights come from (timm's `timm/<name>` for timm models)."""
    src = entry.source
    if src.kind == "transformers":
        return src.repo
    if src.kind == "timm":
        import timm.models

        return timm.models.get_pretrained_cfg(src.model).hf_hub_id or src.model
    import open_clip

    return (
        (open_clip.get_pretrained_cfg(src.model, src.pretrained) or {}).get("hf_hub", src.model).rstrip("/")
    )


def hub_call(entry: EncoderEntry, fn):
    """Run a library's loader; turn 'not cached and offline', and cached weights that do not fit the
    architecture, into one actionable line."""
    try:
        return fn()
    except (OSError, RuntimeError, ValueError) as exc:
        text = str(exc).lower()
        if "error(s) in loading state_dict" in text or "size mismatch" in text:
            detail = " ".join(str(exc).split())[:160]
            folder = f"models--{hub_repo(entry).replace('/', '--')}"
            raise UserError(
                f"encoder {entry.name!r}: the cached weights do not fit its architecture ({detail}...); "
                f"delete the model's folder ({folder}) from the Hugging Face cache so that it is downloaded "
                "again"
            ) from None
        if any(s in text for s in ("offline", "connect", "cache", "resolve", "not found", "does not appear")):
            raise WeightsUnavailable(
                f"encoder {entry.name!r}: weights are not cached and the hub cannot be reached "
                f"({type(exc).__name__}); run once with network access or copy the files into the cache"
            ) from None
        raise
