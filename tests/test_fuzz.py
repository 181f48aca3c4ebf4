"""Fuzzing the config parsers (issue 9): any text given as an encoder registry, a datasets config or a tasks
file is either a valid config or a `UserError` (one line per problem, exit 2 at the CLI), never another
exception, within bounded time. Inputs are raw text, YAML built from random structures near the real
schema (real field names and values mixed with junk), and anchors and aliases."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probebench.data.config import parse_datasets
from probebench.encoders.registry import parse_registry
from probebench.errors import UserError
from probebench.tasks.catalog import parse_tasks

PARSERS = {
    "registry": parse_registry,
    "datasets": parse_datasets,
    "tasks": lambda text, origin: parse_tasks(text, origin),
}
# Real field names and values of the three schemas, so random structures reach deep into validation.
WORDS = [
    "family", "method", "arch", "source", "kind", "timm", "random", "package", "checkpoint", "open_clip",
    "transformers", "model", "preprocess", "input_size", "mean", "feature", "cls", "pooled", "format",
    "image_folder", "coco", "voc", "mask_folder", "saliency", "cub", "root", "splits", "merge", "classes",
    "probe", "knn", "linear", "attentive", "dataset", "datasets", "split", "train", "test", "knobs", "ks",
    "c_grid", "variant", "groups", "suites", "control", "supervised", "seed", "arch_kwargs", "mapping",
    "vit_tiny_patch16_224", "${HOME}", "..", "/", "a b", "",
]  # fmt: skip
scalars = st.one_of(
    st.sampled_from(WORDS),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)
documents = st.dictionaries(st.sampled_from(WORDS) | st.from_regex(r"[a-z0-9_]{1,8}", fullmatch=True), values)
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def parses_or_one_problem_per_line(kind: str, text: str) -> None:
    try:
        result = PARSERS[kind](text, "fuzz.yaml")
    except UserError as exc:
        lines = str(exc).splitlines()
        assert lines and all(line.startswith("fuzz.yaml") for line in lines), str(exc)
        return
    assert isinstance(result, dict) and result


@FUZZ
@given(kind=st.sampled_from(list(PARSERS)), text=st.text(max_size=300))
def test_any_text_parses_or_is_user_errors(kind, text):
    parses_or_one_problem_per_line(kind, text)


@FUZZ
@given(kind=st.sampled_from(list(PARSERS)), doc=documents)
def test_any_yaml_structure_parses_or_is_user_errors(kind, doc):
    parses_or_one_problem_per_line(kind, yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(
    kind=st.sampled_from(list(PARSERS)),
    fan=st.integers(1, 12),
    depth=st.integers(1, 9),
    recursive=st.booleans(),
)
def test_anchors_and_aliases_are_bounded(kind, fan, depth, recursive):
    lines = ["a0: &a0 [x]"]
    for i in range(1, depth + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan)}]")
    if recursive:
        lines.append("loop: &loop [*loop]")
    parses_or_one_problem_per_line(kind, "\n".join(lines))
