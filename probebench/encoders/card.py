"""The protocol card of an encoder: what a run would read, before anything runs (`probebench show`).

Facts that only the model knows (blocks, prefix tokens, what its keys and attention are, how positions
reach other grids, its pooling head) are read from the model itself: the entry's architecture built
without its weights (random initialisation has the same layout), so a card never loads or downloads
weights. Everything else comes from the entry and its resolved spec. The report's provenance shows the
same facts, taken from the records.
"""

from __future__ import annotations

from pathlib import Path

from probebench.encoders.base import Encoder
from probebench.encoders.load import ResolvedEncoder, resolve_encoder
from probebench.encoders.registry import EncoderEntry, load_families
from probebench.encoders.sources import create_timm_model
from probebench.errors import WeightsUnavailable


def bare_encoder(spec: ResolvedEncoder) -> Encoder | None:
    """The entry's architecture without its weights (random init), wrapped in its adapter; None where the
    architecture itself is not on this machine (a transformers model whose config.json is not cached)."""
    entry, src = spec.entry, spec.entry.source
    if src.kind == "open_clip":
        import open_clip

        from probebench.encoders.clip_models import OpenClipViT
        from probebench.encoders.sources import quick_gelu

        model = open_clip.create_model(
            src.model, pretrained=None, force_quick_gelu=quick_gelu(src.model, src.pretrained)
        )
        return OpenClipViT(model, spec.preprocess, name=entry.name)
    if src.kind == "transformers":
        from transformers import AutoConfig, AutoModel

        from probebench.encoders.hf_models import HFViT
        from probebench.encoders.hub import hf_cached

        cfg = hf_cached(src.repo, ("config.json",), revision=src.revision)
        if cfg is None:
            return None
        config = AutoConfig.from_pretrained(cfg.parent, trust_remote_code=False)
        return HFViT(AutoModel.from_config(config), spec.preprocess, name=entry.name)
    from probebench.encoders.timm_models import wrap_timm

    arch = src.model if src.kind == "timm" else src.arch
    kwargs = {} if src.kind == "timm" else dict(src.arch_kwargs)
    if src.kind == "checkpoint":
        kwargs.setdefault("num_classes", 0)
    model = create_timm_model(arch, pretrained=False, **kwargs)
    return wrap_timm(model, spec.preprocess, name=entry.name, pos_embed=entry.pos_embed)


def protocol_card(entry: EncoderEntry, weights: Path | None = None) -> list[tuple[str, str]]:
    """(field, value) lines of the card, in reading order: what the encoder is and where its weights come
    from, its preprocessing, what its architecture holds, and its precision and deviations."""
    try:
        spec = resolve_encoder(entry, weights, download=False)
        why_no_weights = None
    except WeightsUnavailable as exc:
        spec, why_no_weights = (
            resolve_encoder(entry, weights, strict_available=False, download=False),
            str(exc),
        )
    lines = _identity_lines(entry, spec, why_no_weights) + _preprocess_lines(spec)
    encoder = bare_encoder(spec)  # the layout is the architecture's: no need to load the weights
    if encoder is None:
        lines.append(("model", "architecture facts unknown: its config is not on this machine"))
    else:
        lines += _architecture_lines(entry, encoder.describe())
    lines += [
        (
            "precision",
            f"fp32 on the CPU; on a GPU: {entry.precision} autocast"
            if entry.precision != "fp32"
            else "fp32 everywhere (the entry fixes it)",
        ),
        ("deviations", entry.notes or "-"),
    ]
    return lines


