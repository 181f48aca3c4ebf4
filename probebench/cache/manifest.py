"""What a cache entry's `key.json` and `manifest.json` must hold to be read: both are files probebench reads
back, so a damaged, hand-edited or foreign one is named and the entry rebuilt, never trusted."""

from __future__ import annotations

import re

from pydantic import ValidationError

from probebench.encoders.facts import EncoderFacts


def check_entry(manifest: object, key: object) -> None:
    """A manifest and key file as written by `FeatureStore.open`, else ValueError saying what is wrong."""
    if not isinstance(key, dict) or not isinstance(key.get("key"), str):
        raise ValueError("key.json is damaged (no key)")
    if not isinstance(manifest, dict):
        raise ValueError("manifest.json is damaged (not an object)")
    n, size, shards = manifest.get("n"), manifest.get("shard_size"), manifest.get("shards")
    if manifest.get("key") != key["key"] or not isinstance(shards, dict):
        raise ValueError("manifest.json is damaged (key or shards)")
    if not isinstance(n, int) or n < 0 or not isinstance(size, int) or size < 1:
        raise ValueError("manifest.json is damaged (row or shard counts)")
    for shard in shards.values():
        check_files(shard.get("files") if isinstance(shard, dict) else None)
    if "encoder" in manifest:
        try:
            EncoderFacts.from_manifest(manifest["encoder"] if isinstance(manifest["encoder"], dict) else {})
        except ValidationError:
            raise ValueError("manifest.json is damaged (the encoder's facts)") from None


# A shard file's name: `<array>.<shard>.npy`, nothing that could name a file outside the entry.
_SHARD_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*\.npy$")


def check_files(files: object) -> None:
    """A shard's file table as `write_shard` writes it, else ValueError: plain file names (never a path),
    each with its size and checksum."""
    if not isinstance(files, dict):
        raise ValueError("manifest.json is damaged (a shard without its files)")
    for name, meta in files.items():
        if not isinstance(name, str) or not _SHARD_FILE.match(name) or ".." in name:
            raise ValueError(f"manifest.json is damaged (file name {name!r})")
        if not (
            isinstance(meta, dict)
            and isinstance(meta.get("bytes"), int)
            and isinstance(meta.get("sha256"), str)
            and isinstance(meta.get("shape"), list)
        ):
            raise ValueError(f"manifest.json is damaged (the entry of {name})")
