"""Config files (encoders.yaml, datasets configs, tasks files): read safely, parsed into validated entries.

Every config is a YAML mapping of names to entries. `read_config` bounds the file, `load_yaml` refuses
duplicate keys and alias bombs, `parse_entries` validates each entry against a pydantic model and turns
every problem into one line naming the entry and the field.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from probebench.errors import UserError
from probebench.paths import MAX_NAME

NAME_RE = re.compile(r"^[a-z0-9_]+$")  # entry names: they become parts of file names


def shipped_file(filename: str, env: str) -> Path:
    """`$env`, else the repository's copy of `filename`, else the copy inside the wheel."""
    if path := os.environ.get(env):
        return Path(path)
    repo_copy = Path(__file__).resolve().parent.parent / filename
    if repo_copy.is_file():
        return repo_copy
    return Path(str(resources.files("probebench") / filename))


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


_TYPE_PART = re.compile(r"^(dict|list|tuple|set|str|int|float|bool|literal|function-after)\b|\[")


_FIELD_LINE = re.compile(r"^([A-Za-z_][\w.]*): (.+)$")


def _describe(error: dict, model: type[BaseModel]) -> list[str]:
    """One error of pydantic's as lines `field 'F': what is wrong`. An entry-level check (a model
    validator) may name several fields, one per line of its message (`knobs.ks: ...`)."""
    loc = [str(p) for p in error["loc"]]
    # pydantic puts the discriminator value ("timm", ...) into the location of a tagged union's member; drop
    # it: the user wrote the field, not the tag
    declared = model.model_fields.get(loc[0]) if loc else None
    if len(loc) >= 2 and declared is not None and declared.discriminator is not None:
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


def field_problems(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per field in error: a union's members each report the same field; the first is kept."""
    out: dict[str, str] = {}
    for error in exc.errors():
        for line in _describe(error, model):
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
                problems += [f"{origin}: {what} {name!r}, {p}" for p in field_problems(exc, model)]
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
