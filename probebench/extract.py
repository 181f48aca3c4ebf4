"""Frozen feature extraction into the feature cache.

`extract()` computes the cache key from the resolved encoder spec, the dataset fingerprint and the requested
features; if the cache is complete it returns at once without building the model. Otherwise it streams the
rows of the missing shards through a DataLoader (decode and resize in workers), runs the encoder under
`torch.inference_mode` (autocast bf16/fp16 on CUDA, fp32 on CPU), halves the batch on CUDA out-of-memory,
and writes each shard as soon as its rows are done.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from probebench import distributed, progress
from probebench.cache.store import EXTRACTOR_VERSION, FeatureStore, cache_key, is_token_array, list_stores
from probebench.data.base import MAX_PIXELS, ImageDataset
from probebench.data.loader import ImageRows, collate_rows, why_unreadable, worker_init
from probebench.encoders.base import TOKEN_KINDS, Encoder, Features, Preprocess, is_layer
from probebench.encoders.load import Spec, build
from probebench.errors import UserError
from probebench.geometry import GEOMETRY_MODES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """Which features to cache. `layers` may be negative or "all" here; stored as absolute indices.

    geometry: `resize` (the encoder's own preprocessing) or `native` (each image at its own size, longer side
    capped at `max_side` when given, zero-padded to a multiple of the patch size); see `probebench.geometry`.
    """

    layers: tuple[int | str, ...] = (-1,)
    tokens: tuple[str, ...] = ("cls", "pooled")
    norm: bool = True
    patch_dtype: str = "float16"  # patch tokens and keys; cls, pooled, attention and projection stay float32
    geometry: str = "resize"
    max_side: int | None = None
    # `resize` framing: the input size every encoder reads (a task that fixes one, as the papers' suite fixes
    # 224); None: the encoder's own evaluation size
    input_size: int | None = None
    # keys of RoPE models as the block's attention uses them (rotated), or before the rotation
    rotated_keys: bool = True
    # token kinds cached only where the encoder has them (keys and attention for discovery, which falls back
    # to patch tokens on CNNs); the store's `token_arrays` says which were
    optional: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not all(is_layer(x) for x in self.layers):
            raise UserError(f"layers {list(self.layers)}: give block indices, 'all' or scaled ones like 4/12")
        bad = [t for t in (*self.tokens, *self.optional) if t not in TOKEN_KINDS]
        if bad:
            raise UserError(f"unknown token kind(s) {bad}; choose from {', '.join(TOKEN_KINDS)}")
        if self.patch_dtype not in {"float16", "float32", "bfloat16"}:
            raise UserError(f"patch dtype {self.patch_dtype!r}: use float16 or float32")
        if self.geometry not in GEOMETRY_MODES:
            raise UserError(f"geometry {self.geometry!r}: use {' or '.join(GEOMETRY_MODES)}")
        if self.max_side is not None and (self.geometry != "native" or self.max_side < 1):
            raise UserError("max_side caps the longer side in native geometry: give a positive size with it")
        if self.input_size is not None and (self.geometry != "resize" or self.input_size < 1):
            raise UserError("input_size fixes the resize framing's size: give a positive size with it")

    def preprocess(self, own: Preprocess) -> Preprocess:
        """The encoder's preprocessing with the size this request fixes (crop ratio, interpolation, mean and
        std stay the encoder's)."""
        return own if self.input_size is None else replace(own, input_size=self.input_size)


@dataclass
class Options:
    batch_size: int = 64
    num_workers: int | None = None  # None: one fewer than the cores, at most 8
    device: str | None = None  # None: cuda when available
    shard_size: int = 256
    strict: bool = False
    max_pixels: int = MAX_PIXELS  # images with more pixels are skipped as unreadable (decompression bombs)
    progress: bool | None = None  # False: never; else wherever progress shows (`probebench.progress`)

    def __post_init__(self) -> None:
        """Bad options are one line before any work: the device must parse and exist here."""
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: give at least 1")
        if self.num_workers is not None and self.num_workers < 0:
            raise UserError(f"--workers {self.num_workers}: give 0 (decode in the main process) or more")
        if self.max_pixels < 1:
            raise UserError(f"--max-pixels {self.max_pixels}: give a positive number of pixels")
        if self.device is not None:
            check_device(self.device)


