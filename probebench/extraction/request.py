"""What extraction is asked for: which features (`FeatureRequest`), how to run (`ExtractionOptions`: batch,
workers, device, limits), and what it returns (`Extraction`). Both inputs are checked when made, so a bad
value is one line before any work."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from probebench.cache.store import FeatureStore
from probebench.data.base import MAX_PIXELS
from probebench.encoders.base import TOKEN_KINDS, Preprocess, is_layer
from probebench.errors import UserError
from probebench.geometry import GEOMETRY_MODES, SIZED_MODES


@dataclass(frozen=True)
class FeatureRequest:
    """Which features to cache. `layers` may be negative or "all" here; stored as absolute indices.

    geometry: `resize` (the encoder's own preprocessing), `stretch` (the whole image resized to the input
    size, no crop) or `native` (each image at its own size, longer side capped at `max_side` when given,
    zero-padded to a multiple of the patch size); see `probebench.geometry`.
    """

    layers: tuple[int | str, ...] = (-1,)
    tokens: tuple[str, ...] = ("cls", "pooled")
    norm: bool = True
    patch_dtype: str = "float16"  # patch tokens and keys; cls, pooled, attention and projection stay float32
    geometry: str = "resize"
    max_side: int | None = None
    # `resize` and `stretch` framings: the input size every encoder reads (a task that fixes one, as the
    # papers' suite fixes 224); None: the encoder's own evaluation size
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
            raise UserError(f"geometry {self.geometry!r}: use one of {', '.join(GEOMETRY_MODES)}")
        if self.max_side is not None and (self.geometry != "native" or self.max_side < 1):
            raise UserError("max_side caps the longer side in native geometry: give a positive size with it")
        if self.input_size is not None and (self.geometry not in SIZED_MODES or self.input_size < 1):
            raise UserError("input_size fixes the resize or stretch framing's size: give a positive size")

    def preprocess(self, own: Preprocess) -> Preprocess:
        """The encoder's preprocessing with the size this request fixes (crop ratio, interpolation, mean and
        std stay the encoder's)."""
        return own if self.input_size is None else replace(own, input_size=self.input_size)


@dataclass(frozen=True)
class ExtractionOptions:
    """How extraction runs: none of these changes a feature (the cache key holds `max_pixels` only where it
    is not the default, since it decides which images are skipped)."""

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
        if self.shard_size < 1:
            raise UserError(f"--shard-size {self.shard_size}: give at least 1 image per shard")
        if self.device is not None:
            check_device(self.device)


@dataclass
class Extraction:
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
    opts: ExtractionOptions, entry_precision: str = "auto"
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
