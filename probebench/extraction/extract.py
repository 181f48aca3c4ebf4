"""Frozen feature extraction into the feature cache.

`extract_features()` keys the cache on the resolved encoder, the dataset fingerprint and the requested
features; if the cache is complete it returns at once without building the model. Otherwise it streams the
rows of the missing shards through a DataLoader (decode and resize in workers), runs the encoder under
`torch.inference_mode` (autocast bf16/fp16 on CUDA, fp32 on CPU), halves the batch on CUDA out-of-memory,
and writes each shard as soon as its rows are done.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import torch

from probebench import progress
from probebench.cache.entries import find_or_open
from probebench.cache.store import EXTRACTOR_VERSION, FeatureStore, array_name, is_token_array
from probebench.data.base import MAX_PIXELS, ImageDataset
from probebench.data.loader import ImageRows, collate_rows, why_unreadable, worker_init
from probebench.encoders.base import Encoder, Features
from probebench.encoders.load import ResolvedEncoder, build_encoder
from probebench.errors import UserError
from probebench.extraction import distributed
from probebench.extraction.request import Extraction, ExtractionOptions, FeatureRequest, device_and_precision

log = logging.getLogger(__name__)


def _arrays(feats: Features, layers: list[int], req: FeatureRequest) -> dict[str, np.ndarray]:
    """Features -> named float arrays with the batch first, e.g. 'cls.L11' (B, P, C)."""
    dt = np.dtype(req.patch_dtype) if req.patch_dtype != "bfloat16" else np.float32
    out: dict[str, np.ndarray] = {}
    for layer in layers:
        if "cls" in req.tokens:
            out[array_name("cls", layer)] = feats.cls[layer].float().cpu().numpy()
        if "pooled" in req.tokens:
            out[array_name("pooled", layer)] = feats.pooled[layer].float().cpu().numpy()
        if "patches" in req.tokens:
            out[array_name("patches", layer)] = feats.patches[layer].float().cpu().numpy().astype(dt)
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


def key_parts(
    spec: ResolvedEncoder, dataset: ImageDataset, req: FeatureRequest, opts: ExtractionOptions, precision: str
) -> dict:
    """Everything that changes the features, the cache key's inputs. Layers enter as requested: for a fixed
    weights identity the architecture is fixed, so -1 is unambiguous, and the warm path needs no model."""
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
    return parts


def open_entry(
    spec: ResolvedEncoder, dataset: ImageDataset, req: FeatureRequest, opts: ExtractionOptions, precision: str
) -> FeatureStore:
    """The cache entry that serves (spec, dataset, req): its own, or a wider complete one."""
    parts = key_parts(spec, dataset, req, opts, precision)
    return find_or_open(spec.entry.name, dataset.name, parts, len(dataset), opts.shard_size)


def extract_features(
    spec: ResolvedEncoder,
    dataset: ImageDataset,
    req: FeatureRequest | None = None,
    opts: ExtractionOptions | None = None,
    encoder: Encoder | None = None,
    store: FeatureStore | None = None,
) -> Extraction:
    """Fill the cache for (spec, dataset, req); return the store. Completed shards are never recomputed.
    `req` and `opts` default to `FeatureRequest()` and `ExtractionOptions()`. `store`: fill this entry's
    missing shards (a wider entry that served the request, after a corrupt shard was forgotten) instead of
    looking the entry up by key."""
    req = req if req is not None else FeatureRequest()
    opts = opts if opts is not None else ExtractionOptions()
    t0 = time.perf_counter()
    ranks = distributed.init()
    device, precision, amp_dtype = device_and_precision(opts, spec.entry.precision)
    if ranks.world > 1 and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)  # torchrun: one GPU per process on its node
        torch.cuda.set_device(device)
    store = _open_store(spec, dataset, req, opts, precision, ranks, store)
    missing = store.missing_shards()
    if not missing:
        return Extraction(store, store.layers, True, time.perf_counter() - t0, None, store.skipped, precision)

    if (done := store.num_shards - len(missing)) and ranks.main:
        log.warning(
            "resuming %s: %d of %d shards are already done and reused", store.root, done, store.num_shards
        )
    encoder = encoder if encoder is not None else build_encoder(spec)
    if store.started:  # refilling an existing entry: its own layers and tokens, not the request's
        req = _held_request(store.key_parts, req)
    layers = encoder.resolve_layers(list(req.layers))
    if hasattr(encoder, "rotate_keys"):  # before `describe`: the record's keys_kind says which keys these are
        encoder.rotate_keys = req.rotated_keys
    req = _available(req, encoder)
    _write_facts(store, encoder, layers, req, persist=ranks.main)
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
    skipped = sorted(set(store.skipped) | set(shards.skipped))
    return Extraction(
        store, layers, False, time.perf_counter() - t0, len(rows) / max(seconds, 1e-9), skipped, precision
    )


def _open_store(
    spec: ResolvedEncoder,
    dataset: ImageDataset,
    req: FeatureRequest,
    opts: ExtractionOptions,
    precision: str,
    ranks: distributed.Ranks,
    store: FeatureStore | None,
) -> FeatureStore:
    """The entry to fill (`store`, or the one the request's key names). Rank 0 opens (or creates) it and
    lists the shards a dead rank of an earlier run finished; the others look only then, so every rank sees
    one entry in one state."""
    if ranks.main:
        store = store if store is not None else open_entry(spec, dataset, req, opts, precision)
        store.adopt_sidecars()
    distributed.barrier()
    if not ranks.main:
        store = (
            FeatureStore(store.root) if store is not None else open_entry(spec, dataset, req, opts, precision)
        )
    return store


def _held_request(held: dict, req: FeatureRequest) -> FeatureRequest:
    """The request that refills an existing entry: the entry's own layers and token kinds (`held`, its key
    parts), the run's framing and precision choices."""
    return replace(
        req,
        layers=tuple(held["layers"]),
        tokens=tuple(held["tokens"]),
        optional=tuple(held.get("optional", ())),
    )


def _write_facts(
    store: FeatureStore, encoder: Encoder, layers: list[int], req: FeatureRequest, persist: bool
) -> None:
    """What the entry holds once the model is built: the blocks, the encoder's facts, and each token array
    with its stride (input pixels per grid cell)."""
    token_arrays = [array_name("patches", layer) for layer in layers if "patches" in req.tokens]
    token_arrays += [t for t in ("keys", "attention") if t in req.tokens]
    strides = {array_name("patches", layer): encoder.stride(layer) for layer in layers}
    strides["keys"] = strides["attention"] = encoder.patch_size
    store.set_meta(
        persist=persist,
        layers=layers,
        encoder=encoder.describe(),
        token_arrays=token_arrays,
        token_strides={name: strides[name] for name in token_arrays},
    )


def _available(req: FeatureRequest, encoder: Encoder) -> FeatureRequest:
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
    encoder: Encoder,
    layers: list[int],
    req: FeatureRequest,
    device: torch.device,
    amp_dtype: torch.dtype | None,
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
    req: FeatureRequest,
    opts: ExtractionOptions,
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
        self.token_arrays = store.token_arrays
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