@dataclass
class Result:
    store: FeatureStore
    layers: list[int]
    cached: bool  # True when nothing had to be computed
    seconds: float
    images_per_s: float | None
    skipped: list[str] = field(default_factory=list)
    precision: str = "fp32"


def check_device(name: str) -> torch.device:
    """`name` as a torch device that exists on this machine (cpu, cuda, cuda:N, mps), else one line."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {name}: this machine has no usable CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= count:
            raise UserError(f"--device {name}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: use cpu, cuda or cuda:N")
    return device


def device_and_precision(
    opts: Options, entry_precision: str = "auto"
) -> tuple[torch.device, str, torch.dtype | None]:
    """The device to run on, and the autocast dtype: on CUDA the entry's precision ("auto": bf16, or fp16
    where the GPU has no bf16), none (fp32) on the CPU."""
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return (device, *_precision(device, entry_precision))


def _precision(device: torch.device, wanted: str = "auto") -> tuple[str, torch.dtype | None]:
    if device.type != "cuda" or wanted == "fp32":
        return "fp32", None
    if wanted == "auto":
        wanted = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return f"{wanted}-autocast", {"bf16": torch.bfloat16, "fp16": torch.float16}[wanted]


def _arrays(feats: Features, layers: list[int], req: Request) -> dict[str, np.ndarray]:
    """Features -> named float arrays with the batch first, e.g. 'cls.L11' (B, P, C)."""
    dt = np.dtype(req.patch_dtype) if req.patch_dtype != "bfloat16" else np.float32
    out: dict[str, np.ndarray] = {}
    for layer in layers:
        if "cls" in req.tokens:
            out[f"cls.L{layer}"] = feats.cls[layer].float().cpu().numpy()
        if "pooled" in req.tokens:
            out[f"pooled.L{layer}"] = feats.pooled[layer].float().cpu().numpy()
        if "patches" in req.tokens:
            out[f"patches.L{layer}"] = feats.patches[layer].float().cpu().numpy().astype(dt)
    if feats.keys is not None:
        out["keys"] = feats.keys.float().cpu().numpy().astype(dt)
    if feats.attention is not None:  # float32: seeds and mass thresholds sort values near 1 / N
        out["attention"] = feats.attention.float().cpu().numpy()
    if "projection" in req.tokens:
        out["projection"] = feats.projection.float().cpu().numpy()
    if "head" in req.tokens:
        out["head"] = feats.head.float().cpu().numpy()
    return out


class Backoff:
    """Runs the encoder on micro-batches, halving them on CUDA out-of-memory until the batch fits."""

    def __init__(self, fn: Callable[[torch.Tensor], dict[str, np.ndarray]], micro: int) -> None:
        self.fn, self.micro = fn, micro

    def __call__(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        while True:
            try:
                parts = [self.fn(x[i : i + self.micro]) for i in range(0, len(x), self.micro)]
                return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            except torch.cuda.OutOfMemoryError:
                if self.micro == 1:
                    raise UserError(
                        "out of GPU memory even at batch size 1; use a smaller model or the CPU "
                        "(--device cpu)"
                    ) from None
                self.micro = max(1, self.micro // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log.warning("CUDA out of memory: batch size halved to %d", self.micro)


def store_for(spec: Spec, dataset: ImageDataset, req: Request, opts: Options, precision: str) -> FeatureStore:
    """The cache entry for these inputs. Layers enter the key as requested: for a fixed weights identity the
    architecture is fixed, so -1 is unambiguous, and the warm path needs no model to resolve it."""
    parts = {
        "encoder": spec.entry.model_dump(mode="json"),
        "weights_id": spec.weights_id,
        "preprocess": req.preprocess(spec.preprocess).as_dict(),
        "versions": spec.versions,
        "layers": list(req.layers),
        "tokens": sorted(req.tokens),
        **({"optional": sorted(req.optional)} if req.optional else {}),
        **({"rope_keys": "unrotated"} if not req.rotated_keys else {}),
        "norm": req.norm,
        "patch_dtype": req.patch_dtype,
        "precision": precision,
        "geometry": {"mode": req.geometry, "max_side": req.max_side},
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(), "n": len(dataset)},
        "extractor_version": EXTRACTOR_VERSION,
    }
    if opts.max_pixels != MAX_PIXELS:  # it decides which images are skipped; the default keeps older keys
        parts["max_pixels"] = opts.max_pixels
    key = cache_key(parts)
    exact = [st for st in list_stores(spec.entry.name, dataset.name) if st.manifest["key"] == key]
    if not exact or not exact[0].manifest["shards"]:
        # Nothing extracted under this exact key yet: a complete store that holds more tokens and layers with
        # every other input equal serves the request (`--task linear` after `--task object` extracts nothing).
        wider = _superset_store(spec.entry.name, dataset.name, parts)
        if wider is not None:
            return wider
    return FeatureStore.open(spec.entry.name, dataset.name, key, parts, len(dataset), opts.shard_size)


def _superset_store(encoder: str, dataset: str, parts: dict) -> FeatureStore | None:
    want = {k: v for k, v in parts.items() if k not in ("tokens", "layers")}
    for store in list_stores(encoder, dataset):
        if store.damaged:
            continue
        try:
            other = json.loads((store.root / "key.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        same = {k: other.get(k) for k in want} == json.loads(json.dumps(want, default=str))
        layers = set(other.get("layers", []))
        wider = set(parts["tokens"]) <= set(other.get("tokens", [])) and (
            set(parts["layers"]) <= layers or "all" in layers
        )
        if same and wider and store.complete:
            return store
    return None


def extract(
    spec: Spec,
    dataset: ImageDataset,
    req: Request = Request(),
    opts: Options = Options(),
    encoder: Encoder | None = None,
    store: FeatureStore | None = None,
) -> Result:
    """Fill the cache for (spec, dataset, req); return the store. Completed shards are never recomputed.
    `store`: fill this entry's missing shards (a wider entry that served the request, after a corrupt shard
    was forgotten) instead of looking the entry up by key."""
    t0 = time.perf_counter()
    ranks = distributed.init()
    device, precision, amp_dtype = device_and_precision(opts, spec.entry.precision)
    if ranks.world > 1 and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)  # torchrun: one GPU per process on its node
        torch.cuda.set_device(device)
    # Rank 0 opens (or creates) the entry and lists the shards a dead rank of an earlier run finished; the
    # others look only then, so every rank sees one entry in one state.
    if ranks.main:
        store = store if store is not None else store_for(spec, dataset, req, opts, precision)
        store.adopt_sidecars()
    distributed.barrier()
    if not ranks.main:
        store = (
            FeatureStore(store.root) if store is not None else store_for(spec, dataset, req, opts, precision)
        )
    missing = store.missing_shards()
    if not missing:
        skipped = store.manifest.get("skipped", [])
        return Result(
            store, store.manifest["layers"], True, time.perf_counter() - t0, None, skipped, precision
        )

    if (done := store.num_shards - len(missing)) and ranks.main:
        log.warning(
            "resuming %s: %d of %d shards are already done and reused", store.root, done, store.num_shards
        )
    encoder = encoder if encoder is not None else build(spec)
    if (
        "layers" in store.manifest
    ):  # refilling an existing entry: its own layers and tokens, not the request's
        key_parts = json.loads((store.root / "key.json").read_text())
        req = Request(
            layers=tuple(key_parts["layers"]),
            tokens=tuple(key_parts["tokens"]),
            optional=tuple(key_parts.get("optional", ())),
            norm=req.norm,
            patch_dtype=req.patch_dtype,
            geometry=req.geometry,
            max_side=req.max_side,
            input_size=req.input_size,
            rotated_keys=req.rotated_keys,
        )
    layers = encoder.resolve_layers(list(req.layers))
    if hasattr(encoder, "rotate_keys"):  # before `describe`: the record's keys_kind says which keys these are
        encoder.rotate_keys = req.rotated_keys
    req = _available(req, encoder)
    token_arrays = [f"patches.L{layer}" for layer in layers if "patches" in req.tokens]
    token_arrays += [t for t in ("keys", "attention") if t in req.tokens]
    strides = {f"patches.L{layer}": encoder.stride(layer) for layer in layers}
    strides["keys"] = strides["attention"] = encoder.patch_size
    store.set_meta(
        persist=ranks.main,
        layers=layers,
        encoder=encoder.describe(),
        token_arrays=token_arrays,
        token_strides={name: strides[name] for name in token_arrays},
    )
    run = Backoff(_forward_fn(encoder, layers, req, device, amp_dtype), opts.batch_size)
    # Whole shards per rank: with the batch size dividing the shard size (the default), every batch holds
    # the same images as in one process, so the features are the same bits.
    rows = [r for s in ranks.mine(missing) for r in store.shard_rows(s)]
    shards = _ShardWriter(store, dataset, opts.strict, opts.max_pixels, publish=ranks.world == 1)
    t_forward = time.perf_counter()
    # rank 0 speaks for a multi-process run (its share of the rows); `opts.progress` False keeps quiet
    shown = ranks.main and opts.progress is not False
    label = f"extract {spec.entry.name} x {dataset.name}" + (
        f" (rank 0 of {ranks.world})" if ranks.world > 1 else ""
    )
    with (
        progress.stage(label, total=len(rows), unit="img")
        if shown
        else nullcontext(lambda n=1: None) as advance
    ):
        for images, index, ok, geometry in _loader(encoder, dataset, rows, req, opts, device):
            arrays = _run_by_size(run, images)
            for pos, row in enumerate(index.tolist()):
                shards.add(row, {k: v[pos] for k, v in arrays.items()}, bool(ok[pos]), geometry[pos])
            advance(len(index))
    seconds = time.perf_counter() - t_forward
    distributed.barrier()  # every rank's shards are written: rank 0 lists them all at once
    if ranks.world > 1 and ranks.main:
        store.adopt_sidecars()
    distributed.finish()
    skipped = sorted(set(store.manifest.get("skipped", [])) | set(shards.skipped))
    return Result(
        store, layers, False, time.perf_counter() - t0, len(rows) / max(seconds, 1e-9), skipped, precision
    )


def _available(req: Request, encoder: Encoder) -> Request:
    """The request with its optional token kinds that this encoder has moved into `tokens`."""
    has = {
        "keys": encoder.has_keys,
        "attention": encoder.has_attention,
        "projection": encoder.has_projection,
        "head": encoder.has_head,
    }
    extra = tuple(t for t in req.optional if has.get(t, True) and t not in req.tokens)
    return replace(req, tokens=(*req.tokens, *extra), optional=())


def _forward_fn(
    encoder: Encoder, layers: list[int], req: Request, device: torch.device, amp_dtype: torch.dtype | None
) -> Callable[[torch.Tensor], dict[str, np.ndarray]]:
    """The encoder on one batch of equal-size inputs (B, 3, H, W) -> named arrays with the batch first.

    Channels-last memory: oneDNN's depthwise and pointwise convolutions run about 1.8x faster on the CPU in
    it (EfficientNet-Lite0, MobileNetV2), and it is the layout tensor cores want; a ViT's patch embedding
    gives the same bits either way.
    """
    encoder.model.to(device, memory_format=torch.channels_last)
    if getattr(encoder, "projection_head", None) is not None:
        encoder.projection_head.to(device)

    def forward(x: torch.Tensor) -> dict[str, np.ndarray]:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None),
        ):
            feats = encoder.forward_features(
                x.to(device, non_blocking=True, memory_format=torch.channels_last),
                layers,
                norm=req.norm,
                keys="keys" in req.tokens,
                attention="attention" in req.tokens,
                projection="projection" in req.tokens,
                head="head" in req.tokens,
            )
        return _arrays(feats, layers, req)

    return forward


def _loader(
    encoder: Encoder,
    dataset: ImageDataset,
    rows: list[int],
    req: Request,
    opts: Options,
    device: torch.device,
) -> torch.utils.data.DataLoader:
    """Decode and frame `rows` in worker processes, in order."""
    framing = req.preprocess(encoder.preprocess).framing(req.geometry, encoder.patch_size, req.max_side)
    # The cores this process may use (a Slurm job's allocation, not the node's), one left for the forward.
    cores = len(os.sched_getaffinity(0))
    workers = opts.num_workers if opts.num_workers is not None else max(0, min(8, cores - 1))
    return torch.utils.data.DataLoader(
        ImageRows(dataset, rows, framing, opts.max_pixels),
        batch_size=opts.batch_size,
        num_workers=workers,
        worker_init_fn=worker_init,
        collate_fn=collate_rows,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def _run_by_size(run: Backoff, images: list[torch.Tensor]) -> dict[str, list[np.ndarray]]:
    """Run inputs of possibly different sizes: one forward per size, results back in input order."""
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_size.setdefault(tuple(image.shape), []).append(i)
    out: dict[str, list] = {}
    for positions in by_size.values():
        arrays = run(torch.stack([images[i] for i in positions]))
        for name, values in arrays.items():
            slots = out.setdefault(name, [None] * len(images))
            for j, i in enumerate(positions):
                slots[i] = values[j]
    return out


class _ShardWriter:
    """Collects per-image arrays and writes each shard as soon as all its rows are in.

    Per-image arrays are stacked; token arrays (h, w, C) per image are flattened and concatenated (ragged),
    with each image's grid in `grids` and its framing in `geometry`.
    """

    def __init__(
        self, store: FeatureStore, dataset: ImageDataset, strict: bool, max_pixels: int, publish: bool = True
    ) -> None:
        self.store, self.dataset, self.strict, self.max_pixels = store, dataset, strict, max_pixels
        self.publish = publish  # False: a rank's shards wait in sidecar notes for rank 0 to list them
        self.token_arrays = store.manifest["token_arrays"]
        self.pending: dict[int, dict] = {}
        self.skipped: list[str] = []

    def add(self, row: int, arrays: dict[str, np.ndarray], ok: bool, geometry: np.ndarray) -> None:
        shard = row // self.store.shard_size
        buf = self.pending.setdefault(shard, {"rows": {}, "skipped": []})
        buf["rows"][row] = {**arrays, "valid": np.bool_(ok), "geometry": geometry}
        if not ok:
            path = self.dataset.samples[row].path
            why = why_unreadable(str(self.dataset.root / path), self.max_pixels)
            if self.strict:
                raise UserError(
                    f"cannot read image {self.dataset.root / path}: {why} (--strict); fix or remove it"
                )
            log.warning("skipped unreadable image %s: %s", self.dataset.root / path, why)
            buf["skipped"].append(path)
            self.skipped.append(path)
        if len(buf["rows"]) == len(self.store.shard_rows(shard)):
            self._write(shard, self.pending.pop(shard))

    def _write(self, shard: int, buf: dict) -> None:
        ordered = [buf["rows"][r] for r in self.store.shard_rows(shard)]
        arrays = {}
        for name in ordered[0]:
            if is_token_array(name):
                arrays[name] = np.concatenate([o[name].reshape(-1, o[name].shape[-1]) for o in ordered])
            else:
                arrays[name] = np.stack([o[name] for o in ordered])
        if self.token_arrays:
            arrays["grids"] = np.array(
                [[o[name].shape[:2] for name in self.token_arrays] for o in ordered], dtype=np.int64
            )
        self.store.write_shard(shard, arrays, buf["skipped"], publish=self.publish)