def _identity_lines(
    entry: EncoderEntry, spec: ResolvedEncoder, why_no_weights: str | None
) -> list[tuple[str, str]]:
    """The encoder, its family and paper, the library that builds it, and its weights."""
    family = load_families().get(entry.family)
    src = entry.source
    library = {"timm": "timm", "checkpoint": "timm", "package": "timm", "random": "timm"}.get(
        src.kind, src.kind
    )
    what = {
        "timm": lambda: src.model,
        "transformers": lambda: f"{src.repo}@{src.revision}",
        "open_clip": lambda: f"{src.model}/{src.pretrained}",
    }.get(src.kind, lambda: f"{src.arch} ({src.kind} source)")()
    return [
        ("encoder", f"{entry.name}: {entry.method}, {entry.arch}"),
        ("family", f"{entry.family}" + (f" ({family.description})" if family else "")),
        ("paper", entry.paper or "-"),
        ("library", f"{library} {_version(library)}: {what}"),
        ("weights", spec.weights_id if why_no_weights is None else f"not on this machine ({why_no_weights})"),
    ]


def _preprocess_lines(spec: ResolvedEncoder) -> list[tuple[str, str]]:
    """Each preprocessing value with where it came from, and the input size each suite reads."""
    pre, origin = spec.preprocess, spec.provenance
    lines = []
    if pre is None:  # a transformers model whose preprocessor_config.json is not cached: never a guess
        lines.append(("preprocess", "unknown: the model's preprocessor_config.json is not on this machine"))
    else:
        for field in ("input_size", "crop_pct", "interpolation", "mean", "std"):
            value = getattr(pre, field)
            extra = f" (resize the shorter side to {pre.resize})" if field == "crop_pct" else ""
            lines.append((f"preprocess.{field}", f"{value}{extra}, from {origin[field]}"))
    own = f"{pre.input_size} px" if pre is not None else "unknown"
    lines.append(
        (
            "resolution",
            f"default suite: {own} (the encoder's own evaluation size); papers' suite: 224 px (fixed for "
            "every encoder); native-geometry tasks: each image at its own size",
        )
    )
    return lines


def _architecture_lines(entry: EncoderEntry, facts: dict) -> list[tuple[str, str]]:
    """What the built architecture holds (`Encoder.describe`): patch, blocks, tokens, keys, attention,
    positions, norm, the image feature, pooling and projection heads."""
    prefix = facts["prefix_tokens"]
    return [
        ("patch size", f"{facts['patch_size']} px" + (" (total stride)" if not facts["has_keys"] else "")),
        ("blocks", str(facts["num_blocks"])),
        ("feature dim", str(facts["feature_dim"])),
        ("prefix tokens", ", ".join(_counted(prefix)) if prefix else "none (no class token, no registers)"),
        ("keys", facts["keys_kind"]),
        (
            "class attention",
            "the last block's softmax from the class token, with its own position terms"
            if facts["has_attention"]
            else "none: "
            + ("no class token" if facts["has_keys"] else "not a transformer")
            + " (DINO-seg, FOUND and HEAP's seed are skipped, with the reason in the record)",
        ),
        ("positions", facts["positions"]),
        ("final norm", facts["final_norm"]),
        (
            "image feature",
            (entry.feature or ("cls" if facts["class_token"] else "pooled"))
            + (" (the entry's choice)" if entry.feature else " (default: class token if any, else pooled)"),
        ),
        ("pooling head", facts["pooling"] + (" ('--feature head')" if facts["pooling"] != "none" else "")),
        ("projection", "yes (part retrieval's 'projected')" if _has_projection(entry, facts) else "none"),
    ]


def _version(library: str) -> str:
    from importlib import metadata

    return metadata.version(
        {"transformers": "transformers", "open_clip": "open_clip_torch"}.get(library, library)
    )


def _has_projection(entry: EncoderEntry, facts: dict) -> bool:
    """A checkpoint's head is in its weights (the entry says whether it carries one); open_clip's is built
    in."""
    return getattr(entry.source, "projection", None) is not None or (
        entry.source.kind == "open_clip" and facts["has_projection"]
    )


def _counted(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in dict.fromkeys(names):
        n = names.count(name)
        out.append(name if n == 1 else f"{name} x{n}")
    return out
