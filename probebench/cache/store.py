"""The feature cache: features of one (encoder, dataset, extraction settings) in checksummed shards.

Layout: `features/<encoder>/<dataset>/<key16>/` with `key.json` (everything the key was made from),
`manifest.json` (shards done, with each file's size and sha256) and one `.npy` file per array per shard,
e.g. `cls.L11.00003.npy`. Shards are rows [i * shard_size, (i + 1) * shard_size) of the dataset.

Per-image arrays (`cls.L*` (n, P, C), `pooled.L*` (n, C), `projection`) have one row per image. Token arrays
(`patches.L*`, `keys`) are ragged: grids differ from image to image in `native` geometry, so a shard stores
every image's tokens one after another, (sum of h_i * w_i, C), never padded to the largest grid;
`grids.<shard>.npy` (n, A, 2) holds each image's (h, w) per token array (in the manifest's `token_arrays`
order, with each array's cell size in input pixels in `token_strides`) and `geometry.<shard>.npy` (n, 11) how
each image became the input (`probebench.geometry.Geometry`).

Why this shape:
- every write is a temporary file then `os.replace`, and the manifest is rewritten only after a shard's
  files are in place, so a killed extraction leaves complete shards and resumes at the first missing one;
- `.npy` memory-maps with `np.load(mmap_mode="r")`, so probes never need all features in RAM;
- checking a warm cache only stats files (cheap); the sha256 is checked when a shard is actually read, so a
  corrupted shard is caught before a probe uses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from probebench.cache.manifest import check_entry, check_files
from probebench.encoders.facts import EncoderFacts
from probebench.io import atomic_write, read_json
from probebench.paths import features_dir, safe_name, slug

log = logging.getLogger(__name__)

# Bump when extraction changes what a cached array holds (an adapter's layer meaning, pooling, dtypes).
# 2: ragged token arrays with per-image geometry; 3: geometry keeps each grid's cell; 4: deep greyscale
# images scaled to 8 bits (were clipped to white), images over --max-pixels skipped (were decoded up to 2x);
# 5: channels-last forward (CNN features move in the 5th significant digit); 6: keys and class attention are
# what the last block hands its attention kernel (RoPE and relative position bias applied; plain ViTs' class
# attention moves by float rounding), the encoder's facts name its prefix tokens and class token, and
# OpenAI's CLIP weights run the QuickGELU they were trained with (open_clip built them with GELU)
EXTRACTOR_VERSION = "6"
MAX_MANIFEST_BYTES = 512 * 2**20  # a manifest lists every shard: a few MB for ImageNet


def array_name(kind: str, layer: int) -> str:
    """The cached array of a per-layer token kind (`cls`, `pooled`, `patches`) at an absolute block:
    `<kind>.L<layer>`."""
    return f"{kind}.L{layer}"


def is_token_array(name: str) -> bool:
    """Arrays stored ragged, one grid of tokens per image."""
    return name.startswith("patches.") or name in ("keys", "attention")


class CorruptShard(Exception):
    """A shard file whose size or checksum does not match the manifest."""

    def __init__(self, store: FeatureStore, shard: int, reason: str) -> None:
        super().__init__(f"shard {shard} of {store.root} is corrupt ({reason})")
        self.shard = shard
        self.store_root = store.root


def cache_key(parts: dict) -> str:
    """sha256 of the canonical JSON of everything that changes the features (`parts` carries the extractor
    version, so that key.json, and with it every record's feature identity, changes when it does)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


class FeatureStore:
    """One cache entry. Create with `FeatureStore.open(encoder, dataset, key, key_parts, n, shard_size)`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._verified: set[str] = set()
        self.damaged: str | None = None  # why the entry cannot be read (listed as such, removable, redone)
        try:
            self.manifest = read_json(root / "manifest.json", MAX_MANIFEST_BYTES)
            key = read_json(root / "key.json")
            check_entry(self.manifest, key)
            self._key_parts = {k: v for k, v in key.items() if k != "key"}
        except ValueError as exc:  # BadFile is a ValueError
            self.damaged = str(exc)
            # Nothing in a damaged entry is trusted: it reads as empty and incomplete.
            self.manifest = {"key": None, "n": 1, "shard_size": 1, "shards": {}, "skipped": []}
            self._key_parts = {}

    # -- creation and state ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls, encoder: str, dataset: str, key: str, key_parts: dict, n: int, shard_size: int
    ) -> FeatureStore:
        root = features_dir() / slug(encoder) / safe_name(dataset, "dataset") / key[:16]
        root.mkdir(parents=True, exist_ok=True)
        if (root / "manifest.json").exists() and (damaged := cls(root).damaged):
            log.warning("cache entry %s is damaged (%s); recomputing it", root, damaged)
            for f in root.iterdir():  # its shards cannot be checked without the manifest's checksums
                f.unlink() if f.is_file() else shutil.rmtree(f)
        if not (root / "manifest.json").exists():
            atomic_write(
                root / "key.json", json.dumps({"key": key, **key_parts}, indent=1, default=str).encode()
            )
            manifest = {"key": key, "n": n, "shard_size": shard_size, "shards": {}, "skipped": []}
            atomic_write(root / "manifest.json", json.dumps(manifest).encode())
        return cls(root)

    # -- what the entry is ---------------------------------------------------------------------------------
    @property
    def key(self) -> str | None:
        """The cache key (None for a damaged entry)."""
        return self.manifest["key"]

    @property
    def key_parts(self) -> dict:
        """Everything the key was made from (`key.json` less the key): encoder entry, weights identity,
        preprocessing, layers and tokens as requested, norm, dtypes, geometry, dataset fingerprint."""
        return dict(self._key_parts)

    @property
    def feature_identity(self) -> str:
        """What the features are, whichever entry holds them: the key's parts less the token kinds and layers
        held (a wider entry holds the same features for the layers asked). Records hash it."""
        same = {k: v for k, v in self._key_parts.items() if k not in ("tokens", "layers")}
        return hashlib.sha256(json.dumps(same, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def started(self) -> bool:
        """Whether an extraction has filled in the facts known once the model is built."""
        return "encoder" in self.manifest

    @property
    def encoder_facts(self) -> EncoderFacts | None:
        """The encoder's facts as extraction found them (`Encoder.describe`: blocks, patch size, prefix
        tokens, pooling, ...); None before the first extraction into the entry."""
        return EncoderFacts.from_manifest(self.manifest["encoder"]) if self.started else None

    @property
    def layers(self) -> list[int]:
        """The absolute blocks the entry holds (known once an extraction has started)."""
        return list(self.manifest["layers"])

    @property
    def token_arrays(self) -> list[str]:
        """The ragged token arrays the entry holds, in the order of `grids.<shard>.npy`'s columns."""
        return list(self.manifest.get("token_arrays", []))

    @property
    def skipped(self) -> list[str]:
        """Files the extraction could not read (left out of every probe)."""
        return list(self.manifest.get("skipped", []))

    @property
    def has_shards(self) -> bool:
        return bool(self.manifest["shards"])

    @property
    def n(self) -> int:
        return int(self.manifest["n"])

    @property
    def shard_size(self) -> int:
        return int(self.manifest["shard_size"])

    @property
    def num_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def shard_rows(self, shard: int) -> range:
        return range(shard * self.shard_size, min(self.n, (shard + 1) * self.shard_size))

    def missing_shards(self) -> list[int]:
        """Shards not in the manifest or whose files are absent or of the wrong size (truncated)."""
        missing = []
        for i in range(self.num_shards):
            info = self.manifest["shards"].get(str(i))
            if info is None or any(
                not (self.root / f).is_file() or (self.root / f).stat().st_size != meta["bytes"]
                for f, meta in info["files"].items()
            ):
                missing.append(i)
        return missing

    @property
    def complete(self) -> bool:
        return self.damaged is None and not self.missing_shards()

    def arrays(self) -> list[str]:
        first = self.manifest["shards"].get("0")
        return sorted({f.rsplit(".", 2)[0] for f in first["files"]}) if first else []

    # -- writing -----------------------------------------------------------------------------------------
    def write_shard(
        self, shard: int, arrays: dict[str, np.ndarray], skipped: list[str] = (), publish: bool = True
    ) -> None:
        """Write a shard's files, then list it in the manifest. `publish=False` (a rank of a multi-process
        extraction) leaves a sidecar note `shard-<i>.json` instead: rank 0 lists it once every rank is
        done (`adopt_sidecars`), so a half-finished entry never reads as complete."""
        files = {}
        for name, arr in arrays.items():
            data = _npy_bytes(arr)
            fname = f"{name}.{shard:05d}.npy"
            atomic_write(self.root / fname, data)
            files[fname] = {
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "shape": list(arr.shape),
                "dtype": str(arr.dtype),
            }
        if not publish:
            note = {"files": files, "skipped": list(skipped)}
            atomic_write(self.root / f"shard-{shard:05d}.json", json.dumps(note).encode())
            return
        self._list(shard, files, skipped)
        atomic_write(self.root / "manifest.json", json.dumps(self.manifest).encode())

    def _list(self, shard: int, files: dict, skipped: list[str]) -> None:
        self.manifest["shards"][str(shard)] = {"files": files}
        self.manifest["skipped"] = sorted(set(self.manifest.get("skipped", [])) | set(skipped))

    def adopt_sidecars(self) -> int:
        """List in the manifest every shard a rank left a sidecar note for, when its files are all there
        at their size. A note is written after its shard's files (each written whole, by rename), so a
        rank that died mid-shard left no note; a file damaged later is caught by its checksum on read.
        Returns how many it listed. Every note is removed: one that could not be listed is redone."""
        notes = sorted(self.root.glob("shard-*.json"))
        adopted = 0
        for path in notes:
            try:
                note = read_json(path)
                shard = int(path.stem.split("-")[1])
                files = note["files"]
                check_files(files)
            except (ValueError, KeyError, IndexError, TypeError):  # BadFile is a ValueError
                continue  # unreadable: never listed (its shard is extracted again)
            whole = all(
                (self.root / f).is_file() and (self.root / f).stat().st_size == meta["bytes"]
                for f, meta in files.items()
            )
            if whole and 0 <= shard < self.num_shards:
                self._list(shard, files, note.get("skipped", []))
                adopted += 1
        if adopted:
            atomic_write(self.root / "manifest.json", json.dumps(self.manifest).encode())
        for path in notes:
            path.unlink(missing_ok=True)
        return adopted

    def set_meta(self, persist: bool = True, **meta) -> None:
        """Facts known only once the model is built (absolute layers, encoder description); a rank other
        than 0 keeps them in memory only, since rank 0 alone writes the manifest."""
        self.manifest.update(meta)
        if persist:
            atomic_write(self.root / "manifest.json", json.dumps(self.manifest).encode())

    def invalidate(self, shard: int) -> None:
        """Forget a shard (after corruption) so the next extraction recomputes it."""
        self.manifest["shards"].pop(str(shard), None)
        atomic_write(self.root / "manifest.json", json.dumps(self.manifest).encode())

    # -- reading -----------------------------------------------------------------------------------------
    def _shard_array(self, name: str, shard: int, verify: bool) -> np.ndarray:
        fname = f"{name}.{shard:05d}.npy"
        info = self.manifest["shards"].get(str(shard))
        if info is None or fname not in info["files"]:
            raise KeyError(f"{self.root} has no array {name!r} (has {self.arrays()})")
        path, meta = self.root / fname, info["files"][fname]
        if not path.is_file() or path.stat().st_size != meta["bytes"]:
            raise CorruptShard(self, shard, f"{fname} is missing or truncated")
        if verify and fname not in self._verified:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != meta["sha256"]:
                raise CorruptShard(self, shard, f"{fname} fails its sha256 check")
            self._verified.add(fname)
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise CorruptShard(self, shard, f"{fname} is not a valid .npy file: {exc}") from None

    def iter_shards(self, name: str, verify: bool = True) -> Iterator[np.ndarray]:
        """Memory-mapped arrays of one name, shard by shard, rows in dataset order."""
        for shard in range(self.num_shards):
            yield self._shard_array(name, shard, verify)

    def load(self, name: str, rows: list[int] | np.ndarray | None = None, verify: bool = True) -> np.ndarray:
        """The array `name` for `rows` (all when None), gathered from the memory-mapped shards."""
        if rows is None:
            return np.concatenate([np.asarray(a) for a in self.iter_shards(name, verify)])
        rows = np.asarray(rows)
        shard_of = rows // self.shard_size
        parts = []
        for shard in np.unique(shard_of):
            arr = self._shard_array(name, int(shard), verify)
            parts.append(
                (np.nonzero(shard_of == shard)[0], arr[rows[shard_of == shard] - shard * self.shard_size])
            )
        out = np.empty((len(rows), *parts[0][1].shape[1:]), dtype=parts[0][1].dtype)
        for where, values in parts:
            out[where] = values
        return out

    # -- token grids ---------------------------------------------------------------------------------------
    def _grid_column(self, name: str) -> int:
        """Where token array `name`'s (h, w) sits in the `grids` arrays."""
        order = self.manifest.get("token_arrays", [])
        if name not in order:
            raise KeyError(f"{self.root} has no token array {name!r} (has {order})")
        return order.index(name)

    def _grid_slices(self, name: str, shard: int) -> tuple[np.ndarray, np.ndarray]:
        """(h, w) per row (n, 2) of token array `name` in `shard`, and each row's first token (n + 1,)."""
        hw = np.asarray(self._shard_array("grids", shard, True)[:, self._grid_column(name)], dtype=np.int64)
        return hw, np.concatenate([[0], np.cumsum(hw[:, 0] * hw[:, 1])])

    def load_grids(self, name: str, rows: np.ndarray | list[int]) -> list[np.ndarray]:
        """Token array `name` of `rows` as one (h, w, C) grid per row (memory-mapped views)."""
        out, cached = [], {}
        for row in np.asarray(rows, dtype=np.int64):
            shard, local = divmod(int(row), self.shard_size)
            if shard not in cached:
                cached[shard] = (*self._grid_slices(name, shard), self._shard_array(name, shard, True))
            hw, start, arr = cached[shard]
            out.append(arr[start[local] : start[local + 1]].reshape(hw[local, 0], hw[local, 1], -1))
        return out

    def load_tokens(self, name: str, rows: np.ndarray | list[int]) -> np.ndarray:
        """Token array `name` of `rows` stacked (n, h * w, C); the rows asked must share one grid size (always
        true in `resize` geometry). A shard whose grids are all equal is read in one gather."""
        rows = np.asarray(rows, dtype=np.int64)
        shard_of = rows // self.shard_size
        parts = []
        for shard in np.unique(shard_of):
            hw, start = self._grid_slices(name, int(shard))
            arr = self._shard_array(name, int(shard), True)
            local = rows[shard_of == shard] - shard * self.shard_size
            if (hw[local] != hw[local[0]]).any():
                raise ValueError(
                    f"{name}: the rows asked have grids of different sizes; read them with load_grids"
                )
            if (hw == hw[0]).all():  # the whole shard is one size: one gather
                values = arr.reshape(len(hw), -1, arr.shape[-1])[local]
            else:
                values = np.stack([arr[start[i] : start[i + 1]] for i in local])
            parts.append((np.nonzero(shard_of == shard)[0], values))
        sizes = {p[1].shape[1:] for p in parts}
        if len(sizes) > 1:
            raise ValueError(
                f"{name}: the rows asked have grids of different sizes; read them with load_grids"
            )
        out = np.empty((len(rows), *parts[0][1].shape[1:]), dtype=parts[0][1].dtype)
        for where, values in parts:
            out[where] = values
        return out

    def width(self, name: str) -> int:
        """Channels C of array `name` (the last axis), from the manifest: no file is read."""
        info = self.manifest["shards"].get("0", {}).get("files", {}).get(f"{name}.00000.npy")
        if info is None:
            raise KeyError(f"{self.root} has no array {name!r} (has {self.arrays()})")
        return int(info["shape"][-1])

    def load_geometry(self, rows: np.ndarray | list[int], name: str | None = None) -> list:
        """How each of `rows` became the encoder's input (`Geometry`), with the grid of token array `name`
        (default: the framing's own grid, at the encoder's patch size or total stride)."""
        from probebench.geometry import Geometry

        rows = np.asarray(rows, dtype=np.int64)
        geo = self.load("geometry", rows)
        out = [Geometry.from_row(g) for g in geo]
        if name is not None:
            cell = int(self.manifest["token_strides"][name])
            out = [
                g.with_grid(int(h), int(w), cell)
                for g, (h, w) in zip(out, self.load("grids", rows)[:, self._grid_column(name)], strict=True)
            ]
        return out

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.iterdir() if f.is_file())
